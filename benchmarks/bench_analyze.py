#!/usr/bin/env python3
"""`lockfleet analyze` on a big archive: events/s and peak memory, next to a plain polars scan.

    .venv/bin/python benchmarks/bench_analyze.py                      # 50M events (a few minutes)
    .venv/bin/python benchmarks/bench_analyze.py --events 2000000     # a quick run
    .venv/bin/python benchmarks/bench_analyze.py --keep DIR           # keep (or reuse) the archive

1. Generates an archive in the service's layout (`archive/day=YYYY-MM-DD/part-<seg>-<n>.parquet`,
   zstd, the columns of docs/contract.md section 2 plus stream_id and seq) with numpy and pyarrow, vectorised: a
   kernel-like layered lock graph (classes in layers, code paths that take locks layer by layer,
   Zipf-skewed so that paths repeat, some reads and trylocks), several hosts with several threads
   each, spread over several day partitions, and one planted cross-host cycle.
2. Runs, each in a fresh subprocess so that its peak RSS (VmHWM) is its own:
   - `ceiling`: a plain polars scan of the same files and columns (`scan_parquet(...)` with every
     column analyze reads, materialised batch by batch by the streaming engine and counted), the
     most a reader of these files can do;
   - `analyze --alerts-only`: the findings (every row through the core, in log order);
   - `analyze`: findings and the aggregates (`--json`, output to /dev/null).
3. Prints a table: seconds, events/s, peak RSS, and the ratio to the ceiling.

Nothing is asserted; the figures are for the notes.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DAY_NS = 86_400 * 10**9
T0 = 1_735_689_600 * 10**9          # 2025-01-01T00:00:00Z
ROWS_PER_FILE = 2_000_000
ROW_GROUP = 262_144
LAYERS = 10
PER_LAYER = 60
PATHS = 4000


def _names(rng: np.random.Generator) -> list[str]:
    stems = ["mmap_lock", "i_mutex_key", "rq->lock", "pi_lock", "sb_writers", "cpuctx_mutex", "dev->mutex",
             "rtnl_mutex", "tracepoints_mutex", "bpf_event_mutex", "event_mutex", "slab_mutex", "zone->lock",
             "jbd2_handle", "i_mmap_rwsem", "kn->active", "cgroup_mutex", "css_set_lock", "ctx->lock",
             "wq_pool_mutex", "base->lock", "hrtimer_bases.lock", "tk_core.seq", "sk_lock-AF_INET"]
    return [f"&{stems[(layer * PER_LAYER + k) % len(stems)]}#{layer}.{k}" for layer in range(LAYERS)
            for k in range(PER_LAYER)]


def _paths(rng: np.random.Generator):
    """Code paths: each takes 1..6 locks in increasing layers, then releases them in reverse.
    Returns flat rows (lock id, op, mode) per path, with starts and lengths."""
    depth = rng.choice([1, 2, 3, 4, 5, 6], size=PATHS, p=[0.25, 0.3, 0.2, 0.12, 0.08, 0.05])
    locks, ops, modes, starts, lens = [], [], [], [], []
    pos = 0
    for d in depth.tolist():  # 4000 paths: setting up the templates is not the hot part
        layers = np.sort(rng.choice(LAYERS, size=d, replace=False))
        ids = layers * PER_LAYER + rng.integers(0, PER_LAYER, size=d)
        md = np.where(rng.random(d) < 0.1, 1, 0) + np.where(rng.random(d) < 0.05, 1, 0)
        acq = np.where(rng.random(d) < 0.05, 2, 0)
        locks += [ids, ids[::-1]]
        ops += [acq, np.ones(d, dtype=np.int64)]
        modes += [md, md[::-1]]
        starts.append(pos)
        lens.append(2 * d)
        pos += 2 * d
    return (np.concatenate(locks).astype(np.int32), np.concatenate(ops).astype(np.uint8),
            np.concatenate(modes).astype(np.uint8), np.array(starts), np.array(lens))


def generate(out: Path, events: int, hosts: int = 8, days: int = 5, threads: int = 64, seed: int = 1) -> int:
    """Write the archive under out/archive; returns the number of rows written."""
    rng = np.random.default_rng(seed)
    names = _names(rng)
    p_lock, p_op, p_mode, p_start, p_len = _paths(rng)
    weights = 1.0 / np.arange(1, PATHS + 1) ** 1.1
    weights /= weights.sum()
    host_names = pa.array([f"node-{i:02d}" for i in range(hosts)])
    lock_dict = pa.array(names)
    sites = pa.array([f"func_{i}+0x{i * 7 % 256:x}/0x{256 + i:x}" for i in range(len(names))])
    tasks = pa.array([f"kworker/{i}" for i in range(threads)])
    schema = pa.schema([("ts_ns", pa.int64()), ("tid", pa.int64()), ("op", pa.uint8()),
                        ("lock", pa.dictionary(pa.int32(), pa.utf8())), ("mode", pa.uint8()),
                        ("subclass", pa.uint8()), ("instance", pa.uint64()), ("irq", pa.uint8()),
                        ("site", pa.dictionary(pa.int32(), pa.utf8())),
                        ("task", pa.dictionary(pa.int32(), pa.utf8())),
                        ("host", pa.dictionary(pa.int32(), pa.utf8())),
                        ("stream_id", pa.dictionary(pa.int32(), pa.utf8())), ("seq", pa.uint64())])
    stream_dict = pa.array([f"agent-node-{i:02d}" for i in range(hosts)])
    per_day = max(1, events // days)
    written, seg, seq_next = 0, 0, np.zeros(hosts, dtype=np.int64)
    # the planted cycle: a path of three layers, closed backwards on another host, late in the archive
    a, b, c = 0 * PER_LAYER + 1, 4 * PER_LAYER + 2, 8 * PER_LAYER + 3
    while written < events:
        day = min(written // per_day, days - 1)
        day_end = events if day == days - 1 else (day + 1) * per_day
        n_target = max(1, min(ROWS_PER_FILE, day_end - written))
        # draw whole paths until the file is full, then cut to the exact size at the end
        n_paths = int(n_target / (2 * float((p_len * weights).sum() / 2)) * 1.1) + 8
        choice = rng.choice(PATHS, size=n_paths, p=weights)
        lens = p_len[choice]
        ends = np.cumsum(lens)
        keep = int(np.searchsorted(ends, n_target, side="left")) + 1
        choice, lens = choice[:keep], lens[:keep]
        total = int(lens.sum())
        offs = np.repeat(p_start[choice] - (np.cumsum(lens) - lens), lens) + np.arange(total)
        lock = p_lock[offs]
        op = p_op[offs]
        mode = p_mode[offs]
        inst_host = rng.integers(0, hosts, size=keep)
        inst_tid = rng.integers(0, threads, size=keep)
        host = np.repeat(inst_host, lens).astype(np.int32)
        tid = np.repeat(inst_tid, lens).astype(np.int64) + 1000
        if written + total >= events and events >= 1000:   # the last file: plant the cycle
            extra_l = np.array([a, b, b, a, b, c, c, b, c, a, a, c], dtype=np.int32)
            extra_o = np.array([0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1], dtype=np.uint8)
            extra_h = np.array([0] * 4 + [1 % hosts] * 4 + [2 % hosts] * 4, dtype=np.int32)
            lock = np.concatenate([lock, extra_l])
            op = np.concatenate([op, extra_o])
            mode = np.concatenate([mode, np.zeros(12, dtype=np.uint8)])
            host = np.concatenate([host, extra_h])
            tid = np.concatenate([tid, np.full(12, 7, dtype=np.int64)])
            total += 12
        start_in_day = written - day * per_day
        step = DAY_NS // max(per_day, 1)
        ts = T0 + day * DAY_NS + (start_in_day + np.arange(total)) * step \
            + rng.integers(0, max(step, 1), size=total)
        ts.sort()
        irq = np.where((lock // PER_LAYER) == LAYERS - 1, 4, 0).astype(np.uint8)
        # stream seq: one batch of 64k rows per host stream, counted per host
        seq = (seq_next[host] + 1).astype(np.uint64)
        cols = [
            pa.array(ts, pa.int64()), pa.array(tid, pa.int64()), pa.array(op, pa.uint8()),
            pa.DictionaryArray.from_arrays(pa.array(lock, pa.int32()), lock_dict),
            pa.array(mode, pa.uint8()), pa.array(np.zeros(total, dtype=np.uint8), pa.uint8()),
            pa.array(np.zeros(total, dtype=np.uint64), pa.uint64()), pa.array(irq, pa.uint8()),
            pa.DictionaryArray.from_arrays(pa.array(lock, pa.int32()), sites),
            pa.DictionaryArray.from_arrays(pa.array((tid - 1000) % threads, pa.int32()), tasks),
            pa.DictionaryArray.from_arrays(pa.array(host, pa.int32()), host_names),
            pa.DictionaryArray.from_arrays(pa.array(host, pa.int32()), stream_dict),
            pa.array(seq, pa.uint64()),
        ]
        seq_next += np.bincount(host, minlength=hosts) // 65536 + 1
        table = pa.Table.from_arrays(cols, schema=schema)
        day_dir = out / "archive" / f"day={time.strftime('%Y-%m-%d', time.gmtime((T0 + day * DAY_NS) // 10**9))}"
        day_dir.mkdir(parents=True, exist_ok=True)
        seg += 1
        pq.write_table(table, day_dir / f"part-{seg:08d}-0.parquet", compression="zstd", row_group_size=ROW_GROUP)
        written += total
    return written


# ---------------------------------------------------------------------------------------------- runs

# Peak memory of the child itself: VmHWM (its address space's high-water mark, which starts afresh
# at exec). ru_maxrss would not do: Linux carries it over from the parent across fork and exec, so
# every child would report at least this generator's own peak.
PEAK = """
def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""

