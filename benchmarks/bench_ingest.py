#!/usr/bin/env python3
"""Ingest throughput of `lockfleet serve` over loopback gRPC: events/s acknowledged, with each
--fsync mode. Nothing is asserted; it prints a table (and --json writes one document).

    .venv/bin/python benchmarks/bench_ingest.py                    # 4 streams x 40 batches x 65536 rows, each fsync mode
    .venv/bin/python benchmarks/bench_ingest.py --quick            # a smoke run (a few seconds)
    .venv/bin/python benchmarks/bench_ingest.py --fsync group --streams 1 --batches 100

The server runs as a subprocess (`lockfleet serve`, a fresh temporary data dir per run); the
client pushes prebuilt Arrow IPC batches (lock traffic of many threads taking a few of 64 locks in
one global order, so the engine sees mostly repeated chains, as real streams are) on `--streams`
concurrent Push calls, each with the agent's window of 8 unacked batches, and times from the first
send to the last ack. Acks are sent only after fsync (except with --fsync never).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from serving import free_port, lockfleet, wait_healthy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_batch(rows: int, seed: int, threads: int = 256, locks: int = 64) -> pa.RecordBatch:
    """About `rows` events in whole sessions: each takes 1..4 locks in increasing order, then
    releases them (so a thread holds nothing between batches)."""
    rng = np.random.default_rng(seed)
    tid, op, lock = [], [], []
    while True:
        t = int(rng.integers(1, threads + 1))
        k = int(rng.integers(1, 5))
        if len(op) + 2 * k > rows:
            break
        chosen = np.sort(rng.choice(locks, size=k, replace=False))
        for c in chosen:
            tid.append(t), op.append(0), lock.append(int(c))
        for c in chosen[::-1]:
            tid.append(t), op.append(1), lock.append(int(c))
    names = pa.array([f"lock_{i:02d}" for i in range(locks)], pa.utf8())
    n = len(op)
    return pa.record_batch({
        "ts_ns": pa.array(1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 100),
        "tid": pa.array(np.array(tid, dtype=np.int64)),
        "op": pa.array(np.array(op, dtype=np.uint8)),
        "lock": pa.DictionaryArray.from_arrays(pa.array(np.array(lock, dtype=np.int32)), names),
    })


def to_ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()




def run(fsync: str, streams: int, batches: int, ipcs: list[bytes], rows: int) -> dict:
    from lockfleet.agent import Stream, push_streams

    tmp = Path(tempfile.mkdtemp(prefix="lockfleet-bench-"))
    target = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([*lockfleet(), "serve", "--listen", target, "--data-dir", str(tmp / "data"),
                             "--fsync", fsync, "--snapshot-seconds", "0", "--snapshot-bytes", "0"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb"))
    try:
        wait_healthy(target, proc)
        errors: list[BaseException] = []

        def one(i: int) -> None:
            try:
                push_streams(target, f"bench-{i}", [Stream(f"s{i}", [ipcs[(i + k) % len(ipcs)] for k in range(batches)])])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        if errors:
            raise errors[0]
        events = sum(pa.ipc.open_stream(ipcs[(i + k) % len(ipcs)]).read_all().num_rows
                     for i in range(streams) for k in range(batches))
        log_bytes = sum(p.stat().st_size for p in (tmp / "data" / "log").glob("seg-*.log"))
        return {"fsync": fsync, "streams": streams, "batches": streams * batches, "rows_per_batch": rows,
                "events": events, "seconds": round(seconds, 3), "events_per_s": round(events / seconds),
                "mb_per_s": round(log_bytes / seconds / 1e6, 1)}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fsync", choices=("always", "group", "never", "all"), default="all")
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--batches", type=int, default=40, help="batches per stream")
    ap.add_argument("--rows", type=int, default=65536, help="rows per batch")
    ap.add_argument("--quick", action="store_true", help="2 streams x 8 batches x 16384 rows")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.quick:
        args.streams, args.batches, args.rows = 2, 8, 16384
    ipcs = [to_ipc(make_batch(args.rows, seed)) for seed in range(4)]
    modes = ("always", "group", "never") if args.fsync == "all" else (args.fsync,)
    rows = min(pa.ipc.open_stream(b).read_all().num_rows for b in ipcs)
    results = [run(m, args.streams, args.batches, ipcs, rows) for m in modes]
    print(f"{'fsync':<8}{'streams':>8}{'batches':>9}{'events':>12}{'seconds':>9}{'events/s':>14}{'log MB/s':>10}")
    for r in results:
        print(f"{r['fsync']:<8}{r['streams']:>8}{r['batches']:>9}{r['events']:>12}{r['seconds']:>9.2f}"
              f"{r['events_per_s']:>14,}{r['mb_per_s']:>10}")
    print(f"({os.cpu_count()} CPUs; Python {sys.version.split()[0]}; loopback gRPC, server and client on this machine)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
