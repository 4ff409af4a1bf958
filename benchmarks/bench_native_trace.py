#!/usr/bin/env python3
"""What the pthread interposer (`lockfleet trace`, native/lockfleet_preload.c) costs a native
program. Nothing is asserted; it prints a table (and --json writes one document).

    .venv/bin/python benchmarks/bench_native_trace.py            # about a minute
    .venv/bin/python benchmarks/bench_native_trace.py --quick    # a smoke run

benchmarks/native/lockloop.c (compiled here with `cc -O2`) takes and releases a lock PAIRS times
in each thread and prints the best thread's ns per lock/unlock pair; each figure is the best of
--repeats runs:

- plain: no interposer;
- recording only: preloaded, every event recorded into its thread's ring, with rings large enough
  that nothing is drained during the loop (the hot path alone: the interposer's own cost); with
  the default clock (a 1 ms tick in shared memory) and with --clock precise (a clock read per
  event);
- streaming to a file: `lockfleet trace -o FILE`: the sidecar drains every --poll-ms and writes
  Arrow IPC while the loop runs (the rings are the default size: the loop waits when one is full);
- streaming to a service: `lockfleet trace --target` to a `lockfleet serve` on loopback (the
  service, the sidecar and the loop share this machine's cores).

Kinds: mutex (one lock), nested (outer then inner: two pairs per iteration, each with a held
lock), rdlock (an rwlock read). On a shared machine absolute times are noisy: read the ratios to
"plain", which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import free_port, lockfleet, wait_healthy

HERE = Path(__file__).resolve().parent


def build(out: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench_native_trace: no C compiler (cc)")
    exe = out / "lockloop"
    subprocess.run([cc, "-O2", "-pthread", "-o", str(exe), str(HERE / "native" / "lockloop.c")], check=True)
    return exe


def run_loop(argv: list[str], env: dict[str, str] | None = None) -> float:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    # `lockfleet trace` passes the program's stdout through; the number is its last line
    return float(proc.stdout.split()[-1])


def best(fn, repeats: int) -> float:
    return min(fn() for _ in range(repeats))


def recording_only(exe: Path, pairs: int, threads: int, kind: str, clock: str = "tick") -> float:
    from lockfleet.agent.native.preload import TraceBuffer

    events = 1 << max(10, (2 * pairs + 64).bit_length())
    buf = TraceBuffer(rings=max(4, threads + 2), ring_events=events, clock=clock)
    try:
        ns = run_loop([str(exe), str(pairs), str(threads), kind], {**os.environ, **buf.env()})
        got = sum(b.num_rows for b in buf.drain())
        want = (2 + 2 * pairs) * threads if kind != "nested" else (2 + 2 * (pairs // 2) * 2) * threads
        if got != want:
            raise SystemExit(f"recording only: {got} events recorded, expected {want}")
        return ns
    finally:
        buf.close()


class Server:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="lockfleet-bench-native-"))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2_000_000, help="lock/unlock pairs per thread per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", default="mutex,nested,rdlock")
    ap.add_argument("--quick", action="store_true", help="200,000 pairs, 1 repeat")
    ap.add_argument("--no-service", action="store_true", help="skip streaming to a lockfleet serve")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs, args.repeats = 200_000, 1
    work = Path(tempfile.mkdtemp(prefix="lockfleet-bench-native-"))
    server = None if args.no_service else Server()
    results = []
    try:
        exe = build(work)
        for kind in args.kinds.split(","):
            loop = [str(exe), str(args.pairs), str(args.threads), kind]
            row = {"kind": kind, "threads": args.threads, "pairs": args.pairs}
            # side by side: plain and recording-only runs alternate, the best of each kept
            plain, rec, rec_precise = [], [], []
            for _ in range(args.repeats):
                plain.append(run_loop(loop))
                rec.append(recording_only(exe, args.pairs, args.threads, kind))
                rec_precise.append(recording_only(exe, args.pairs, args.threads, kind, "precise"))
            row["plain"], row["recording"], row["recording_precise"] = min(plain), min(rec), min(rec_precise)
            out = work / "events.arrow"
            t0 = time.perf_counter()
            row["file"] = best(lambda: run_loop([*lockfleet(), "trace", "--quiet", "-o", str(out), "--", *loop]),
                               args.repeats)
            row["file_wall_s"] = round((time.perf_counter() - t0) / args.repeats, 2)
            if server is not None:
                t0 = time.perf_counter()
                row["service"] = best(lambda: run_loop([*lockfleet(), "trace", "--quiet", "--target", server.target,
                                                        "--host", f"bench-{kind}", "--", *loop]), args.repeats)
                row["service_wall_s"] = round((time.perf_counter() - t0) / args.repeats, 2)
            results.append(row)
            print(_line(row), flush=True)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=2))
    return 0


def _line(r: dict) -> str:
    plain = r["plain"]
    parts = [f"{r['kind']:<7} x{r['threads']}: plain {plain:6.1f} ns/pair",
             f"recording only {r['recording']:6.1f} ({r['recording'] / plain:4.1f}x, +{r['recording'] - plain:.1f} ns)",
             f"with --clock precise {r['recording_precise']:6.1f}",
             f"to a file {r['file']:6.1f} ({r['file'] / plain:4.1f}x; {r['file_wall_s']} s a run)"]
    if "service" in r:
        parts.append(f"to a service {r['service']:6.1f} ({r['service'] / plain:4.1f}x; {r['service_wall_s']} s a run)")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