CEILING = r"""
import glob, sys, time, polars as pl
PEAK
files = sorted(glob.glob(sys.argv[1] + "/archive/day=*/part-*.parquet"))
cols = ["ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site", "task", "host"]
t = time.perf_counter()
# every value of every column analyze reads, materialised batch by batch by the streaming engine
lf = pl.scan_parquet(files, hive_partitioning=False).select(cols)
n = sum(df.height for df in lf.collect_batches(chunk_size=65536))
print(n, time.perf_counter() - t, peak_kib())
"""

ANALYZE = r"""
import sys, time
from lockfleet.cli import main
PEAK
t = time.perf_counter()
rc = main(sys.argv[1:])
print(rc, time.perf_counter() - t, peak_kib(), file=sys.stderr)
"""


def _run(code: str, args: list[str]) -> subprocess.CompletedProcess:
    code = code.replace("PEAK", PEAK)
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000_000, help="events in the archive (default 50M)")
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="write the archive here and keep it (reused if present)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    tmp = None
    if args.keep:
        data = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="lockfleet-bench-analyze-")
        data = Path(tmp)
    try:
        files = sorted((data / "archive").glob("day=*/part-*.parquet"))
        if files:
            rows = sum(pq.read_metadata(f).num_rows for f in files)
            print(f"reusing {data}: {rows:,} events in {len(files)} files")
        else:
            t = time.perf_counter()
            rows = generate(data, args.events, hosts=args.hosts, days=args.days)
            files = sorted((data / "archive").glob("day=*/part-*.parquet"))
            size = sum(f.stat().st_size for f in files)
            print(f"generated {rows:,} events in {len(files)} files ({size / 2**20:.0f} MiB zstd) "
                  f"in {time.perf_counter() - t:.1f}s under {data}")
        results = []
        proc = _run(CEILING, [str(data)])
        n, secs, rss = proc.stdout.split()
        assert int(n) == rows, (n, rows)
        results.append(("plain polars scan (ceiling)", float(secs), int(rss)))
        for label, extra in (("analyze --alerts-only", ["--alerts-only"]), ("analyze (alerts + aggregates)", [])):
            proc = _run(ANALYZE, ["analyze", str(data), "--json", *extra])
            rc, secs, rss = proc.stderr.strip().splitlines()[-1].split()
            doc = json.loads(proc.stdout)
            results.append((label, float(secs), int(rss)))
            print(f"{label}: {len(doc['alerts'])} alert(s): {', '.join(a['id'] for a in doc['alerts'])}")
        ceiling = results[0][1]
        print()
        print(f"{'run':<32} {'seconds':>9} {'events/s':>14} {'peak RSS':>10} {'time vs ceiling':>16}")
        for label, secs, rss in results:
            print(f"{label:<32} {secs:>9.2f} {rows / secs:>14,.0f} {rss / 1024:>8.0f}Mi {secs / ceiling:>15.1f}x")
        print(f"\n{rows:,} events, {len(files)} files, {os.cpu_count()} cpus, python {sys.version.split()[0]}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "events": rows, "files": len(files),
                "runs": [{"run": l, "seconds": s, "events_per_s": rows / s, "peak_rss_kib": r} for l, s, r in results],
            }, indent=2))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
