"""A /proc/lockdep dump as lock events (docs/contract.md section 2) that make the engine learn the same graph.

The engine learns from events, so a dump becomes synthetic threads, as `dmesg.py` and edge mode
(`edges.py`) build them:

- each irq usage bit a class's usage characters show (`{-.+.}`: IN-HARDIRQ-W, SOFTIRQ-ON-W, ...):
  one acquire and one release of that class with the `irq` mask that sets exactly that bit
  (`events.USAGE_IRQ`) and mode 0 for a write bit, 1 for a read bit;
- each class H with dependencies `H -> T` (` -> [key] T` lines under H, and those lockdep_chains
  shows and /proc/lockdep hides, see below): one synthetic thread acquires H, then acquires and
  releases each T in turn, then releases H, with irqs off (so it marks no usage bit). `site` is
  where the dump shows it (`file:line` of H's class line, and of each dependency line); `ts_ns`
  the dump file's time.

Kinds: /proc/lockdep prints no read/write kind per dependency, and no file says whether a reader
was recursive. What the usage characters tell is kept: a class whose characters show read usage
and no write usage is taken shared (mode 1, a non-recursive read: `SN` out of it, `xN` into it);
every other class is taken as exclusive. No dependency is ever recursive-read (`xR`), so every
cycle counts as strong: a finding says "kinds unknown: reported as if exclusive".

lockdep_chains: /proc/lockdep lists only dependencies of distance 1. When the lock held on top was
a trylock, lockdep also adds a dependency from the lock under it (distance 2, and so on down to the
first lock that was not a trylock), which /proc/lockdep does not print. A chain `L0 .. Lk` is the
held stack when Lk was acquired (never by a trylock: trylocks make no chain); Li was a trylock
there when the chain `L0 .. Li` (same irq context) does not exist. So from each chain the reader
adds `Li -> Lk` for i = k-1 down to the first Li whose own chain exists.

Class names go through a `names.Normalizer` (by default `#V` name versions, which depend on the
order of registration in each boot, are dropped, as `lockfleet dmesg` does); `name/N` is subclass N.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...events import ACQUIRE, IRQS_OFF, RELEASE, USAGE_BITS, USAGE_IRQ, schema, split_class
from .class_names import Normalizer
from .procdump import Dump

SYNTHETIC_TID_BASE = 1 << 60
_STATES = ("HARDIRQ", "SOFTIRQ")      # the first two states of get_usage_chars (reclaim_fs ignored)
EVENT_SCHEMA = schema(("ts_ns", "tid", "op", "lock", "mode", "subclass", "irq", "site"), dictionary=True)


@functools.lru_cache(maxsize=1024)
def usage_bits(chars: str) -> frozenset[str]:
    """get_usage_chars() read back: the usage bits a class's characters show."""
    out = set()
    for x, state in enumerate(_STATES):
        for rd, rw in enumerate("WR"):
            i = 2 * x + rd
            c = chars[i] if i < len(chars) else "."
            if c in "-?":
                out.add(f"IN-{state}-{rw}")
            if c in "+?":
                out.add(f"{state}-ON-{rw}")
    return frozenset(out)


def conflicts(bits: frozenset[str] | set[str], state: str) -> bool:
    """Usage bits of one class that lockdep calls inconsistent for `state` (reads never conflict)."""
    in_w, in_r = f"IN-{state}-W" in bits, f"IN-{state}-R" in bits
    on_w, on_r = f"{state}-ON-W" in bits, f"{state}-ON-R" in bits
    return (in_w and (on_w or on_r)) or (in_r and on_w)


W_BITS, R_BITS = 0x55, 0xAA            # bit i of a usage mask is USAGE_BITS[i]


@functools.lru_cache(maxsize=1024)
def usage_mask(chars: str) -> int:
    return sum(1 << i for i, bit in enumerate(USAGE_BITS) if bit in usage_bits(chars))


def mask_bits(mask: int) -> frozenset[str]:
    return frozenset(bit for i, bit in enumerate(USAGE_BITS) if mask >> i & 1)


