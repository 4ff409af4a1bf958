"""pytest-benchmark suites: the engine and its baselines on the same streams, one run.

    make bench          # every suite in benchmarks/, full sizes, JSON + RESULTS.md
    make bench-quick    # the same at small sizes (BENCH_QUICK=1), a smoke check

Timing is the same for everyone: the engine gets pre-built Arrow event batches (64k rows; its
event decoding is inside its timer), graph baselines get pre-converted Python int pairs and an
empty graph built outside the timer; only the inserts are timed. Each round's process CPU time is
in extra_info (`cpu_s`). Engine rounds start from a fresh `Engine()` (built outside the timer), after one
untimed warm-up round.
Baselines are time-boxed (networkx and the Python reference: one round; rustworkx: as many
rounds as the engine on the small workloads; `partial` says when they stopped early: a prefix rate
flatters a graph baseline, whose cost per edge grows with the graph). rustworkx's
`check_cycle` refuses an edge that would close a cycle (counted in `refused`); networkx and the
Python reference core keep it, as the engine does.

`extra_info` keys the report reads: workload, case, impl, units, unit, cpu_s, stats (engine).
Nothing here asserts a time.
"""

from __future__ import annotations

import benchkit as bk
import numpy as np
import pytest
import workloads as wk
from benchkit import engine_new as _engine_new
from benchkit import networkx_baseline as _networkx
from benchkit import reference_baseline as _reference
from benchkit import rustworkx_baseline as _rustworkx


class Stream:
    """One workload's new-edge phase, as the engine and the baselines get it."""

    def __init__(self, name, rows=wk.ROWS_PER_BATCH):
        self.wl = bk.workload(name)
        self.batches = bk.event_batches(self.wl, rows=rows)
        self.pairs = bk.pairs(self.wl.phase("new").edges)


_STREAMS: dict = {}


def stream(name, rows=wk.ROWS_PER_BATCH) -> Stream:
    key = (name, rows)
    if key not in _STREAMS:
        _STREAMS.clear()
        _STREAMS[key] = Stream(name, rows)
    return _STREAMS[key]


# ------------------------------------------------------------------ W1, W1c, W5: new edges

NEW = [("W1", "new"), ("W1c", "new"), ("W5", "new")]


@pytest.mark.parametrize("name,case", NEW)
def test_engine_new(benchmark, name, case):
    benchmark.group = f"{name} new edges"
    s = stream(name)
    _engine_new(benchmark, s.wl, s.batches, case)


@pytest.mark.parametrize("name,case", NEW)
def test_rustworkx_new(benchmark, name, case):
    benchmark.group = f"{name} new edges"
    s = stream(name)
    _rustworkx(benchmark, s.wl, s.pairs, case)


@pytest.mark.parametrize("name,case", NEW)
def test_networkx_new(benchmark, name, case):
    benchmark.group = f"{name} new edges"
    s = stream(name)
    _networkx(benchmark, s.wl, s.pairs, case)


@pytest.mark.parametrize("name,case", NEW)
def test_reference_new(benchmark, name, case):
    benchmark.group = f"{name} new edges"
    s = stream(name)
    _reference(benchmark, s.wl, s.batches, case)


# ------------------------------------------------------------------ W3a, W3b at 64k- and 256-row batches

W3 = [("W3a", wk.ROWS_PER_BATCH), ("W3a", 256), ("W3b", wk.ROWS_PER_BATCH), ("W3b", 256)]


@pytest.mark.parametrize("name,rows", W3)
def test_engine_w3(benchmark, name, rows):
    benchmark.group = f"{name} rows={rows}"
    s = stream(name, rows)
    _engine_new(benchmark, s.wl, s.batches, f"new rows={rows}")


@pytest.mark.parametrize("name", ["W3a", "W3b"])
def test_rustworkx_w3(benchmark, name):
    benchmark.group = f"{name} rows={wk.ROWS_PER_BATCH}"
    s = stream(name)
    _rustworkx(benchmark, s.wl, s.pairs, "new")


@pytest.mark.parametrize("name", ["W3a", "W3b"])
def test_networkx_w3(benchmark, name):
    benchmark.group = f"{name} rows={wk.ROWS_PER_BATCH}"
    s = stream(name)
    _networkx(benchmark, s.wl, s.pairs, "new")


@pytest.mark.parametrize("name", ["W3a", "W3b"])
def test_reference_w3(benchmark, name):
    benchmark.group = f"{name} rows={wk.ROWS_PER_BATCH}"
    s = stream(name)
    _reference(benchmark, s.wl, s.batches, "new")


# ------------------------------------------------------------------ the generator itself


def test_workload_promises():
    """Not a benchmark: the small W1 keeps the generator's promises (back edges close 2..6-edge
    paths; no other new edge closes a cycle)."""
    wl = wk.make("W1", quick=True)
    res = wk.verify(wl, full=True)
    assert res["back_ok"] == 20
    assert res["closing_new"] == 10
    rows = wk.to_event_batches(wl.phase("new").edges[:10], wl.n_classes)[0]
    assert rows.num_rows == 40
    assert rows.column("op").to_pylist()[:4] == [0, 0, 1, 1]
    assert np.all(np.diff(rows.column("ts_ns").to_numpy()) > 0)
