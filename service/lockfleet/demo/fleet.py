"""`lockfleet demo`: the service in-process on loopback, a simulated fleet pushing over real gRPC
(one thread, channel and Push stream per host), then the alert as the Query service returns it."""

from __future__ import annotations

import logging
import sys
import tempfile
import threading
from typing import TextIO

import pyarrow as pa

from ..agent import AgentError, AlertView, Stream, fetch_alerts, push_streams
from ..server import Service
from .data import DEFAULT_EVENTS, seed_scenario
from .scenario import CYCLE, HOSTS, TASKS

BATCH_ROWS = 1000


def run_demo(seed: int = 0, events: int = DEFAULT_EVENTS, out: TextIO = sys.stdout) -> int:
    """Run the demo; 0 when the service found the seed's cycle across hosts, else 1."""
    logging.getLogger("lockfleet").setLevel(logging.ERROR)  # the demo prints what matters itself
    tables = seed_scenario(seed, events)
    with tempfile.TemporaryDirectory(prefix="lockfleet-demo-") as data_dir, Service(data_dir) as service:
        print(f"lockfleet service on {service.address} (data dir {data_dir})", file=out)
        print(f"{len(HOSTS)} hosts push their lock events, each on its own gRPC stream:", file=out)
        for host in HOSTS:
            parts = "; ".join(t.what for t in TASKS if t.host == host)
            print(f"  {host:7} {tables[host].num_rows:5} events; among them {parts}", file=out)
        errors = _push_fleet(service.address, {h: tables[h].to_batches(max_chunksize=BATCH_ROWS) for h in HOSTS})
        for host, err in errors.items():
            print(f"lockfleet demo: {host}: {err}", file=sys.stderr)
        if errors:
            return 1
        alerts = fetch_alerts(service.address)
    return _report(alerts, out)


def _push_fleet(target: str, batches: dict[str, list[pa.RecordBatch]]) -> dict[str, str]:
    """Push every host's batches concurrently; the last host sends its final batch (the one that
    closes the cycle, as test_progs did in the report) only after the others are done."""
    closer = HOSTS[-1]
    others_done = threading.Barrier(len(HOSTS))
    errors: dict[str, str] = {}

    def agent(host: str) -> None:
        mine = batches[host]
        sid = f"demo/{host}"
        try:
            if host == closer:
                push_streams(target, host, [Stream(sid, mine[:-1])])
                others_done.wait(timeout=120)
                push_streams(target, host, [Stream(sid, mine[-1:], first_seq=len(mine))])
            else:
                push_streams(target, host, [Stream(sid, mine)])
                others_done.wait(timeout=120)
        except AgentError as exc:
            errors[host] = str(exc)
            others_done.abort()
        except threading.BrokenBarrierError:
            errors.setdefault(host, "stopped: another host failed")

    threads = [threading.Thread(target=agent, args=(h,), name=f"agent-{h}") for h in HOSTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def _report(alerts: list[AlertView], out: TextIO) -> int:
    found = [a for a in alerts if a.data["kind"] == "circular" and set(a.data["locks"]) == set(CYCLE)]
    print(f"\n{len(alerts)} alert(s) from the Query service:\n", file=out)
    for a in alerts:
        print(a.report.rstrip("\n"), file=out)
        hosts = a.data["hosts"]
        single = a.data.get("single_host")
        across = a.data["kind"] == "circular" and not single
        print(f"\nhosts involved: {', '.join(hosts)}" + (" (no single host took the whole cycle)" if across else "")
              + "\n", file=out)
    if not found:
        print("lockfleet demo: the seed's cycle was NOT found: " + " -> ".join(CYCLE), file=sys.stderr)
        return 1
    return 0
