"""`make cluster-demo` (`lockfleet cluster-demo`): the seed's deadlock found by a cluster that loses
a NATS node and its graph authority while the fleet pushes.

A three-node JetStream cluster on loopback (R3 streams), two gateways, two workers, an authority
and a standby, each a real process. The four seed hosts push through both gateways (bpf-3 starts
on one and resumes on the other, resending a batch the first one had acked). One NATS node is
killed after the first half of the batches, the authority right after the batch that closes the
cycle. The standby takes the lease; the demo prints the alerts from its Query service, and checks
that the five-lock finding was published exactly once (stream LF_ALERTS), with its four hosts.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

import pyarrow as pa

from ..demo import CYCLE, HOSTS, seed_scenario
from ..errors import OperationalError
from .harness import Cluster, HarnessError
from .natsd import NatsUnavailable

BATCH_ROWS = 500


class DemoError(OperationalError, RuntimeError):
    pass


def _push(target: str, host: str, batches: list[pa.RecordBatch], first_seq: int) -> None:
    from ..agent import Stream, push_streams

    push_streams(target, host, [Stream(f"demo/{host}", batches, first_seq=first_seq)], retry_for=60.0)


def _push_all(plan: dict[str, tuple[str, list[pa.RecordBatch], int]]) -> None:
    errors: list[str] = []

    def one(host: str) -> None:
        target, batches, first = plan[host]
        try:
            _push(target, host, batches, first)
        except Exception as exc:
            errors.append(f"{host}: {exc}")

    threads = [threading.Thread(target=one, args=(h,)) for h in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise DemoError("push failed: " + "; ".join(errors))


def run_cluster_demo(workdir: str | None = None, out: TextIO = sys.stdout) -> int:
    keep = workdir is not None
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="lockfleet-cluster-demo-"))
    cluster = Cluster(root, nodes=3, partitions=4, lease=2.0)
    try:
        return _run(cluster, out)
    except (HarnessError, NatsUnavailable) as exc:
        raise DemoError(str(exc)) from None
    finally:
        cluster.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def _run(cluster: Cluster, out: TextIO) -> int:
    from ..agent import fetch_alerts

    t0 = time.monotonic()
    cluster.start_nats()
    _say(out, f"NATS JetStream cluster of 3 nodes: {cluster.nats.url}")
    primary = cluster.authority("authority")
    primary.wait_healthy()
    primary.wait_log("holds the lease: leader")
    standby = cluster.authority("standby")
    gw = [cluster.gateway("gateway-1"), cluster.gateway("gateway-2")]
    workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
    for role in (standby, *gw):
        role.wait_healthy()
    _say(out, f"gateways {gw[0].target} and {gw[1].target}, workers {', '.join(w.name for w in workers)}, "
              f"authority {primary.target} (leader), standby {standby.target}")

    tables = seed_scenario()
    batches = {h: tables[h].to_batches(max_chunksize=BATCH_ROWS) for h in HOSTS}
    closer = HOSTS[-1]
    via = {h: gw[i % 2].target for i, h in enumerate(HOSTS)}
    half = {h: len(batches[h]) // 2 for h in HOSTS}
    # first half of every host's batches
    _push_all({h: (via[h], batches[h][:half[h]], 1) for h in HOSTS})
    _say(out, "pushed the first half of every host's batches; killing NATS node n1")
    cluster.nats.kill(1)
    # the rest, except the batch that closes the cycle; bpf-3 moves to the other gateway and
    # starts one batch early (a batch the first gateway acked: acked again as a duplicate)
    rest = {h: (via[h], batches[h][half[h]:], half[h] + 1) for h in HOSTS if h != closer}
    other = gw[1].target if via[closer] == gw[0].target else gw[0].target
    rest[closer] = (other, batches[closer][half[closer] - 1:-1], half[closer])
    _push_all(rest)
    _say(out, f"pushed the rest with one NATS node down ({closer} through the other gateway)")
    _push(other, closer, batches[closer][-1:], len(batches[closer]))
    primary.kill()
    _say(out, f"{closer} pushed the batch that closes the cycle; killed the authority (SIGKILL)")
    standby.wait_log("holds the lease: leader", timeout=60)
    _say(out, "the standby holds the lease")

    deadline = time.monotonic() + 90
    seed_pubs: list[dict] = []
    while time.monotonic() < deadline:
        seed_pubs = [p for p in cluster.published_alerts()
                     if p["alert"]["kind"] == "circular" and set(p["alert"]["locks"]) == set(CYCLE)]
        if seed_pubs:
            break
        time.sleep(0.5)
    time.sleep(cluster.lease)     # a second publication, if there were to be one, would be there now
    seed_pubs = [p for p in cluster.published_alerts()
                 if p["alert"]["kind"] == "circular" and set(p["alert"]["locks"]) == set(CYCLE)]
    alerts = fetch_alerts(standby.target)
    _say(out, f"\n{len(alerts)} alert(s) from the standby's Query service ({standby.target}):\n")
    for a in alerts:
        _say(out, a.report.rstrip("\n"))
        _say(out, f"\nhosts involved: {', '.join(a.data['hosts'])}\n")
    found = [a for a in alerts if a.data["kind"] == "circular" and set(a.data["locks"]) == set(CYCLE)]
    ok = len(seed_pubs) == 1 and len(found) == 1 and set(found[0].data["hosts"]) == set(HOSTS) and \
        set(seed_pubs[0]["alert"]["hosts"]) == set(HOSTS)
    who = seed_pubs[0]["authority"] if seed_pubs else "nobody"
    _say(out, f"the seed's five-lock finding: published {len(seed_pubs)} time(s) on LF_ALERTS (by {who}), "
              f"{len(found)} time(s) in the standby's alerts, hosts "
              f"{', '.join(found[0].data['hosts']) if found else '-'}; {time.monotonic() - t0:.1f}s")
    if not ok:
        print("lockfleet cluster-demo: the seed's finding was NOT published exactly once with its four hosts",
              file=sys.stderr)
        return 1
    return 0
