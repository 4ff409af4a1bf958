"""pytest-benchmark suites for the engine's hot paths, with baselines in the same groups so that one
run shows them side by side. Not part of `make test` (pytest's testpaths is `tests/`, and these
files live in `benchmarks/`); nothing here asserts a time.

    .venv/bin/python -m pytest benchmarks/test_bench_core.py --benchmark-enable
    .venv/bin/python -m pytest benchmarks/test_bench_core.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=min,median,ops,rounds

Sizes are cut down from run.py's (each round must build a fresh engine for new edges).
`ops` is ingest calls per second over the whole stream; divide the events (see each test's
`extra_info`) by the median time for events/s.
"""

from __future__ import annotations

import numpy as np
import pytest

import baselines as bl
import workloads as wk

pytest.importorskip("pytest_benchmark")

try:
    from lockfleet import Engine
except Exception as e:  # noqa: BLE001 - the engine may not be built yet
    Engine = None
    _WHY = f"lockfleet.Engine not importable: {e}"
else:
    _WHY = ""

needs_engine = pytest.mark.skipif(Engine is None, reason=_WHY or "engine")

# W1 shape, cut down: 5,000 classes / 12 layers as in W1, 30,000 new edges, 1M repeats
W1_SMALL = dict(n_classes=5000, n_layers=12, n_distinct=30_000, n_repeats=1_000_000)
W3A_SMALL = dict(n=5_000)
W3B_SMALL = dict(n_layers=40, width=25)


@pytest.fixture(scope="module")
def w1():
    wl = wk.make("W1", **W1_SMALL)
    names = wk.class_names(wl.n_classes)
    new = wk.to_event_batches(wl.phase("new").edges, wl.n_classes, names=names)
    rep = wk.to_event_batches(wl.phase("repeats").edges, wl.n_classes, names=names,
                              ts0=wk.events_count(new) * 100 + 1_700_000_000_000_000_000)
    return wl, new, rep


@pytest.fixture(scope="module")
def w3a():
    wl = wk.make("W3a", **W3A_SMALL)
    return wl, wk.to_event_batches(wl.phase("new").edges, wl.n_classes)


@pytest.fixture(scope="module")
def w3b():
    wl = wk.make("W3b", **W3B_SMALL)
    return wl, wk.to_event_batches(wl.phase("new").edges, wl.n_classes)


def _ingest_all(eng, batches):
    n = 0
    for b in batches:
        n += len(eng.ingest(b, host="bench-1"))
    return n


def _fresh_engine(batches):
    def setup():
        return (Engine(), batches), {}
    return setup


def _info(benchmark, events, edges):
    benchmark.extra_info["events"] = events
    benchmark.extra_info["edges"] = edges


# ------------------------------------------------------------------ W1 repeats (the hot path)


@needs_engine
@pytest.mark.benchmark(group="W1 repeats (1M edges = 4M events)")
def test_engine_w1_repeats(benchmark, w1):
    wl, new, rep = w1
    eng = Engine()
    _ingest_all(eng, new)
    benchmark.pedantic(_ingest_all, args=(eng, rep), rounds=5, iterations=1, warmup_rounds=1)
    _info(benchmark, wk.events_count(rep), wl.phase("repeats").edges.shape[0])


@pytest.mark.benchmark(group="W1 repeats (1M edges = 4M events)")
def test_python_set_w1_repeats(benchmark, w1):
    wl, _, _ = w1
    known = set(zip(*wl.phase("new").edges.T.tolist()))
    rep = list(zip(*wl.phase("repeats").edges.T.tolist()))

    def run():
        n = 0
        for e in rep:
            if e not in known:
                n += 1
        return n

    benchmark.pedantic(run, rounds=3, iterations=1)
    _info(benchmark, 4 * len(rep), len(rep))


# ------------------------------------------------------------------ W1 new edges


@needs_engine
@pytest.mark.benchmark(group="W1 new edges (30,010)")
def test_engine_w1_new(benchmark, w1):
    wl, new, _ = w1
    n_alerts = benchmark.pedantic(_ingest_all, setup=_fresh_engine(new), rounds=5, iterations=1)
    benchmark.extra_info["alerts"] = n_alerts
    _info(benchmark, wk.events_count(new), wl.phase("new").edges.shape[0])


@pytest.mark.benchmark(group="W1 new edges (30,010)")
def test_rustworkx_w1_new(benchmark, w1):
    wl, _, _ = w1
    r = benchmark.pedantic(bl.rustworkx_check_cycle, args=(wl.phase("new").edges, wl.n_classes, 60.0),
                           rounds=3, iterations=1)
    benchmark.extra_info["refused"] = r.extra["refused"]
    _info(benchmark, 4 * len(wl.phase("new").edges), len(wl.phase("new").edges))


# ------------------------------------------------------------------ W3a / W3b, cut down


@needs_engine
@pytest.mark.benchmark(group="W3a chain (5,000 nodes, tail first)")
def test_engine_w3a(benchmark, w3a):
    wl, batches = w3a
    benchmark.pedantic(_ingest_all, setup=_fresh_engine(batches), rounds=5, iterations=1)
    _info(benchmark, wk.events_count(batches), wl.phase("new").edges.shape[0])


@pytest.mark.benchmark(group="W3a chain (5,000 nodes, tail first)")
def test_rustworkx_w3a(benchmark, w3a):
    wl, _ = w3a
    benchmark.pedantic(bl.rustworkx_check_cycle, args=(wl.phase("new").edges, wl.n_classes, 60.0),
                       rounds=3, iterations=1)


@pytest.mark.benchmark(group="W3a chain (5,000 nodes, tail first)")
def test_python_reference_w3a(benchmark, w3a):
    wl, batches = w3a
    benchmark.pedantic(lambda: bl.python_reference(iter(batches), wk.events_count(batches), 60.0),
                       rounds=1, iterations=1)


@needs_engine
@pytest.mark.benchmark(group="W3b dense layers (40 x 25, 24,375 edges)")
def test_engine_w3b(benchmark, w3b):
    wl, batches = w3b
    benchmark.pedantic(_ingest_all, setup=_fresh_engine(batches), rounds=5, iterations=1)
    _info(benchmark, wk.events_count(batches), wl.phase("new").edges.shape[0])


@pytest.mark.benchmark(group="W3b dense layers (40 x 25, 24,375 edges)")
def test_rustworkx_w3b(benchmark, w3b):
    wl, _ = w3b
    benchmark.pedantic(bl.rustworkx_check_cycle, args=(wl.phase("new").edges, wl.n_classes, 60.0),
                       rounds=3, iterations=1)


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
