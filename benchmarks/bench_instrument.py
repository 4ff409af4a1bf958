#!/usr/bin/env python3
"""What tracing costs a Python program, and how fast the Agent SDK delivers. Nothing is asserted;
it prints a table (and --json writes one document).

    .venv/bin/python benchmarks/bench_instrument.py            # about a minute
    .venv/bin/python benchmarks/bench_instrument.py --quick    # a smoke run
    .venv/bin/python benchmarks/bench_instrument.py --suite full --suite-rounds 2 --skip-primitives

1. Overhead per acquire/release pair of each traced primitive (Lock, a timed acquire, a trylock,
   a Lock whose class is a signal, RLock outer and re-entered, Condition, Semaphore(1),
   BoundedSemaphore(1), a counting Semaphore(4)), plain and traced by
   `lockfleet.agent.instrument()` side by side, in ns per pair (best of --repeats runs): the
   traced primitive's own cost (events recorded into the Agent's buffer, which is set never to
   cut a batch during the loop). For the Lock also without sites (`sites=False`), and while the
   Agent cuts, encodes and sends batches to a running `lockfleet serve` (its threads share the
   GIL with the loop), timed until every event is acked.
2. Agent throughput into a running `lockfleet serve` (subprocess, --fsync group, loopback):
   events per second from the first event recorded to the last ack, through `Agent.acquire`/
   `release` (one call per event, checked) and through `Agent.record` (lists of 10,000 rows).
3. With --suite: CPython's own test_threading, test_thread, test_queue and test_logging (all of
   them, or the subset tests/test_cpython_suites.py runs), plain and under `python -m
   lockfleet.agent.pylocks.run --include-stdlib`, alternately, --suite-rounds times: wall and CPU seconds
   and whether every test had the same outcome.

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


def timed_loop(lock, n: int):
    def run() -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire(timeout=1.0)
            release()
    return run


def try_loop(lock, n: int):
    def run() -> None:
        acquire, release = lock.acquire, lock.release
        for _ in range(n):
            acquire(False)
            release()
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


def _signal_lock():
    """A traced Lock whose class is known to be a signal (released once by another thread)."""
    lock = threading.Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join()
    return lock


# (label, factory of the primitive (called while instrumented for the traced run), loop)
PRIMITIVES = [
    ("Lock: with lock", lambda: threading.Lock(), with_loop),
    ("Lock: acquire(timeout=1) + release", lambda: threading.Lock(), timed_loop),
    ("Lock: acquire(False) + release (trylock)", lambda: threading.Lock(), try_loop),
    ("Lock used as a signal (not recorded)", _signal_lock, with_loop),
    ("RLock: with rlock", lambda: threading.RLock(), with_loop),
    ("RLock re-entered (no events)", lambda: threading.RLock(), reentrant_loop),
    ("Condition: with cond (its RLock)", lambda: threading.Condition(), with_loop),
    ("Semaphore(1): with sem", lambda: threading.Semaphore(1), with_loop),
    ("BoundedSemaphore(1): with sem", lambda: threading.BoundedSemaphore(1), with_loop),
    ("Semaphore(4): with sem (counting: not recorded)", lambda: threading.Semaphore(4), with_loop),
]


def overhead(target: str, pairs: int, repeats: int) -> list[dict]:
    """Each primitive plain and traced (hot path: events into the Agent's buffer, no batch cut),
    side by side; then the Lock with sites=False and while streaming to the service."""
    import lockfleet.agent
    from lockfleet.agent import Agent
    from lockfleet.agent.pylocks.instrument import uninstrument

    rows: list[dict] = []

    def traced_run(factory, loop, sites: bool, streaming: bool, label: str) -> tuple[float, float]:
        kw = {} if streaming else {"batch_rows": 1 << 40, "batch_interval": 1e9}
        agent = Agent(target, host=f"bench-{len(rows)}", max_buffered_events=4 * pairs * repeats + 10, **kw)
        lockfleet.agent.instrument(agent=agent, sites=sites, close_at_exit=False, connect=streaming)
        prim = factory()

        def flush() -> tuple[float, float]:
            if not streaming:
                with agent.state.lock:      # forget the buffered events between runs (never sent)
                    del agent.batcher.rows[:]
                return 0.0, 0.0
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            agent.flush()
            return time.perf_counter_ns() - t0, time.process_time_ns() - c0

        try:
            return best(lambda: loop(prim, pairs), pairs, repeats, after=flush)
        finally:
            uninstrument(close=False)
            if streaming:
                agent.close()
            else:
                agent.abort()

    def row(label: str, plain: tuple[float, float], traced: tuple[float, float]) -> None:
        rows.append({"case": label, "plain_ns": plain[0], "traced_ns": traced[0], "overhead_ns": traced[0] - plain[0],
                     "ratio": traced[0] / plain[0], "plain_cpu_ns": plain[1], "traced_cpu_ns": traced[1],
                     "overhead_cpu_ns": traced[1] - plain[1]})

    for label, factory, loop in PRIMITIVES:
        prim = factory()                               # not instrumented: the original
        plain = best(lambda: loop(prim, pairs), pairs, repeats)
        traced = traced_run(factory, loop, True, False, label)
        row(label, plain, traced)
    lock = threading.Lock()
    plain = best(lambda: with_loop(lock, pairs), pairs, repeats)
    row("Lock: with lock, sites=False", plain, traced_run(lambda: threading.Lock(), with_loop, False, False, ""))
    row("Lock: with lock, streaming to the service (until acked)", plain,
        traced_run(lambda: threading.Lock(), with_loop, True, True, ""))
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


def suite(target: str, which: str, rounds: int) -> list[dict]:
    """CPython's test_threading, test_thread, test_queue and test_logging (`full`) or the subset
    tests/test_cpython_suites.py runs (`subset`), run plain and under `python -m
    lockfleet.agent.pylocks.run --include-stdlib` alternately, `rounds` times: wall and CPU seconds of each
    run (the child's CPU time), the tests run, and whether every test had the same outcome."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from test_cpython_suites import _subset

    names = _subset() if which == "subset" else ["test.test_threading", "test.test_thread", "test.test_queue",
                                                  "test.test_logging"]
    runner = str(HERE.parent / "tests" / "cpython_suites.py")
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="lockfleet-bench-suite-"))
    try:
        for r in range(rounds):
            outcomes = {}
            for mode in ("plain", "traced"):
                js = tmp / f"{mode}-{r}.json"
                cmd = [sys.executable, runner, "--json", str(js), *names]
                if mode == "traced":
                    cmd = [sys.executable, "-m", "lockfleet.agent.pylocks.run", "--target", target, "--host",
                           f"suite-{r}", "--include-stdlib", "--quiet", *cmd[1:]]
                t0 = time.perf_counter()
                before = os.times()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp, check=True,
                               timeout=900)
                after = os.times()
                wall = time.perf_counter() - t0
                cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
                data = json.loads(js.read_text())
                outcomes[mode] = {k: v["outcome"] for k, v in data["outcomes"].items()}
                out.append({"round": r, "mode": mode, "tests": data["tests_run"], "wall_s": wall, "cpu_s": cpu,
                            "tests_s": data["seconds"]})
            out[-1]["same_outcomes"] = outcomes["plain"] == outcomes["traced"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200_000, help="acquire/release pairs per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per case (the best is kept)")
    ap.add_argument("--events", type=int, default=1_000_000, help="events per throughput case")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--suite", choices=("none", "subset", "full"), default="none",
                    help="also time CPython's threading/thread/queue/logging tests plain vs traced: the "
                         "subset tests/test_cpython_suites.py runs (~1 min a round) or all 495 tests (~2 min)")
    ap.add_argument("--suite-rounds", type=int, default=2, metavar="N", help="plain/traced pairs (default 2)")
    ap.add_argument("--skip-primitives", action="store_true", help="only the --suite part")
    args = ap.parse_args()
    if args.quick:
        args.pairs, args.repeats, args.events = 20_000, 2, 100_000
    server = Server()
    over: list[dict] = []
    thru: list[dict] = []
    suite_rows: list[dict] = []
    try:
        if not args.skip_primitives:
            over = overhead(server.target, args.pairs, args.repeats)
            thru = throughput(server.target, args.events)
        if args.suite != "none":
            suite_rows = suite(server.target, args.suite, args.suite_rounds)
    finally:
        server.close()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.pairs} pairs x best of {args.repeats}")
    print(f"\n{'ns per acquire/release pair':58} {'plain':>7} {'traced':>7} {'added':>7} {'ratio':>6} "
          f"{'cpu add':>7}")
    for r in over:
        print(f"{r['case']:58} {r['plain_ns']:7.0f} {r['traced_ns']:7.0f} {r['overhead_ns']:7.0f} {r['ratio']:6.2f} "
              f"{r['overhead_cpu_ns']:7.0f}")
    if thru:
        print(f"\n{'Agent into lockfleet serve':58} {'events':>9} {'seconds':>9} {'events/s':>10} {'cpu s':>7}")
    for r in thru:
        print(f"{r['case']:58} {r['events']:9d} {r['seconds']:9.2f} {r['events_per_s']:10.0f} {r['cpu_s']:7.2f}")
    if suite_rows:
        print(f"\nCPython tests ({args.suite}), plain vs traced, side by side")
        print(f"{'round':>5} {'mode':7} {'tests':>6} {'wall s':>7} {'cpu s':>6} {'ratio':>6} same outcomes")
        for r in suite_rows:
            plain = next(p for p in suite_rows if p["round"] == r["round"] and p["mode"] == "plain")
            ratio = f"{r['wall_s'] / plain['wall_s']:6.2f}" if r["mode"] == "traced" else ""
            same = str(r.get("same_outcomes", ""))
            print(f"{r['round']:5d} {r['mode']:7} {r['tests']:6d} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} {ratio:>6} {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"overhead": over, "throughput": thru, "suite": suite_rows,
                                               "pairs": args.pairs,
                                               "repeats": args.repeats, "python": sys.version.split()[0]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
