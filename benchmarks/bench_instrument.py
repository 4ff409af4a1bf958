#!/usr/bin/env python3
"""What tracing costs a Python program, and how fast the Agent SDK delivers. Nothing is asserted;
it prints a table (and --json writes one document).

    .venv/bin/python benchmarks/bench_instrument.py            # about half a minute
    .venv/bin/python benchmarks/bench_instrument.py --quick    # a smoke run
    .venv/bin/python benchmarks/bench_instrument.py --pairs 500000 --events 2000000 --json out.json

1. Overhead per acquire/release pair (`with lock: pass` in a loop, one thread), plain vs traced by
   `lockfleet.agent.instrument()`, in ns per pair (best of --repeats runs):
   - "hot path": the traced lock's own cost (two events recorded into the Agent's buffer), with
     the Agent set never to cut a batch during the loop;
   - "streaming": the same loop while the Agent cuts, encodes and sends batches to a running
     `lockfleet serve` (its threads share the GIL with the loop), timed until every event is acked.
   Also without sites (`sites=False`), and for RLock (outer pair, and a re-entrant inner pair).
2. Agent throughput into a running `lockfleet serve` (subprocess, --fsync group, loopback):
   events per second from the first event recorded to the last ack, through `Agent.acquire`/
   `release` (one call per event, checked) and through `Agent.record` (lists of 10,000 rows).

The machine this runs on matters more than usual: every figure is CPython speed, and on a shared
machine (see RESULTS.md) wall-clock times are noisy; each row also gives process CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from serving import free_port, lockfleet, wait_healthy

HERE = Path(__file__).resolve().parent




class Server:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="lockfleet-bench-instr-"))
        self.target = f"127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen([*lockfleet(), "serve", "--listen", self.target, "--data-dir",
                                      str(self.tmp / "data"), "--fsync", "group", "--snapshot-seconds", "0",
                                      "--snapshot-bytes", "0"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.tmp / "serve.log", "wb"))
        wait_healthy(self.target, self.proc)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def timed(fn, n: int) -> tuple[float, float]:
    """(wall ns per item, cpu ns per item) of fn()."""
    c0, t0 = time.process_time_ns(), time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / n, (time.process_time_ns() - c0) / n


def with_loop(lock, n: int):
    def run() -> None:
        for _ in range(n):
            with lock:
                pass
    return run


def reentrant_loop(lock, n: int):
    def run() -> None:
        with lock:
            for _ in range(n):
                with lock:
                    pass
    return run


def best(fn_factory, n: int, repeats: int, after=None) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        fn = fn_factory()
        wall, cpu = timed(fn, n)
        if after is not None:
            extra_wall, extra_cpu = after()
            wall, cpu = wall + extra_wall / n, cpu + extra_cpu / n
        runs.append((wall, cpu))
    return min(runs)


def overhead(target: str, pairs: int, repeats: int) -> list[dict]:
    import lockfleet.agent
    from lockfleet.agent import Agent
    from lockfleet.agent.instrument import uninstrument

    rows: list[dict] = []
    plain_lock, plain_rlock = threading.Lock(), threading.RLock()
    base = best(lambda: with_loop(plain_lock, pairs), pairs, repeats)
    rows.append({"case": "threading.Lock, plain", "ns_per_pair": base[0], "cpu_ns_per_pair": base[1]})
    base_r = best(lambda: with_loop(plain_rlock, pairs), pairs, repeats)
    base_rr = best(lambda: reentrant_loop(plain_rlock, pairs), pairs, repeats)

    def traced_case(label: str, factory, loop, baseline, sites: bool, streaming: bool) -> None:
        kw = {} if streaming else {"batch_rows": 1 << 40, "batch_interval": 1e9}
        agent = Agent(target, host=f"bench-{len(rows)}", max_buffered_events=4 * pairs * repeats + 10, **kw)
        lockfleet.agent.instrument(agent=agent, sites=sites, close_at_exit=False)
        lock = factory()

        def flush() -> tuple[float, float]:
            if not streaming:
                with agent._lock:      # forget the buffered events between runs (never sent)
                    del agent._rows[:]
                return 0.0, 0.0
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            agent.flush()
            return time.perf_counter_ns() - t0, time.process_time_ns() - c0

        try:
            wall, cpu = best(lambda: loop(lock, pairs), pairs, repeats, after=flush)
        finally:
            uninstrument(close=False)
            if streaming:
                agent.close()
            else:
                agent.abort()
        rows.append({"case": label, "ns_per_pair": wall, "cpu_ns_per_pair": cpu,
                     "overhead_ns": wall - baseline[0], "overhead_cpu_ns": cpu - baseline[1]})

    traced_case("Lock, traced, hot path", lambda: threading.Lock(), with_loop, base, True, False)
    traced_case("Lock, traced, hot path, sites=False", lambda: threading.Lock(), with_loop, base, False, False)
    traced_case("Lock, traced, streaming to the service (until acked)", lambda: threading.Lock(), with_loop, base,
                True, True)
    rows.append({"case": "threading.RLock, plain", "ns_per_pair": base_r[0], "cpu_ns_per_pair": base_r[1]})
    traced_case("RLock, traced, hot path", lambda: threading.RLock(), with_loop, base_r, True, False)
    rows.append({"case": "RLock re-entered, plain", "ns_per_pair": base_rr[0], "cpu_ns_per_pair": base_rr[1]})
    traced_case("RLock re-entered, traced (no events)", lambda: threading.RLock(), reentrant_loop, base_rr, True,
                False)
    return rows


def throughput(target: str, events: int) -> list[dict]:
    from lockfleet.agent import Agent

    out = []
    locks = [f"lock_{i:02d}" for i in range(32)]

    agent = Agent(target, host="bench-api")
    c0, t0 = time.process_time_ns(), time.perf_counter()
    for i in range(events // 2):
        name = locks[i & 31]
        agent.acquire(name, tid=i & 63)
        agent.release(name, tid=i & 63)
    agent.close()
    seconds, cpu = time.perf_counter() - t0, (time.process_time_ns() - c0) / 1e9
    out.append({"case": "Agent.acquire/release, one event per call", "events": agent.stats()["acked_events"],
                "seconds": seconds, "events_per_s": agent.stats()["acked_events"] / seconds, "cpu_s": cpu})

    agent = Agent(target, host="bench-record")
    now = time.time_ns()
    chunk = []
    for i in range(5000):
        name, tid = locks[i & 31], i & 63
        chunk.append((now, tid, 0, name, 0, 0, 0, 0, None, None))
        chunk.append((now, tid, 1, name, 0, 0, 0, 0, None, None))
    c0, t0 = time.process_time_ns(), time.perf_counter()
    for _ in range(max(1, events // len(chunk))):
        agent.record(chunk)
    agent.close()
    seconds, cpu = time.perf_counter() - t0, (time.process_time_ns() - c0) / 1e9
    n = agent.stats()["acked_events"]
    out.append({"case": "Agent.record, 10,000 rows per call", "events": n, "seconds": seconds,
                "events_per_s": n / seconds, "cpu_s": cpu})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200_000, help="acquire/release pairs per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case (the best is kept)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events per throughput case")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.repeats, args.events = 20_000, 2, 100_000
    server = Server()
    try:
        over = overhead(server.target, args.pairs, args.repeats)
        thru = throughput(server.target, args.events)
    finally:
        server.close()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.pairs} pairs x best of {args.repeats}")
    print(f"\n{'case':58} {'ns/pair':>9} {'cpu ns':>9} {'overhead':>9} {'ovh cpu':>9}")
    for r in over:
        ovh = f"{r['overhead_ns']:9.0f} {r['overhead_cpu_ns']:9.0f}" if "overhead_ns" in r else f"{'':9} {'':9}"
        print(f"{r['case']:58} {r['ns_per_pair']:9.0f} {r['cpu_ns_per_pair']:9.0f} {ovh}")
    print(f"\n{'Agent into lockfleet serve':58} {'events':>9} {'seconds':>9} {'events/s':>10} {'cpu s':>7}")
    for r in thru:
        print(f"{r['case']:58} {r['events']:9d} {r['seconds']:9.2f} {r['events_per_s']:10.0f} {r['cpu_s']:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"overhead": over, "throughput": thru, "pairs": args.pairs,
                                               "repeats": args.repeats, "python": sys.version.split()[0]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