class ClassTable:
    """Normalized class names <-> dense ids, shared by the dumps of one merge."""

    def __init__(self, norm: Normalizer) -> None:
        self.norm = norm
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self._printed: dict[str, int] = {}      # name as printed -> id (-1: the rules dropped it)

    def id_of_printed(self, printed: str) -> int:
        i = self._printed.get(printed)
        if i is None:
            name = self.norm.printed(printed)
            i = self._printed[printed] = self.intern(name) if name else -1
        return i

    def intern(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def ids_of_printed(self, printed: list[str]) -> np.ndarray:
        get = self.id_of_printed
        return np.fromiter((get(x) for x in printed), np.int64, len(printed))


@dataclass
class Graph:
    """A dump's graph over a ClassTable's ids: what its events carry.

    Dependencies `h[i] -> t[i]` in the order the dump shows them (duplicates after the name rules
    removed), each shown at line `t_line[i]` of file `sources[t_src[i]]` (the dump, or its
    lockdep_chains for the dependencies only the chains show). Classes with usage: `u_ids` and
    their usage masks `u_mask` (bit i: USAGE_BITS[i]); each class's own line in `held_ids` /
    `held_lines`."""

    host: str
    table: ClassTable
    h: np.ndarray
    t: np.ndarray
    t_line: np.ndarray
    t_src: np.ndarray
    sources: list[str]
    u_ids: np.ndarray
    u_mask: np.ndarray
    held_ids: np.ndarray          # sorted class ids with a line of their own, and that line:
    held_lines: np.ndarray        # > 0 in the dump, < 0 (negated) in its lockdep_chains
    from_chains: int = 0

    def __len__(self) -> int:
        return len(self.h)

    def bits_of(self, name: str) -> frozenset[str]:
        """The usage bits this dump shows for class `name`."""
        i = self.table.ids.get(name, -1)
        k = np.flatnonzero(self.u_ids == i)
        return mask_bits(int(np.bitwise_or.reduce(self.u_mask[k]))) if len(k) else frozenset()

    @property
    def usage(self) -> dict[str, frozenset[str]]:
        out: dict[int, int] = {}
        for i, m in zip(self.u_ids.tolist(), self.u_mask.tolist()):
            out[i] = out.get(i, 0) | m
        return {self.table.names[i]: mask_bits(m) for i, m in out.items() if m}

    @property
    def deps(self) -> dict[tuple[str, str], str]:
        """(held, taken) -> `file:line` where the dump shows it."""
        names = self.table.names
        return {(names[h], names[t]): f"{self.sources[s]}:{ln}"
                for h, t, s, ln in zip(self.h.tolist(), self.t.tolist(), self.t_src.tolist(), self.t_line.tolist())}

    def read_only_ids(self) -> set[int]:
        ro: dict[int, int] = {}
        for i, m in zip(self.u_ids.tolist(), self.u_mask.tolist()):
            ro[i] = ro.get(i, 0) | m
        return {i for i, m in ro.items() if m & R_BITS and not m & W_BITS}


def dump_graph(d: Dump, table: ClassTable | Normalizer) -> Graph:
    """The dump's classes, usage and dependencies (direct, then those the chains add) over the
    table's ids (a Normalizer: a table of this dump alone)."""
    if isinstance(table, Normalizer):
        table = ClassTable(table)
    cls = table.ids_of_printed(d.names)
    usage = np.fromiter((usage_mask(u) if u else 0 for u in d.usages), np.uint8, len(d.usages))
    has = (usage != 0) & (cls >= 0)
    u_ids, u_mask = cls[has], usage[has]
    # the taken names through the table, once per distinct name
    enc = d.dep_taken.dictionary_encode() if len(d.dep_taken) else None
    if enc is not None:
        t_of = table.ids_of_printed(enc.dictionary.to_pylist())
        taken = t_of[np.asarray(enc.indices)]
        held = cls[d.dep_owner]
    else:
        taken = held = np.zeros(0, np.int64)
    ok = (held >= 0) & (taken >= 0) & (held != taken)
    held, taken, lines = held[ok], taken[ok], d.dep_lines[ok]
    n_ids = max(len(table.names), 1)          # every id of this dump is below it
    key = held * n_ids + taken
    _, first = np.unique(key, return_index=True)
    first.sort()
    h, t, t_line = held[first], taken[first], lines[first]
    t_src = np.zeros(len(h), np.int8)
    sources = [d.path]
    named = cls >= 0
    held_ids, at = np.unique(cls[named], return_index=True)       # the first class line of each class
    g = Graph(d.host, table, h, t, t_line, t_src, sources, u_ids, u_mask, held_ids, d.class_lines[named][at])
    if d.chains:
        _chain_deps(g, d, table)
    return g


def _chain_deps(g: Graph, d: Dump, table: ClassTable) -> None:
    """Add the dependencies past a trylock that only lockdep_chains shows (module doc)."""
    chains = [(c.irq_context, tuple(table.id_of_printed(n) for n in c.names), c.line) for c in d.chains]
    have = {(ctx, seq) for ctx, seq, _ in chains}
    hs, ts, lines = [], [], []
    seen = set(zip(g.h.tolist(), g.t.tolist()))
    for ctx, seq, line in chains:
        k = len(seq) - 1
        for i in range(k - 1, -1, -1):
            h, t = seq[i], seq[k]
            if h >= 0 and t >= 0 and h != t and (h, t) not in seen:
                seen.add((h, t))
                hs.append(h)
                ts.append(t)
                lines.append(line)
            if (ctx, seq[:i + 1]) in have:
                break
    if hs:
        # a held class the dump has no line for: its chain's line (negated: of the chains file)
        extra = {h: -ln for h, ln in zip(hs, lines)}
        for i in g.held_ids.tolist():
            extra.pop(i, None)
        if extra:
            ids = np.concatenate([g.held_ids, np.fromiter(extra, np.int64, len(extra))])
            lns = np.concatenate([g.held_lines, np.fromiter(extra.values(), np.int64, len(extra))])
            order = np.argsort(ids)
            g.held_ids, g.held_lines = ids[order], lns[order]
        g.sources.append(d.chains_path)
        g.h = np.concatenate([g.h, np.asarray(hs, np.int64)])
        g.t = np.concatenate([g.t, np.asarray(ts, np.int64)])
        g.t_line = np.concatenate([g.t_line, np.asarray(lines, np.int64)])
        g.t_src = np.concatenate([g.t_src, np.ones(len(hs), np.int8)])
        g.from_chains = len(hs)


def graph_events(g: Graph, ts_ns: int, *, deps: np.ndarray | None = None,
                 usage: tuple[np.ndarray, np.ndarray] | None = None) -> pa.RecordBatch:
    """The synthetic events of `g`: its usage bits, then its dependencies; or those of `usage`
    (class ids, masks) and of the dependencies `deps` (indices into g's), what is new."""
    u_ids, u_mask = (g.u_ids, g.u_mask) if usage is None else usage
    sel = np.arange(len(g.h)) if deps is None else np.asarray(deps, np.int64)
    h, t = g.h[sel], g.t[sel]
    # usage rows: acquire + release per bit
    bit_rows = [(u_ids[(u_mask >> b) & 1 == 1], b) for b in range(8)]
    u_lock = np.concatenate([ids for ids, _ in bit_rows]) if bit_rows else np.zeros(0, np.int64)
    u_bit = np.concatenate([np.full(len(ids), b, np.int64) for ids, b in bit_rows])
    nu = len(u_lock)
    # dependency rows, one synthetic thread per held class H: acquire H, then per dependency
    # H -> T acquire T and release T, then release H
    order = np.argsort(h, kind="stable")
    h, t, sel = h[order], t[order], sel[order]
    nd = len(h)
    used = np.unique(np.concatenate([u_lock, h, t]))
    names = g.table.names
    base, subs = _split([names[i] for i in used.tolist()])
    ro = g.read_only_ids()
    # sites: `file:line` strings built in Arrow; row i's site is sites[site_idx[i]]
    pieces: list[pa.Array] = []
    n_sites = 0

    def held_sites(ids: np.ndarray) -> np.ndarray:
        """Site indices of the class lines of `ids` (-1 where the dump has none)."""
        nonlocal n_sites
        if not len(ids) or not len(g.held_ids):
            return np.full(len(ids), -1, np.int64)
        k = np.minimum(np.searchsorted(g.held_ids, ids), len(g.held_ids) - 1)
        found = g.held_ids[k] == ids
        ln = g.held_lines[k[found]]
        out = np.full(len(ids), -1, np.int64)
        out[found] = n_sites + np.arange(int(found.sum()))
        pieces.append(_sites(np.where(ln > 0, 0, len(g.sources) - 1), np.abs(ln), g.sources))
        n_sites += int(found.sum())
        return out

    if nd:
        first = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
        ng = len(first)
        size = np.diff(np.r_[first, nd])
        g_ids = h[first]
        start = 2 * nu + np.r_[0, np.cumsum(2 + 2 * size)[:-1]]
        j = np.arange(nd) - np.repeat(first, size)
        acq_t = np.repeat(start, size) + 1 + 2 * j
    else:
        ng = 0
    n = 2 * nu + 2 * ng + 2 * nd
    lock = np.empty(n, np.int64)
    mode = np.zeros(n, np.uint8)
    irq = np.full(n, IRQS_OFF, np.uint8)
    op = np.empty(n, np.uint8)
    tid = np.empty(n, np.int64)
    site_idx = np.full(n, -1, np.int64)
    if nu:
        lock[0:2 * nu:2] = lock[1:2 * nu:2] = u_lock
        mode[0:2 * nu:2] = (u_bit & 1).astype(np.uint8)          # odd bits are the read ones
        irq_of_bit = np.array([USAGE_IRQ[b] for b in USAGE_BITS], np.uint8)
        irq[0:2 * nu:2] = irq[1:2 * nu:2] = irq_of_bit[u_bit]
        op[0:2 * nu:2], op[1:2 * nu:2] = ACQUIRE, RELEASE
        tid[0:2 * nu] = np.repeat(SYNTHETIC_TID_BASE + np.arange(nu, dtype=np.int64), 2)
        site_idx[0:2 * nu:2] = held_sites(u_lock)
    if nd:
        end = start + 1 + 2 * size
        lock[start] = lock[end] = g_ids
        op[start], op[end] = ACQUIRE, RELEASE
        mode[start] = [1 if i in ro else 0 for i in g_ids.tolist()]
        site_idx[start] = held_sites(g_ids)
        lock[acq_t] = lock[acq_t + 1] = t
        op[acq_t], op[acq_t + 1] = ACQUIRE, RELEASE
        if ro:
            mode[acq_t] = [1 if i in ro else 0 for i in t.tolist()]
        pieces.append(_sites(g.t_src[sel].astype(np.int64), g.t_line[sel], g.sources))
        site_idx[acq_t] = n_sites + np.arange(nd)
        n_sites += nd
        tid[2 * nu:] = np.repeat(SYNTHETIC_TID_BASE + nu + np.arange(ng, dtype=np.int64), 2 + 2 * size)
    lock_local = np.searchsorted(used, lock).astype(np.int32) if n else np.zeros(0, np.int32)
    subclass = subs[lock_local] if n else np.zeros(0, np.uint8)
    site_arr = pa.DictionaryArray.from_arrays(pa.array(site_idx.astype(np.int32), pa.int32(), mask=site_idx < 0),
                                              pa.concat_arrays(pieces) if pieces else pa.array([], pa.string()))
    lock_arr = pa.DictionaryArray.from_arrays(pa.array(lock_local, pa.int32()), pa.array(base, pa.string()))
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(n, ts_ns, np.int64)), pa.array(tid), pa.array(op), lock_arr, pa.array(mode),
         pa.array(subclass, pa.uint8()), pa.array(irq), site_arr], schema=EVENT_SCHEMA)


def _sites(src: np.ndarray, lines: np.ndarray, sources: list[str]) -> pa.Array:
    """`<sources[src[i]]>:<lines[i]>` for each i, as an Arrow string array."""
    labels = pa.array([x + ":" for x in sources], pa.string()).take(pa.array(src, pa.int64()))
    return pc.binary_join_element_wise(labels, pc.cast(pa.array(lines, pa.int64()), pa.string()), "")


def _split(names: list[str]) -> tuple[list[str], np.ndarray]:
    base, subs = [], np.zeros(len(names), np.uint8)
    for i, n in enumerate(names):
        b, s = split_class(n)
        base.append(b)
        subs[i] = s
    return base, subs
