#!/usr/bin/env python3
"""The authority's engine memory per host, with the host sketch and bounded tables vs. without
(the host sketch's memory bound): the same edge-mode fleet fed to one Engine, in this build and in a build of an
earlier commit (the "pre-change worktree": checked out in a temporary git worktree and built
there), each size in a process of its own.

    .venv/bin/python benchmarks/bench_fleet_memory.py                          # 1,000 and 10,000 hosts
    .venv/bin/python benchmarks/bench_fleet_memory.py --hosts 1000 10000 --baseline bc20f79 --json out.json

A host's shipment is what an edge-mode agent (`lockfleet.agent.edgemode.export_new`) sends for
`--deps` dependencies drawn from the fleet's common order (`--pool` dependencies between
`--classes` classes, so that hosts share them as a kernel's hosts do): four rows per dependency
on a synthetic thread of its own (tids from `SYNTHETIC_TID_BASE`), its `count` on the acquire of
the taken lock, then two usage rows per class touched (irqs on, then soft irqs off), each pair on
a synthetic thread of its own. It is generated directly (the same columns and values), not
through a local Engine, so that 10,000 hosts take seconds.

Measured per size and build: the core's memory by table family (`Engine.stats()`'s
`core_bytes_*`, or `memory_breakdown()` in builds without them), RSS growth of the process, the
per-host figure of each, threads, chains and sketches kept. Output: a table, and --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC_TID_BASE = 1 << 62
SYNTHETIC_TID_POOL = 1024


def fleet_order(pool: int, classes: int, seed: int) -> list[tuple[int, int]]:
    """The fleet's common dependencies (a kernel's lock order): `pool` pairs a -> b, a < b."""
    rng = random.Random(f"{seed}/pool")
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < min(pool, classes * (classes - 1) // 2):
        a = rng.randrange(classes - 1)
        pairs.add((a, rng.randrange(a + 1, classes)))
    return sorted(pairs)


def shipment(host_index: int, deps: int, order: list[tuple[int, int]], seed: int):  # -> pa.Table
    import pyarrow as pa

    rng = random.Random(f"{seed}/{host_index}")
    ts, tid, op, lock, irq, count = [], [], [], [], [], []
    t, k = 1_700_000_000_000_000_000, 0
    touched: list[int] = []
    for a, b in rng.sample(order, min(deps, len(order))):
        t += 1000
        for o, x, c in ((0, a, None), (0, b, 1), (1, b, None), (1, a, None)):
            ts.append(t), tid.append(SYNTHETIC_TID_BASE + k % SYNTHETIC_TID_POOL), op.append(o)
            lock.append(f"class_{x}"), irq.append(12), count.append(c)
        k += 1
        touched += [x for x in (a, b) if x not in touched]
    for x in touched:
        for bits in (0, 8):
            for o in (0, 1):
                ts.append(t), tid.append(SYNTHETIC_TID_BASE + k % SYNTHETIC_TID_POOL), op.append(o)
                lock.append(f"class_{x}"), irq.append(bits), count.append(None)
            k += 1
    return pa.table({"ts_ns": pa.array(ts, pa.int64()), "tid": pa.array(tid, pa.int64()),
                     "op": pa.array(op, pa.uint8()), "lock": pa.array(lock, pa.string()).dictionary_encode(),
                     "irq": pa.array(irq, pa.uint8()), "count": pa.array(count, pa.uint64())})


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(hosts: int, deps: int, pool: int, classes: int, seed: int) -> dict:
    """One size, in this process (run once per process: RSS is the process's)."""
    from lockfleet import Engine

    order = fleet_order(pool, classes, seed)
    ships = [shipment(h, deps, order, seed) for h in range(hosts)]
    rows = sum(s.num_rows for s in ships)
    eng = Engine()
    rss0 = _rss_kib()
    t0 = time.perf_counter()
    for h, s in enumerate(ships):
        eng.ingest(s, host=f"host-{h}")
    seconds = time.perf_counter() - t0
    ships.clear()
    st = eng.stats()
    core = eng._core
    mem = {k[len("core_bytes_"):]: v for k, v in st.items() if k.startswith("core_bytes_")} or \
        core.memory_breakdown()
    # edges (E) and classes (C) are the graph; hosts x edges is what must not show up
    return {"hosts": hosts, "rows": rows, "seconds": round(seconds, 2), "edges": st["edges"],
            "locks": st["locks"], "threads": st["threads"], "chains": st["chains"],
            "host_sketches": st.get("host_sketches", 0), "core_bytes": sum(mem.values()),
            "core_bytes_by_table": mem, "rss_growth_kib": _rss_kib() - rss0,
            "core_bytes_per_host": round(sum(mem.values()) / hosts),
            "rss_growth_bytes_per_host": round((_rss_kib() - rss0) * 1024 / hosts)}


def build_baseline(commit: str, into: Path) -> Path:
    """A git worktree of `commit` at `into`, its Cython core built in place with this venv."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(into), commit], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return into / "service"


def run_one(hosts: int, args: argparse.Namespace, pythonpath: str | None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run([sys.executable, __file__, "--one", str(hosts), "--deps", str(args.deps),
                           "--pool", str(args.pool), "--classes", str(args.classes), "--seed", str(args.seed)],
                          capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"bench_fleet_memory: the {hosts}-host run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--deps", type=int, default=30, help="dependencies per host")
    ap.add_argument("--pool", type=int, default=1000,
                    help="dependencies of the fleet's common order, each host taking --deps of them")
    ap.add_argument("--classes", type=int, default=2000, help="lock classes of the common order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default="bc20f79",
                    help="the commit to compare with (before the host sketch); '' to measure this build only")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--json", default="", help="write the figures here too")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)   # internal: one size, JSON out
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.deps, args.pool, args.classes, args.seed)))
        return 0
    if any(h < 1 for h in args.hosts) or args.deps < 1 or args.pool < 1 or args.classes < 2:
        ap.error("--hosts, --deps and --pool must be >= 1, --classes >= 2")
    out: dict = {"deps_per_host": args.deps, "pool": args.pool, "classes": args.classes, "runs": []}
    builds: list[tuple[str, str | None]] = [("this build (sketch, bounded tables)", None)]
    tmp = None
    if args.baseline:
        tmp = Path(tempfile.mkdtemp(prefix="lockfleet-baseline-"))
        print(f"building the baseline {args.baseline} in {tmp / 'tree'} ...", file=sys.stderr, flush=True)
        builds.append((f"{args.baseline} (every (edge, host) pair, every thread)",
                       str(build_baseline(args.baseline, tmp / "tree"))))
        out["baseline_commit"] = args.baseline
    try:
        for label, path in builds:
            for n in args.hosts:
                print(f"{label}: {n} hosts ...", file=sys.stderr, flush=True)
                r = run_one(n, args, path)
                r["build"] = label
                out["runs"].append(r)
                print(f"  core {r['core_bytes'] / 2**20:.1f} MiB ({r['core_bytes_per_host']:,} B/host), "
                      f"RSS +{r['rss_growth_kib'] / 1024:.0f} MiB, threads {r['threads']:,}, "
                      f"chains {r['chains']:,}, sketches {r['host_sketches']:,}", file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "tree")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
