#!/usr/bin/env python3
"""Where Engine.ingest spends its time, per event: schema validation (`events.normalize`), the
lock-name dictionary mapped to class ids (`Engine._locks.map`), the Cython core (`Core.ingest`),
and draining findings. It calls the engine's internals the way `Engine._apply` does (for plain
lock batches: no mode, site, task, host or irq columns), so it may need updating when they change;
it is a diagnostic, not part of the table.

    .venv/bin/python benchmarks/breakdown.py W1 W2 [--quick] [--dictionary batch|global]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import workloads as wk


def breakdown(label: str, batches, eng) -> dict:
    from lockfleet.events import normalize

    core = eng._core
    host = eng._hosts.get("bench-1")
    t = {"normalize": 0.0, "dict map": 0.0, "core": 0.0, "findings": 0.0}
    for b in batches:
        t0 = time.perf_counter()
        ev = normalize(b)
        t1 = time.perf_counter()
        m = eng._locks.map(ev.lock.dictionary)
        t2 = time.perf_counter()
        core.ingest(ev.ts_ns, ev.tid, ev.op, ev.lock.index, m, default_host=host)
        t3 = time.perf_counter()
        list(core.findings())
        list(core.overflows())
        t4 = time.perf_counter()
        t["normalize"] += t1 - t0
        t["dict map"] += t2 - t1
        t["core"] += t3 - t2
        t["findings"] += t4 - t3
    n = sum(b.num_rows for b in batches)
    tot = sum(t.values())
    dl = np.mean([len(b.column("lock").dictionary) for b in batches])
    parts = " | ".join(f"{k} {v / n * 1e9:.1f}" for k, v in t.items())
    print(f"{label}: {n:,} events, {tot * 1e3:.0f} ms = {tot / n * 1e9:.1f} ns/event | {parts} ns/event "
          f"(mean dictionary {dl:.0f} names per {batches[0].num_rows}-row batch)", flush=True)
    return {k: v / n for k, v in t.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="*", default=["W1", "W2"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dictionary", choices=("batch", "global", "both"), default="both")
    ap.add_argument("--rows-per-batch", type=int, default=wk.ROWS_PER_BATCH)
    args = ap.parse_args()
    from lockfleet import Engine

    modes = ("batch", "global") if args.dictionary == "both" else (args.dictionary,)
    for name in args.workloads:
        wl = wk.make(name, quick=args.quick)
        names = wk.class_names(wl.n_classes)
        for mode in modes:
            eng = Engine()
            ts = 1_700_000_000_000_000_000
            for ph in wl.phases:
                bs = wk.to_event_batches(ph.edges, wl.n_classes, args.rows_per_batch, names=names,
                                         dictionary=mode, ts0=ts)
                ts += 4 * ph.edges.shape[0] * 100
                breakdown(f"{name} {ph.name} dictionary={mode}", bs, eng)
                del bs
    return 0


if __name__ == "__main__":
    sys.exit(main())
