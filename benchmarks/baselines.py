"""Baselines, run in the same process and the same run as the engine.

Every baseline is time-boxed: it stops after `budget_s` seconds of its own work and reports the
rate over what it did, with `partial=True` and how far it got. A partial rate is a rate over a
prefix of the stream: for the graph baselines the cost per edge grows as the graph grows, so a
prefix rate flatters them (it is an upper bound on the full-stream rate).

- `networkx_has_path`: the "quick script": `nx.has_path(G, v, u)` before each `G.add_edge(u, v)`;
  the cycle-closing edge is kept, as the engine keeps it.
- `rustworkx_check_cycle`: `PyDiGraph(check_cycle=True)`, `add_edge` in a loop; rustworkx refuses
  the cycle-closing edge (DAGWouldCycle), which is counted and not added.
- `PyReference`: a plain Python reference of the core over the same Arrow event batches the engine
  gets: per-thread held stacks (lists), a dict of known edges, a DFS cycle check per new edge.
  Exclusive locks only, no modes, irq or trylock chains: the workloads use none.
- `python_set_repeats`: a Python `set` of known edges, probed once per repeated edge.

Graph baselines are fed Python ints (converted before timing): they do no event decoding at all,
so they are graph-level edge streams, as the field figures in the issue are.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Result:
    name: str
    unit: str                 # "edges" (graph-level inserts), "obs" (edge observations), "events"
    done: int                 # units processed
    total: int                # units in the stream
    elapsed_s: float
    partial: bool
    extra: dict = field(default_factory=dict)
    cpu_s: float = float("nan")   # process cpu time over the same span

    @property
    def rate(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def edges_rate(self) -> float:
        """Rate in dependency edges (one edge = 4 events in these workloads)."""
        return self.rate / 4 if self.unit == "events" else self.rate

    def label(self) -> str:
        s = self.name
        if self.partial:
            s += f" (partial: {self.done:,}/{self.total:,} {self.unit} in {self.elapsed_s:.1f}s)"
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rate"] = self.rate
        d["edges_rate"] = self.edges_rate()
        return d


def _pairs(edges: np.ndarray) -> list[tuple[int, int]]:
    e = np.asarray(edges, np.int64)
    return list(zip(e[:, 0].tolist(), e[:, 1].tolist()))


# --------------------------------------------------------------------------------------------------


def networkx_has_path(edges: np.ndarray, budget_s: float = 5.0, check_every: int = 64) -> Result:
    import networkx as nx

    pairs = _pairs(edges)
    g = nx.DiGraph()
    closing = 0
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + budget_s
    has_path = nx.has_path
    for u, v in pairs:
        if u in g and v in g and has_path(g, v, u):
            closing += 1
        g.add_edge(u, v)
        done += 1
        if done % check_every == 0 and time.perf_counter() > deadline:
            break
    el = time.perf_counter() - t0
    return Result("networkx has_path+add_edge", "edges", done, len(pairs), el, done < len(pairs),
                  {"closing": closing}, time.process_time() - c0)


def rustworkx_check_cycle(edges: np.ndarray, n_classes: int, budget_s: float = 5.0,
                          check_every: int = 256) -> Result:
    import rustworkx as rx

    pairs = _pairs(edges)
    refused = 0
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + budget_s
    g = rx.PyDiGraph(check_cycle=True, multigraph=False)
    g.add_nodes_from(range(n_classes))                          # node index = class id
    add = g.add_edge
    err = rx.DAGWouldCycle
    for u, v in pairs:
        try:
            add(u, v, None)
        except err:
            refused += 1
        done += 1
        if done % check_every == 0 and time.perf_counter() > deadline:
            break
    el = time.perf_counter() - t0
    return Result("rustworkx check_cycle", "edges", done, len(pairs), el, done < len(pairs),
                  {"refused": refused}, time.process_time() - c0)


def python_set_repeats(known: np.ndarray, repeats: np.ndarray, budget_s: float = 5.0,
                       chunk: int = 65536) -> Result:
    seen = set(_pairs(known))
    us = np.asarray(repeats)[:, 0].tolist()
    vs = np.asarray(repeats)[:, 1].tolist()
    new = 0
    done = 0
    t0, c0 = time.perf_counter(), time.process_time()
    deadline = t0 + budget_s
    for lo in range(0, len(us), chunk):
        for e in zip(us[lo:lo + chunk], vs[lo:lo + chunk]):
            if e not in seen:
                seen.add(e)
                new += 1
        done = min(len(us), lo + chunk)
        if time.perf_counter() > deadline:
            break
    el = time.perf_counter() - t0
    return Result("python set", "obs", done, len(us), el, done < len(us), {"new": new}, time.process_time() - c0)


# --------------------------------------------------------------------------------------------------


class PyReference:
    """The core as a quick Python script: per-thread stacks, a dict of edges, a DFS per new edge."""

    def __init__(self) -> None:
        self.stacks: dict[int, list[str]] = {}
        self.edges: dict[tuple[str, str], int] = {}
        self.succ: dict[str, set[str]] = {}
        self.cycles: list[tuple[str, str]] = []    # closing edges
        self.bad_unlocks = 0
        self.events = 0

    def preload(self, pairs_named: list[tuple[str, str]]) -> None:
        for h, t in pairs_named:
            if (h, t) not in self.edges:
                self.edges[(h, t)] = 1
                self.succ.setdefault(h, set()).add(t)

    def _reaches(self, src: str, dst: str) -> bool:
        succ = self.succ
        if src not in succ:
            return False
        seen = {src}
        todo = [src]
        while todo:
            n = todo.pop()
            for m in succ.get(n, ()):
                if m == dst:
                    return True
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return False

    def ingest(self, batch, deadline: float = float("inf"), check_every: int = 1024) -> int:
        """Apply one batch; stop early (between rows) once `deadline` (perf_counter) has passed.
        Returns the rows applied."""
        tids = batch.column("tid").to_pylist()
        ops = batch.column("op").to_pylist()
        lk = batch.column("lock")
        names = lk.dictionary.to_pylist()
        idx = lk.indices.to_pylist()
        stacks, edges = self.stacks, self.edges
        clock = time.perf_counter
        done = 0
        for tid, op, i in zip(tids, ops, idx):
            done += 1
            if done % check_every == 0 and clock() > deadline:
                done -= 1
                break
            name = names[i]
            st = stacks.get(tid)
            if st is None:
                st = stacks[tid] = []
            if op == 1:
                for j in range(len(st) - 1, -1, -1):
                    if st[j] == name:
                        del st[j]
                        break
                else:
                    self.bad_unlocks += 1
                continue
            if op == 0 and st:
                h = st[-1]
                if h != name:
                    key = (h, name)
                    c = edges.get(key)
                    if c is None:
                        if self._reaches(name, h):
                            self.cycles.append(key)
                        self.succ.setdefault(h, set()).add(name)
                        edges[key] = 1
                    else:
                        edges[key] = c + 1
            st.append(name)
        self.events += done
        return done


def python_reference(batch_iter, total_events: int, budget_s: float = 5.0,
                     ref: PyReference | None = None, name: str = "python reference core") -> Result:
    """Feed batches to a PyReference; only ingest is timed (batch construction is not)."""
    ref = ref or PyReference()
    done = 0
    el = cpu = 0.0
    for b in batch_iter:
        t, c = time.perf_counter(), time.process_time()
        done += ref.ingest(b, deadline=t + (budget_s - el))
        el += time.perf_counter() - t
        cpu += time.process_time() - c
        if el >= budget_s:
            break
    return Result(name, "events", done, total_events, el, done < total_events,
                  {"cycles": len(ref.cycles), "edges": len(ref.edges)}, cpu)


# --------------------------------------------------------------------------------------------------
# The same baselines for the pytest-benchmark suites: the graph is built and the edges converted to
# Python ints before the timer (as the engine's Arrow batches are built before it); only the
# insert loop is timed. Each stops at `deadline` (time.perf_counter()) and returns what it did.


def rustworkx_graph(n_classes: int):
    """An empty `PyDiGraph(check_cycle=True)` holding nodes 0..n-1 (node index = class id)."""
    import rustworkx as rx

    g = rx.PyDiGraph(check_cycle=True, multigraph=False)
    g.add_nodes_from(range(n_classes))
    return g


def rustworkx_insert(g, pairs: list[tuple[int, int]], deadline: float = float("inf"),
                     check_every: int = 256) -> dict:
    """`add_edge` per pair; rustworkx refuses an edge that would close a cycle (DAGWouldCycle):
    counted in `refused`, not added."""
    import rustworkx as rx

    add, err, clock = g.add_edge, rx.DAGWouldCycle, time.perf_counter
    refused = done = 0
    for u, v in pairs:
        try:
            add(u, v, None)
        except err:
            refused += 1
        done += 1
        if done % check_every == 0 and clock() > deadline:
            break
    return {"done": done, "refused": refused, "partial": done < len(pairs)}


def networkx_insert(g, pairs: list[tuple[int, int]], deadline: float = float("inf"),
                    check_every: int = 64) -> dict:
    """`nx.has_path(G, v, u)` before each `G.add_edge(u, v)` (the quick script); the cycle-closing
    edge is kept, as the engine keeps it."""
    import networkx as nx

    has_path, clock = nx.has_path, time.perf_counter
    closing = done = 0
    for u, v in pairs:
        if u in g and v in g and has_path(g, v, u):
            closing += 1
        g.add_edge(u, v)
        done += 1
        if done % check_every == 0 and clock() > deadline:
            break
    return {"done": done, "closing": closing, "partial": done < len(pairs)}


def set_probe(known: set, pairs: list[tuple[int, int]], deadline: float = float("inf"),
              chunk: int = 65536) -> dict:
    """A Python `set` of known edges probed once per observation (new ones added)."""
    clock = time.perf_counter
    new = done = 0
    for lo in range(0, len(pairs), chunk):
        for e in pairs[lo:lo + chunk]:
            if e not in known:
                known.add(e)
                new += 1
        done = min(len(pairs), lo + chunk)
        if clock() > deadline:
            break
    return {"done": done, "new": new, "partial": done < len(pairs)}


def reference_ingest(ref: PyReference, batches, deadline: float = float("inf")) -> dict:
    """The Python reference core over the engine's own Arrow batches (its decoding included)."""
    done = 0
    for b in batches:
        done += ref.ingest(b, deadline=deadline)
        if time.perf_counter() > deadline:
            break
    total = sum(b.num_rows for b in batches)
    return {"done": done, "cycles": len(ref.cycles), "partial": done < total}
