"""Seeded workload generators for the lockfleet benchmarks.

Every workload is a stream of lock-order dependency edges ``u -> v`` between lock classes, split
into phases (``new``: distinct edges the engine has not seen; ``repeats``: edges it already knows).
As events, each edge is one thread taking ``u``, then ``v``, then releasing ``v`` and ``u``
(`to_event_batches`). Class ids are a random permutation of the topological rank, so id order (and
the order of names in a batch dictionary) says nothing about the topological order.

- W1 kernel-sized: 5,000 classes in 12 layers, 30,000 distinct edges (80% to the next layer, 15%
  two to four layers down, 5% forward within a layer) in random order, then 10M repeats drawn with a
  Zipf(1.1) skew, and 20 back edges closing real paths of 2..6 edges, half among the new edges and
  half among the repeats.
- W2 fleet-sized: the same shape, 200,000 classes in 16 layers, 2,000,000 distinct edges, 2M repeats,
  20 back edges.
- W3a adversarial chain: a 20,000-node chain inserted tail first, ids running against it.
- W3b dense layers: 40 layers of 25 nodes, complete bipartite between neighbours (24,375 edges),
  inserted bottom-up.

Back edges: a back edge ``b -> a`` is planted where the graph at that moment has a path
``a ~> b`` of exactly k edges (k in 2..6, and no shorter one), so it closes a cycle of k+1 edges.
The generator also makes sure that no *other* new edge closes a cycle: a forward edge ``x -> y``
that comes after a back edge ``b -> a`` in the stream closes a cycle iff ``y ~> b`` and ``a ~> x``
(the path ``y ~> x`` must use a back edge, and forward edges only go up in rank); every forward
edge that could (tested conservatively on the final graph) is moved to a random position before
that back edge. So a correct engine raises exactly one circular alert per back edge, and the
back edge is its closing link.

Everything here is vectorized with numpy (W1's repeats are 40M event rows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

ROWS_PER_BATCH = 65536

EVENT_SCHEMA_FIELDS = (
    ("ts_ns", pa.int64()),
    ("tid", pa.int64()),
    ("op", pa.uint8()),
    ("lock", pa.dictionary(pa.int32(), pa.utf8())),
)


# --------------------------------------------------------------------------------------------------
# data model


@dataclass
class Phase:
    name: str                 # "new" or "repeats"
    edges: np.ndarray         # (m, 2) int64 class ids, in stream order
    n_new: int                # distinct edges this phase adds to the graph (incl. back edges)
    back_pos: np.ndarray      # positions of the planted back edges within `edges`


@dataclass
class Workload:
    name: str
    n_classes: int
    phases: list[Phase]
    back_edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    back_path_len: list[int] = field(default_factory=list)   # k: the path a ~> b each back edge closes
    meta: dict = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        """Distinct edges in the final graph."""
        return sum(p.n_new for p in self.phases)

    def phase(self, name: str) -> Phase:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(name)

    def save(self, path: str) -> None:
        arrays = {"n_classes": np.array(self.n_classes), "back_edges": self.back_edges,
                  "back_path_len": np.array(self.back_path_len, np.int64)}
        for i, p in enumerate(self.phases):
            arrays[f"p{i}_edges"] = p.edges
            arrays[f"p{i}_back_pos"] = p.back_pos
            arrays[f"p{i}_n_new"] = np.array(p.n_new)
        names = np.array([p.name for p in self.phases])
        np.savez(path, names=names, wl_name=np.array(self.name), **arrays)

    @classmethod
    def load(cls, path: str) -> Workload:
        z = np.load(path, allow_pickle=False)
        phases = [Phase(str(n), z[f"p{i}_edges"], int(z[f"p{i}_n_new"]), z[f"p{i}_back_pos"])
                  for i, n in enumerate(z["names"])]
        return cls(str(z["wl_name"]), int(z["n_classes"]), phases, z["back_edges"],
                   [int(k) for k in z["back_path_len"]])


# --------------------------------------------------------------------------------------------------
# graph helpers (numpy CSR, frontier BFS)


def _csr(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


def _expand(indptr: np.ndarray, indices: np.ndarray, frontier: np.ndarray) -> np.ndarray:
    starts = indptr[frontier]
    lens = indptr[frontier + 1] - starts
    tot = int(lens.sum())
    if tot == 0:
        return np.zeros(0, np.int64)
    offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return indices[offs + np.arange(tot)]


def reach_mask(indptr, indices, sources, n: int) -> np.ndarray:
    """Boolean mask of every node reachable from `sources` (sources included)."""
    seen = np.zeros(n, bool)
    frontier = np.unique(np.asarray(sources, np.int64))
    seen[frontier] = True
    while frontier.size:
        nb = _expand(indptr, indices, frontier)
        nb = np.unique(nb[~seen[nb]])
        seen[nb] = True
        frontier = nb
    return seen


def bfs_dist(indptr, indices, src: int, dst: int, limit: int) -> int:
    """Edges on a shortest path src ~> dst, or -1 if longer than `limit` or none."""
    n = indptr.size - 1
    seen = np.zeros(n, bool)
    seen[src] = True
    frontier = np.array([src], np.int64)
    for d in range(1, limit + 1):
        nb = _expand(indptr, indices, frontier)
        nb = np.unique(nb[~seen[nb]])
        if nb.size == 0:
            return -1
        if np.any(nb == dst):
            return d
        seen[nb] = True
        frontier = nb
    return -1


# --------------------------------------------------------------------------------------------------
# layered workloads (W1, W2)


def _unique_pairs(rng, sampler, need: int, n: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Draw `need` distinct (u, v) rank pairs from `sampler(rng, m) -> (u, v)`."""
    keys = np.zeros(0, np.int64)
    m = int(need * 1.2) + 16
    while keys.size < need:
        u, v = sampler(rng, m)
        k = np.unique(np.concatenate((keys, u * n + v)))
        if exclude is not None and exclude.size:
            k = k[~np.isin(k, exclude)]
        keys = k
        m = int((need - keys.size) * 1.5) + 16
    keys = rng.permutation(keys)[:need]
    return np.stack((keys // n, keys % n), axis=1)


def _zipf_indices(rng, n_items: int, n_draws: int, s: float, chunk: int = 1 << 22) -> np.ndarray:
    """`n_draws` indices into `n_items` items with P(k-th most popular) ~ 1/k^s; popularity order
    is a random permutation of the items."""
    w = np.arange(1, n_items + 1, dtype=np.float64) ** -s
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    pop = rng.permutation(n_items)
    out = np.empty(n_draws, np.int64)
    for lo in range(0, n_draws, chunk):
        hi = min(n_draws, lo + chunk)
        r = np.searchsorted(cdf, rng.random(hi - lo), side="right")
        np.minimum(r, n_items - 1, out=r)
        out[lo:hi] = pop[r]
    return out


def layered(name: str, n_classes: int, n_layers: int, n_distinct: int, n_repeats: int,
            n_back: int = 20, seed: int = 1, zipf_s: float = 1.1,
            mix: tuple[float, float, float] = (0.80, 0.15, 0.05),
            back_min_frac: float = 0.25, back_candidates: int = 16,
            insulate: bool = True, verbose: bool = False) -> Workload:
    """W1/W2 (insulate: later forward edges that could close a cycle through a back edge are
    moved before it), or W1c/W2c (insulate=False: back edges stay where they fall, and every later
    forward edge that runs around one closes another cycle, as in a fleet whose graph holds
    unfixed deadlocks)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    N, L = n_classes, n_layers
    layer = (np.arange(N, dtype=np.int64) * L) // N           # layer of each rank
    starts = np.searchsorted(layer, np.arange(L + 1))          # first rank of each layer
    sizes = np.diff(starts)

    def s_next(rng, m):
        u = rng.integers(0, starts[L - 1], m)
        lv = layer[u] + 1
        return u, starts[lv] + (rng.random(m) * sizes[lv]).astype(np.int64)

    def s_skip(rng, m):
        u = rng.integers(0, starts[L - 2], m)                 # layers 0..L-3
        dmax = np.minimum(4, L - 1 - layer[u])
        d = 2 + (rng.random(m) * (dmax - 1)).astype(np.int64)
        lv = layer[u] + d
        return u, starts[lv] + (rng.random(m) * sizes[lv]).astype(np.int64)

    def s_within(rng, m):
        lu = rng.integers(0, L, m)
        a = (rng.random(m) * sizes[lu]).astype(np.int64)
        b = (rng.random(m) * (sizes[lu] - 1)).astype(np.int64)
        b = b + (b >= a)                                        # b != a
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return starts[lu] + lo, starts[lu] + hi

    c1 = int(round(n_distinct * mix[0]))
    c2 = int(round(n_distinct * mix[1]))
    c3 = n_distinct - c1 - c2
    fwd = np.concatenate([_unique_pairs(rng, s_next, c1, N), _unique_pairs(rng, s_skip, c2, N),
                          _unique_pairs(rng, s_within, c3, N)])
    fwd = fwd[rng.permutation(fwd.shape[0])]                   # random insertion order (ranks)
    E = fwd.shape[0]
    if verbose:
        print(f"  [{name}] {E} distinct edges in {time.perf_counter() - t0:.1f}s", flush=True)

    # ---- back edges among the new edges: (b, a) at stream position p with a k-edge path a ~> b
    # in fwd[:p] (and no shorter one); then move every later forward edge that could close a cycle
    n_back_new = n_back // 2
    n_back_rep = n_back - n_back_new

    fwd_keys = np.sort(fwd[:, 0] * N + fwd[:, 1])

    def is_edge(a, b):
        i = np.searchsorted(fwd_keys, a * N + b)
        return i < fwd_keys.size and fwd_keys[i] == a * N + b

    def pick_path(indptr, indices, k):
        """Random walk of k edges whose end is at distance exactly k (and a -> b is no edge of the
        whole stream, so that no reordering can shorten the cycle to 2); returns (a, b) or None."""
        cand = np.flatnonzero(np.diff(indptr))
        for _ in range(200):
            a = int(cand[rng.integers(0, cand.size)])
            cur, ok = a, True
            for _step in range(k):
                lo, hi = indptr[cur], indptr[cur + 1]
                if hi == lo:
                    ok = False
                    break
                cur = int(indices[rng.integers(lo, hi)])
            if ok and not is_edge(a, cur) and bfs_dist(indptr, indices, a, cur, k) == k:
                return a, cur
        return None

    backs_new: list[tuple[int, int, int, int]] = []            # (pos, b, a, k) ranks
    positions = np.sort(rng.choice(np.arange(int(E * back_min_frac), E), n_back_new, replace=False))
    ip_all, ix_all = _csr(N, fwd[:, 0], fwd[:, 1])
    ip_rev, ix_rev = _csr(N, fwd[:, 1], fwd[:, 0])
    for p in positions:
        # a few candidate paths; keep the one that forces the fewest later edges to move (counted
        # on the final forward graph plus the back edges already placed)
        if backs_new and insulate:
            ip_all, ix_all = _csr(N, np.concatenate((fwd[:, 0], [bb for (_, bb, _, _) in backs_new])).astype(np.int64),
                                  np.concatenate((fwd[:, 1], [aa for (_, _, aa, _) in backs_new])).astype(np.int64))
            ip_rev, ix_rev = _csr(N, np.concatenate((fwd[:, 1], [aa for (_, _, aa, _) in backs_new])).astype(np.int64),
                                  np.concatenate((fwd[:, 0], [bb for (_, bb, _, _) in backs_new])).astype(np.int64))
        best = None
        k = int(rng.integers(2, 7))
        ip_p, ix_p = _csr(N, fwd[:p, 0], fwd[:p, 1])            # forward edges only: b is below a
        for _cand in range(back_candidates if insulate else 1):
            r = None
            for _attempt in range(20):
                r = pick_path(ip_p, ix_p, k)
                if r is not None and all((r[1], r[0]) != (bb, aa) for (_, bb, aa, _) in backs_new):
                    break
                r = None
            if r is None:
                continue
            a, b = r
            if not insulate:
                best = (0, a, b)
                break
            desc_a = reach_mask(ip_all, ix_all, [a], N)
            anc_b = reach_mask(ip_rev, ix_rev, [b], N)
            cost = int(np.count_nonzero(desc_a[fwd[p:, 0]] & anc_b[fwd[p:, 1]]))
            if best is None or cost < best[0]:
                best = (cost, a, b)
        if best is None:
            raise RuntimeError(f"{name}: no path for back edge at {p}")
        backs_new.append((int(p), best[2], best[1], k))

    # conservative insulation on the final new-phase graph (forward + new back edges)
    if backs_new:
        bsrc = np.array([b for (_, b, _, _) in backs_new], np.int64)
        bdst = np.array([a for (_, _, a, _) in backs_new], np.int64)
        fsrc, fdst = np.concatenate((fwd[:, 0], bsrc)), np.concatenate((fwd[:, 1], bdst))
        ip_f, ix_f = _csr(N, fsrc, fdst)
        ip_r, ix_r = _csr(N, fdst, fsrc)
        deadline = np.full(E, E, np.int64)                     # edge i must come before this position
        for (p, b, a, _k) in (backs_new if insulate else []):
            desc_a = reach_mask(ip_f, ix_f, [a], N)
            anc_b = reach_mask(ip_r, ix_r, [b], N)
            off = desc_a[fwd[:, 0]] & anc_b[fwd[:, 1]]
            deadline[off] = np.minimum(deadline[off], p)
        late = np.flatnonzero(np.arange(E) >= deadline)
        if verbose:
            print(f"  [{name}] moving {late.size} forward edges ahead of the back edges", flush=True)
        # one sort: forward edge i keeps key i unless moved (random key before its deadline);
        # back edge j gets key p_j - 0.25 (just before the edge it was planted in front of)
        key = np.arange(E, dtype=np.float64)
        key[late] = rng.random(late.size) * deadline[late] - 0.5
        bkey = np.array([p - 0.25 for (p, _, _, _) in backs_new])
        allkey = np.concatenate((key, bkey))
        alle = np.concatenate((fwd, np.stack((bsrc, bdst), axis=1)))
        order = np.argsort(allkey, kind="stable")
        new_edges = alle[order]
        pos = np.empty(order.size, np.int64)
        pos[order] = np.arange(order.size)
        back_pos_new = pos[E:]
        fwd = np.delete(new_edges, back_pos_new, axis=0)        # forward edges in their final order
    else:
        new_edges, back_pos_new = fwd, np.zeros(0, np.int64)

    # ---- repeats: Zipf over the forward edges, with back edges at random positions
    rep = fwd[_zipf_indices(rng, E, n_repeats, zipf_s)] if n_repeats else np.zeros((0, 2), np.int64)
    backs_rep: list[tuple[int, int, int]] = []
    if n_back_rep:
        have = set((b, a) for (_, b, a, _) in backs_new)
        ip_f, ix_f = _csr(N, fwd[:, 0], fwd[:, 1])
        while len(backs_rep) < n_back_rep:
            k = int(rng.integers(2, 7))
            r = pick_path(ip_f, ix_f, k)
            if r is None or (r[1], r[0]) in have:
                continue
            a, b = r
            have.add((b, a))
            backs_rep.append((b, a, k))
        rpos = np.sort(rng.choice(max(rep.shape[0], 1), n_back_rep, replace=rep.shape[0] < n_back_rep))
        rep = np.insert(rep, rpos, np.array([[b, a] for (b, a, _) in backs_rep], np.int64), axis=0)
        back_pos_rep = rpos + np.arange(n_back_rep)
    else:
        back_pos_rep = np.zeros(0, np.int64)

    perm = rng.permutation(N).astype(np.int64)                 # rank -> class id
    ph_new = Phase("new", perm[new_edges], E + len(backs_new), back_pos_new)
    ph_rep = Phase("repeats", perm[rep], len(backs_rep), back_pos_rep)
    back = np.array([[b, a] for (_, b, a, _) in backs_new] + [[b, a] for (b, a, _) in backs_rep],
                    np.int64).reshape(-1, 2)
    ks = [k for (*_, k) in backs_new] + [k for (*_, k) in backs_rep]
    wl = Workload(name, N, [ph_new, ph_rep], perm[back] if back.size else back, ks,
                  meta=dict(layers=L, distinct=E, repeats=n_repeats, seed=seed, zipf=zipf_s, insulate=insulate,
                            moved_for_insulation=len(late) if backs_new else 0,
                            gen_s=round(time.perf_counter() - t0, 2)))
    if verbose:
        print(f"  [{name}] generated in {time.perf_counter() - t0:.1f}s", flush=True)
    return wl


# --------------------------------------------------------------------------------------------------
# W3


def chain(name: str = "W3a", n: int = 20000, seed: int = 3) -> Workload:
    """n-node chain c0 -> c1 -> ... -> c(n-1), inserted tail first; the id of c_i is n-1-i, so ids
    (and dictionary order) run against the chain."""
    i = np.arange(n - 2, -1, -1, dtype=np.int64)               # tail first: (c(n-2), c(n-1)) first
    ids = n - 1 - np.arange(n, dtype=np.int64)
    edges = np.stack((ids[i], ids[i + 1]), axis=1)
    return Workload(name, n, [Phase("new", edges, edges.shape[0], np.zeros(0, np.int64))],
                    meta=dict(chain=n, seed=seed))


def dense_layers(name: str = "W3b", n_layers: int = 40, width: int = 25, seed: int = 4) -> Workload:
    """Complete bipartite edges between neighbouring layers, inserted bottom-up (the last pair of
    layers first, random order within a pair); ids permuted."""
    rng = np.random.default_rng(seed)
    N = n_layers * width
    blocks = []
    for l in range(n_layers - 2, -1, -1):
        u = l * width + np.repeat(np.arange(width), width)
        v = (l + 1) * width + np.tile(np.arange(width), width)
        e = np.stack((u, v), axis=1).astype(np.int64)
        blocks.append(e[rng.permutation(e.shape[0])])
    edges = np.concatenate(blocks)
    perm = rng.permutation(N).astype(np.int64)
    return Workload(name, N, [Phase("new", perm[edges], edges.shape[0], np.zeros(0, np.int64))],
                    meta=dict(layers=n_layers, width=width, seed=seed))


def messy(name: str = "W5", n_classes: int = 5000, n_edges: int = 30_000, against: float = 0.01,
          seed: int = 5) -> Workload:
    """W5, a messy application: a random order of `n_classes`, `n_edges` distinct dependencies of
    which a fraction `against` go against it (from a later class to an earlier one), all arriving
    in random order. Which of the against-order edges close a cycle, and when, is left to the
    stream: nothing is moved out of any cycle's way."""
    rng = np.random.default_rng(seed)
    N = n_classes
    n_back = int(round(n_edges * against))
    n_fwd = n_edges - n_back

    def s_fwd(rng, m):
        a = rng.integers(0, N, m)
        b = rng.integers(0, N - 1, m)
        b = b + (b >= a)
        return np.minimum(a, b), np.maximum(a, b)

    fwd = _unique_pairs(rng, s_fwd, n_fwd, N)
    back = _unique_pairs(rng, lambda r, m: s_fwd(r, m)[::-1], n_back, N,
                         exclude=fwd[:, 1] * N + fwd[:, 0])
    edges = np.concatenate([fwd, back])
    order = rng.permutation(edges.shape[0])
    edges = edges[order]
    back_pos = np.flatnonzero(order >= n_fwd)
    perm = rng.permutation(N).astype(np.int64)
    return Workload(name, N, [Phase("new", perm[edges], edges.shape[0], back_pos)], perm[edges[back_pos]],
                    meta=dict(against=n_back, seed=seed))


# --------------------------------------------------------------------------------------------------
# sizes


FULL = {
    "W1": dict(n_classes=5000, n_layers=12, n_distinct=30_000, n_repeats=10_000_000),
    "W2": dict(n_classes=200_000, n_layers=16, n_distinct=2_000_000, n_repeats=2_000_000),
    "W1c": dict(n_classes=5000, n_layers=12, n_distinct=30_000, n_repeats=10_000_000),
    "W2c": dict(n_classes=200_000, n_layers=16, n_distinct=2_000_000, n_repeats=2_000_000),
    "W5": dict(n_classes=5000, n_edges=30_000),
    "W3a": dict(n=20_000),
    "W3b": dict(n_layers=40, width=25),
}
QUICK = {
    "W1": dict(n_classes=1000, n_layers=12, n_distinct=6_000, n_repeats=400_000),
    "W2": dict(n_classes=10_000, n_layers=16, n_distinct=100_000, n_repeats=100_000),
    "W1c": dict(n_classes=1000, n_layers=12, n_distinct=6_000, n_repeats=400_000),
    "W2c": dict(n_classes=10_000, n_layers=16, n_distinct=100_000, n_repeats=100_000),
    "W5": dict(n_classes=1000, n_edges=6_000),
    "W3a": dict(n=3_000),
    "W3b": dict(n_layers=12, width=25),
}
SEEDS = {"W1": 1, "W2": 2, "W3a": 3, "W3b": 4, "W1c": 1, "W2c": 2, "W5": 5}


def make(name: str, quick: bool = False, verbose: bool = False, **over) -> Workload:
    sizes = dict((QUICK if quick else FULL)[name], **over)
    if name in ("W1", "W2"):
        return layered(name, seed=SEEDS[name], verbose=verbose, **sizes)
    if name in ("W1c", "W2c"):
        return layered(name, seed=SEEDS[name], insulate=False, verbose=verbose, **sizes)
    if name == "W5":
        return messy(name, seed=SEEDS[name], **sizes)
    if name == "W3a":
        return chain(name, seed=SEEDS[name], **sizes)
    if name == "W3b":
        return dense_layers(name, seed=SEEDS[name], **sizes)
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# events


def class_names(n: int) -> pa.Array:
    """The dictionary of class names: id i is "L<i>"."""
    return pa.array(np.char.add("L", np.arange(n).astype(str)).astype(object), pa.utf8())


def iter_event_batches(edges: np.ndarray, n_classes: int | None = None, rows_per_batch: int = ROWS_PER_BATCH,
                       n_tids: int = 4, ts0: int = 1_700_000_000_000_000_000, ts_step: int = 100,
                       dictionary: str = "batch", names: pa.Array | None = None, with_mode: bool = False,
                       interleave: bool = False):
    """Yield Arrow RecordBatches of events for edges (m, 2), 4 rows per edge: acquire u, acquire v,
    release v, release u. `tid` cycles over `n_tids` threads, one thread per edge (its stack is
    empty again after its 4 rows). With `interleave`, each run of `n_tids` edges is taken by
    `n_tids` threads at once: every thread's first acquisition, then every second one, then the
    releases, so that consecutive rows come from different threads (64 threads interleaved). `lock` is dictionary<int32, utf8>: with dictionary="batch" each
    batch carries the names it uses (sorted by id, as an agent would send them); with "global" every
    batch shares one dictionary of all classes. ts_ns increases by `ts_step` per row. Vectorized:
    one numpy pass per batch, no per-row Python."""
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    m = edges.shape[0]
    if n_classes is None:
        n_classes = int(edges.max()) + 1 if m else 0
    if names is None:
        names = class_names(n_classes)
    per = max(1, rows_per_batch // 4)                          # edges per batch (whole edges)
    op_pat = np.array([0, 0, 1, 1], np.uint8)
    for lo in range(0, m, per):
        hi = min(m, lo + per)
        e = edges[lo:hi]
        k = hi - lo
        ids = np.stack((e[:, 0], e[:, 1], e[:, 1], e[:, 0]), axis=1).ravel()
        op = np.tile(op_pat, k)
        tid = np.repeat(1000 + (np.arange(lo, hi, dtype=np.int64) % max(1, n_tids)), 4)
        if interleave and n_tids > 1:
            # within each group of n_tids edges (one per thread), order rows by step, then thread
            g = np.arange(4 * k) // (4 * n_tids)
            step = np.arange(4 * k) % 4
            order = np.lexsort((np.arange(4 * k), step, g))
            ids, op, tid = ids[order], op[order], tid[order]
        ts = ts0 + (4 * lo + np.arange(4 * k, dtype=np.int64)) * ts_step
        if dictionary == "batch":
            uniq, inv = np.unique(ids, return_inverse=True)
            lock_arr = pa.DictionaryArray.from_arrays(pa.array(inv.astype(np.int32)), names.take(pa.array(uniq)))
        else:
            lock_arr = pa.DictionaryArray.from_arrays(pa.array(ids.astype(np.int32)), names)
        cols = [pa.array(ts), pa.array(tid), pa.array(op), lock_arr]
        fields = ["ts_ns", "tid", "op", "lock"]
        if with_mode:
            cols.append(pa.array(np.zeros(4 * k, np.uint8)))
            fields.append("mode")
        yield pa.RecordBatch.from_arrays(cols, names=fields)


def to_event_batches(edges: np.ndarray, n_classes: int | None = None, rows_per_batch: int = ROWS_PER_BATCH,
                     **kw) -> list[pa.RecordBatch]:
    """`iter_event_batches` as a list (pre-built before timing)."""
    return list(iter_event_batches(edges, n_classes, rows_per_batch, **kw))


def events_count(batches: list[pa.RecordBatch]) -> int:
    return sum(b.num_rows for b in batches)


# --------------------------------------------------------------------------------------------------
# self-check


def verify(wl: Workload, full: bool = False) -> dict:
    """Check what the generator promises: distinct edges, back edges close paths of the stated length
    at the moment they come, and (with `full`, slow) no other new edge closes a cycle."""
    N = wl.n_classes
    new = wl.phase("new")
    keys = new.edges[:, 0] * N + new.edges[:, 1]
    assert np.unique(keys).size == new.edges.shape[0], "new edges are not distinct"
    res = {"distinct": int(new.edges.shape[0]), "back_ok": 0}
    for ph in wl.phases:
        for j, p in enumerate(ph.back_pos):
            b, a = ph.edges[p]
            if ph.name == "new":
                src, dst = ph.edges[:p, 0], ph.edges[:p, 1]
            else:
                allb = np.concatenate([new.edges, ph.edges[:p]])
                src, dst = allb[:, 0], allb[:, 1]
            ip, ix = _csr(N, src, dst)
            d = bfs_dist(ip, ix, int(a), int(b), 6)
            assert 2 <= d <= 6, (ph.name, j, d)
            res["back_ok"] += 1
    if full:
        import rustworkx as rx
        g = rx.PyDiGraph(check_cycle=False, multigraph=False)
        g.add_nodes_from(range(N))
        closing = 0
        for u, v in new.edges.tolist():
            if rx.has_path(g, v, u):
                closing += 1
            g.add_edge(u, v, None)
        res["closing_new"] = closing
    return res


if __name__ == "__main__":
    import sys
    for nm in [a for a in sys.argv[1:] if not a.startswith("-")] or ["W1", "W3a", "W3b"]:
        t = time.perf_counter()
        w = make(nm, quick="--quick" in sys.argv, verbose=True)
        print(nm, w.n_classes, [(p.name, p.edges.shape[0], p.n_new) for p in w.phases], w.back_path_len, w.meta,
              f"{time.perf_counter() - t:.1f}s")
        print(verify(w, full=nm == "W1"))
