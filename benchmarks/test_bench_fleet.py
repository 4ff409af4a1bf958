"""pytest-benchmark: fleet-sized W2 and W2c, all 2M new edges each (targets: W2c's time
within 1.5x of W2's in the same run; no 64k-row batch of W2c over 20x the median batch; W2c's
core memory within 128 B per edge + 256 B per class, witnesses included).

One round each (a round is 8M events; W2's generation alone takes a minute or two, cached under
benchmarks/.cache/). Per-batch wall and CPU times are in extra_info (`batch_s`, `batch_cpu_s`).
rustworkx `check_cycle` runs on the same streams, time-boxed (it refuses the cycle-closing edges).
"""

from __future__ import annotations

import gc

import benchkit as bk
import pytest


@pytest.mark.parametrize("name", ["W2", "W2c"])
def test_engine_fleet(benchmark, name):
    benchmark.group = "W2 / W2c new edges"
    wl = bk.workload(name)
    batches = bk.event_batches(wl)
    run = bk.EngineRun(batches)
    bk.measure(benchmark, run.run, setup=run.setup, rounds=1, workload=name, case="new",
               impl=bk.ENGINE, units=wl.phase("new").n_new, unit="edges", events=sum(b.num_rows for b in batches),
               rows_per_batch=batches[0].num_rows)
    st = run.record(benchmark, per_batch=True)
    benchmark.extra_info["classes"] = wl.n_classes
    benchmark.extra_info["memory_budget_bytes"] = 128 * st["edges"] + 256 * st["locks"]
    del run, batches
    gc.collect()


@pytest.mark.parametrize("name", ["W2", "W2c"])
def test_rustworkx_fleet(benchmark, name):
    benchmark.group = "W2 / W2c new edges"
    wl = bk.workload(name)
    bk.rustworkx_baseline(benchmark, wl, bk.pairs(wl.phase("new").edges), "new", rounds=1)
