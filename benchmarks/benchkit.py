"""Helpers for the pytest-benchmark suites in benchmarks/ (`make bench`, `make bench-quick`).

- `BENCH_QUICK=1` (or pytest's `--bench-quick`, see conftest.py) runs every suite at small sizes (`workloads.QUICK`), as a
  smoke check; the default is `workloads.FULL` (with the cuts each suite states).
- Workloads are generated once per session and cached as .npz under benchmarks/.cache/ (keyed by
  name, sizes and the generator's source), since W2's generation alone takes a minute or two.
- `measure()` runs `benchmark.pedantic` and records, per round, process CPU time next to the
  wall time pytest-benchmark keeps (the machine is shared: CPU time says how much of a wall
  figure was waiting for a core).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import baselines as bl  # noqa: E402
import workloads as wk  # noqa: E402

HOST = "bench-1"
TS0 = 1_700_000_000_000_000_000
CACHE = HERE / ".cache"


def quick_mode() -> bool:
    """BENCH_QUICK=1 (conftest sets it for --bench-quick): small sizes."""
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


# ------------------------------------------------------------------------------------------- data


def sizes(name: str) -> dict:
    return dict((wk.QUICK if quick_mode() else wk.FULL)[name])


_MEMO: dict = {}


def workload(name: str, **over) -> wk.Workload:
    """The seeded workload `name` at this session's sizes (with `over`), generated once and cached."""
    sz = dict(sizes(name), **over)
    key = (name, tuple(sorted(sz.items())))
    if key in _MEMO:
        return _MEMO[key]
    src = Path(wk.__file__).read_bytes()
    h = hashlib.sha256(repr(key).encode() + src).hexdigest()[:16]
    path = CACHE / f"{name}-{h}.npz"
    if path.exists():
        wl = wk.Workload.load(str(path))
    else:
        wl = wk.make(name, **sz)
        CACHE.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        wl.save(str(tmp))
        os.replace(tmp, path)
    _MEMO.clear()                       # keep one workload in memory at a time (W2 is big)
    _MEMO[key] = wl
    return wl


def event_batches(wl: wk.Workload, phase: str = "new", rows: int = wk.ROWS_PER_BATCH, ts0: int = TS0, **kw):
    """The phase as pre-built Arrow event batches (per-batch dictionaries, as an agent sends)."""
    return wk.to_event_batches(wl.phase(phase).edges, wl.n_classes, rows, names=wk.class_names(wl.n_classes),
                               ts0=ts0, **kw)


def pairs(edges) -> list[tuple[int, int]]:
    """Python ints for the graph baselines (converted outside every timer)."""
    return list(zip(edges[:, 0].tolist(), edges[:, 1].tolist()))


# ------------------------------------------------------------------------------------------ timing


def measure(benchmark, fn, *, setup=None, args=(), rounds: int = 1, warmup: int = 0, **info):
    """`benchmark.pedantic(fn)` with each round's process CPU time recorded in extra_info
    (`cpu_s`, `cpu_s_median`), plus `info` (units, unit, workload, case, impl, ...)."""
    cpu: list[float] = []

    def wrapped(*a, **k):
        c = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            cpu.append(time.process_time() - c)

    if setup is not None:
        res = benchmark.pedantic(wrapped, setup=setup, rounds=rounds, warmup_rounds=warmup, iterations=1)
    else:
        res = benchmark.pedantic(wrapped, args=args, rounds=rounds, warmup_rounds=warmup, iterations=1)
    cpu = cpu[warmup:]
    benchmark.extra_info.update(info)
    benchmark.extra_info["cpu_s"] = [round(x, 6) for x in cpu]
    benchmark.extra_info["cpu_s_median"] = statistics.median(cpu) if cpu else None
    return res


