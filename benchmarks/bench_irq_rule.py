#!/usr/bin/env python3
"""The two irq rules for read locks side by side: ingest time of the same stream with
`Engine(irq_rule="5.10")` and `Engine(irq_rule="pre-5.10")`, best of N rounds, alternating.

    .venv/bin/python benchmarks/bench_irq_rule.py                 # 20000 nestings (120k events)
    .venv/bin/python benchmarks/bench_irq_rule.py --nestings 5000 --rounds 5

The stream is adversarial on purpose: random nestings of 3 out of 300 classes (reads, recursive
reads and trylocks among them) under random irq contexts, so that the graph is dense, full of
cycles and irq-safe/unsafe classes and the irq reachability is exercised hard. It is no model of a
kernel; only the ratio between the rules means something. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from lockfleet import Engine

IRQS = np.array([0, 0, 0, 4, 1 | 4, 8, 2 | 8, 2 | 4 | 8, 4 | 8])


def stream(nestings: int, n_threads: int = 64, depth: int = 3, n_classes: int = 300, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    tid, op, lock, mode, irq = [], [], [], [], []
    for _ in range(nestings):
        t, q = int(rng.integers(n_threads)), int(IRQS[rng.integers(len(IRQS))])
        classes = rng.choice(n_classes, size=depth, replace=False)
        for c, m, tr in zip(classes, rng.choice([0, 0, 1, 2], size=depth), rng.random(depth) < 0.1):
            tid.append(t), op.append(2 if tr else 0), lock.append(f"L{c}"), mode.append(int(m)), irq.append(q)
        for c in classes[::-1]:
            tid.append(t), op.append(1), lock.append(f"L{c}"), mode.append(0), irq.append(q)
    n = len(tid)
    return pa.table({"ts_ns": pa.array(np.arange(n), pa.int64()), "tid": pa.array(tid, pa.int64()),
                     "op": pa.array(op, pa.uint8()), "lock": pa.array(lock).dictionary_encode(),
                     "mode": pa.array(mode, pa.uint8()), "irq": pa.array(irq, pa.uint8())})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nestings", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    table = stream(args.nestings)
    batches = table.to_batches(max_chunksize=4096)
    best: dict[str, float] = {}
    found: dict[str, dict[str, int]] = {}
    for _ in range(args.rounds):
        for rule in ("5.10", "pre-5.10"):
            eng = Engine(irq_rule=rule)
            t0 = time.perf_counter()
            for b in batches:
                eng.ingest(b, host="h")
            best[rule] = min(best.get(rule, float("inf")), time.perf_counter() - t0)
            found[rule] = {}
            for a in eng.alerts():
                found[rule][a.kind] = found[rule].get(a.kind, 0) + 1
    print(f"{table.num_rows} events, best of {args.rounds}")
    for rule, secs in best.items():
        print(f"  {rule:9} {secs:7.3f} s  {table.num_rows / secs:10.0f} events/s  findings {found[rule]}")
    print(f"  ratio 5.10 / pre-5.10: {best['5.10'] / best['pre-5.10']:.2f}")


if __name__ == "__main__":
    main()