class EngineRun:
    """Fresh engines for new-edge rounds: `setup` builds one outside the timer; `run` ingests the
    pre-built batches, timing each batch (wall and CPU) into the last round's lists."""

    def __init__(self, batches, engine_factory=None):
        from lockfleet import Engine
        self.batches = batches
        self.factory = engine_factory or Engine
        self.eng = None
        self.alerts = 0
        self.batch_s: list[float] = []
        self.batch_cpu_s: list[float] = []

    def setup(self):
        self.eng = self.factory()
        return (), {}

    def run(self):
        eng, pc, pt = self.eng, time.perf_counter, time.process_time
        ws, cs = [], []
        n = 0
        for b in self.batches:
            t, c = pc(), pt()
            n += len(eng.ingest(b, host=HOST))
            ws.append(pc() - t)
            cs.append(pt() - c)
        self.batch_s, self.batch_cpu_s, self.alerts = ws, cs, n
        return n

    def record(self, benchmark, per_batch: bool = False) -> dict:
        st = self.eng.stats()
        keep = ("edges", "locks", "alerts", "alerts_circular", "inversions", "witnesses",
                "witness_budget_exhausted", "inversions_untracked", "core_bytes", "graph_recomputes",
                "graph_reorders", "cycle_searches", "search_budget_exhausted", "events")
        benchmark.extra_info["stats"] = {k: st[k] for k in keep if k in st}
        benchmark.extra_info["alerts_returned"] = self.alerts
        benchmark.extra_info["batches"] = len(self.batches)
        if self.batch_s:
            benchmark.extra_info["batch_median_s"] = statistics.median(self.batch_s)
            benchmark.extra_info["batch_max_s"] = max(self.batch_s)
            benchmark.extra_info["batch_cpu_median_s"] = statistics.median(self.batch_cpu_s)
            benchmark.extra_info["batch_cpu_max_s"] = max(self.batch_cpu_s)
            if per_batch:
                benchmark.extra_info["batch_s"] = [round(x, 6) for x in self.batch_s]
                benchmark.extra_info["batch_cpu_s"] = [round(x, 6) for x in self.batch_cpu_s]
        return st


def engine_rounds() -> int:
    return 1 if quick_mode() else 3




def budget(kind: str = "graph") -> float:
    """Seconds a time-boxed baseline may run (one round): quick 2 s; full 20 s for rustworkx and
    the set, 10 s for networkx and the Python reference core."""
    if quick_mode():
        return 2.0
    return {"graph": 20.0, "networkx": 10.0, "reference": 10.0}.get(kind, 20.0)


def run_baseline(benchmark, make_state, fn, *, box: float, units_per_done: float = 1.0, rounds: int = 1,
                 **info) -> dict:
    """Timed rounds of a time-boxed baseline: `make_state()` (outside the timer) builds the
    graph/set afresh for each round; `fn(state, deadline)` inserts until done or the deadline,
    returning a dict with `done` and `partial`. extra_info gets the last round's result and
    units = done * units_per_done (the rate's numerator; use rounds > 1 only for baselines that
    finish, so that every round did the same work)."""
    holder: dict = {}

    def setup():
        holder["state"] = make_state()
        return (), {}

    def run():
        return fn(holder["state"], time.perf_counter() + box)

    res = measure(benchmark, run, setup=setup, rounds=rounds, **info)
    benchmark.extra_info.update({k: v for k, v in res.items()})
    benchmark.extra_info["units"] = res["done"] * units_per_done
    benchmark.extra_info["budget_s"] = box
    holder.clear()
    return res


# ------------------------------------------------------------------------ the suites' runners

ENGINE = "lockfleet engine"
RX = "rustworkx check_cycle"
NX = "networkx has_path+add_edge"
REF = "python reference core"


def engine_new(benchmark, wl, batches, case, per_batch=False):
    """Fresh engines over the new-edge batches; units = the phase's distinct new edges."""
    run = EngineRun(batches)
    measure(benchmark, run.run, setup=run.setup, rounds=engine_rounds(), warmup=1, workload=wl.name, case=case,
            impl=ENGINE, units=wl.phase("new").n_new, unit="edges", events=wk.events_count(batches),
            rows_per_batch=batches[0].num_rows if batches else 0)
    return run.record(benchmark, per_batch=per_batch)


def rustworkx_baseline(benchmark, wl, prs, case, rounds=None):
    """rustworkx over the same stream; several rounds (as the engine's) unless told otherwise:
    it finishes the 30k-edge streams in well under its time box."""
    return run_baseline(benchmark, lambda: bl.rustworkx_graph(wl.n_classes),
                        lambda g, d: bl.rustworkx_insert(g, prs, d),
                        box=budget("graph"), rounds=engine_rounds() if rounds is None else rounds,
                        workload=wl.name, case=case, impl=RX, unit="edges",
                        refuses_cycle_edges=True, total=len(prs))


def networkx_baseline(benchmark, wl, prs, case):
    import networkx as nx
    return run_baseline(benchmark, nx.DiGraph, lambda g, d: bl.networkx_insert(g, prs, d),
                        box=budget("networkx"), workload=wl.name, case=case, impl=NX, unit="edges",
                        total=len(prs))


def reference_baseline(benchmark, wl, batches, case):
    return run_baseline(benchmark, bl.PyReference, lambda r, d: bl.reference_ingest(r, batches, d),
                        box=budget("reference"), units_per_done=0.25, workload=wl.name, case=case,
                        impl=REF, unit="edges", total=wk.events_count(batches), done_unit="events")
