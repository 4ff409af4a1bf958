"""A /proc/lockdep dump as lock events (CONTRACT section 2) that make the engine learn the same graph.

The engine learns from events, so a dump becomes synthetic threads, as `dmesg.py` and edge mode
(`edges.py`) build them:

- each irq usage bit a class's usage characters show (`{-.+.}`: IN-HARDIRQ-W, SOFTIRQ-ON-W, ...):
  one acquire and one release of that class with the `irq` mask that sets exactly that bit
  (`edges.USAGE_IRQ`) and mode 0 for a write bit, 1 for a read bit;
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
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from .edges import USAGE_IRQ
from .lockdep_proc import Dump
from .names import Normalizer, split_subclass

ACQUIRE, RELEASE = 0, 1
IRQS_OFF = 4 | 8
SYNTHETIC_TID_BASE = 1 << 60
USAGE_BITS = ("IN-HARDIRQ-W", "IN-HARDIRQ-R", "HARDIRQ-ON-W", "HARDIRQ-ON-R",
              "IN-SOFTIRQ-W", "IN-SOFTIRQ-R", "SOFTIRQ-ON-W", "SOFTIRQ-ON-R")
_STATES = ("HARDIRQ", "SOFTIRQ")      # the first two states of get_usage_chars (reclaim_fs ignored)
_DICT = pa.dictionary(pa.int32(), pa.string())
EVENT_SCHEMA = pa.schema([
    ("ts_ns", pa.int64()), ("tid", pa.int64()), ("op", pa.uint8()), ("lock", _DICT), ("mode", pa.uint8()),
    ("subclass", pa.uint8()), ("irq", pa.uint8()), ("site", _DICT),
])


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


@functools.lru_cache(maxsize=1024)
def read_only(chars: str) -> bool:
    """The characters show read usage and no write usage (in the first two irq states)."""
    head = chars[:4]
    return len(head) == 4 and all(c == "." for c in head[0::2]) and any(c != "." for c in head[1::2])


def conflicts(bits: frozenset[str] | set[str], state: str) -> bool:
    """Usage bits of one class that lockdep calls inconsistent for `state` (reads never conflict)."""
    in_w, in_r = f"IN-{state}-W" in bits, f"IN-{state}-R" in bits
    on_w, on_r = f"{state}-ON-W" in bits, f"{state}-ON-R" in bits
    return (in_w and (on_w or on_r)) or (in_r and on_w)


@dataclass
class Graph:
    """A dump's graph in normalized class names: what the events carry."""

    host: str
    usage: dict[str, frozenset[str]] = field(default_factory=dict)      # class -> usage bits
    read_only: set[str] = field(default_factory=set)
    deps: dict[tuple[str, str], str] = field(default_factory=dict)       # (held, taken) -> site of the taken
    held_site: dict[str, str] = field(default_factory=dict)             # class -> its class line
    from_chains: int = 0                                                # dependencies only lockdep_chains showed


def dump_graph(d: Dump, norm: Normalizer) -> Graph:
    """The dump's classes, usage bits and dependencies (direct, then those the chains add), as
    normalized class names (`name` or `name/N`)."""
    g = Graph(host=d.host)
    memo: dict[str, str] = {}

    def printed(n: str) -> str:
        p = memo.get(n)
        if p is None:
            p = memo[n] = norm.printed(n)
        return p

    names = [printed(c.name) for c in d.classes]
    label = d.path
    for c, n in zip(d.classes, names):
        if not n:
            continue
        g.held_site.setdefault(n, f"{label}:{c.line}")
        if c.usage:
            bits = usage_bits(c.usage)
            g.usage[n] = g.usage.get(n, frozenset()) | bits
            if read_only(c.usage):
                g.read_only.add(n)
    deps = g.deps
    get = memo.get
    for idx, taken, line in d.deps:
        h, t = names[idx], get(taken) or printed(taken)
        if h and t and h != t and (h, t) not in deps:
            deps[(h, t)] = f"{label}:{line}"
    if d.chains:
        have = {(c.irq_context, tuple(printed(n) for n in c.names)) for c in d.chains}
        for c in d.chains:
            seq = tuple(printed(n) for n in c.names)
            k = len(seq) - 1
            for i in range(k - 1, -1, -1):
                h, t = seq[i], seq[k]
                if h and t and h != t and (h, t) not in deps:
                    deps[(h, t)] = f"{d.chains_path}:{c.line}"
                    g.from_chains += 1
                    g.held_site.setdefault(h, f"{d.chains_path}:{c.line}")
                if (c.irq_context, seq[:i + 1]) in have:
                    break
    return g


def _split(names: list[str]) -> tuple[list[str], np.ndarray]:
    base, subs = [], np.zeros(len(names), np.uint8)
    for i, n in enumerate(names):
        b, s = split_subclass(n)
        base.append(b)
        subs[i] = s
    return base, subs


def graph_events(g: Graph, ts_ns: int, *, deps: list[tuple[str, str]] | None = None,
                 usage: dict[str, frozenset[str]] | None = None) -> pa.RecordBatch:
    """The synthetic events of `g` (every usage bit, then every dependency), or of the given
    subsets `usage` and `deps` (what is new since an earlier dump)."""
    usage = g.usage if usage is None else usage
    dep_list = list(g.deps) if deps is None else deps
    ids: dict[str, int] = {}
    for n in usage:
        ids.setdefault(n, len(ids))
    for h, t in dep_list:
        ids.setdefault(h, len(ids))
        ids.setdefault(t, len(ids))
    held_site = g.held_site
    sites: dict[str, int] = {}
    for n in usage:
        sites.setdefault(held_site.get(n, ""), len(sites))

    # usage rows: acquire + release per bit
    u_lock, u_mode, u_irq, u_site = [], [], [], []
    for n, bits in usage.items():
        c, site = ids[n], sites[held_site.get(n, "")]
        for bit in sorted(bits):
            u_lock.append(c)
            u_mode.append(1 if bit.endswith("-R") else 0)
            u_irq.append(USAGE_IRQ[bit])
            u_site.append(site)
    nu = len(u_lock)
    # dependency rows, one synthetic thread per held class H: acquire H, then per dependency
    # H -> T acquire T and release T, then release H
    dep_list = sorted(dep_list, key=lambda d: ids[d[0]])      # stable: each H's dependencies together
    nd = len(dep_list)
    h_id = np.array([ids[h] for h, _ in dep_list], np.int32)
    t_id = np.array([ids[t] for _, t in dep_list], np.int32)
    ro = g.read_only
    t_mode = np.array([t in ro for _, t in dep_list], np.uint8)
    dep_site = g.deps
    t_site = np.array([sites.setdefault(dep_site.get(d, ""), len(sites)) for d in dep_list], np.int32)
    if nd:
        first = np.flatnonzero(np.r_[True, h_id[1:] != h_id[:-1]])       # each group's first dependency
        ng = len(first)
        size = np.diff(np.r_[first, nd])
        g_id = h_id[first]
        held_names = [dep_list[i][0] for i in first.tolist()]
        g_mode = np.array([h in ro for h in held_names], np.uint8)
        for h in held_names:
            sites.setdefault(held_site.get(h, ""), len(sites))
        g_site = np.array([sites[held_site.get(h, "")] for h in held_names], np.int32)
        start = 2 * nu + np.r_[0, np.cumsum(2 + 2 * size)[:-1]]           # row of each group's acquire H
        j = np.arange(nd) - np.repeat(first, size)                          # index within the group
        acq_t = np.repeat(start, size) + 1 + 2 * j
    else:
        ng = 0

    n = 2 * nu + 2 * ng + 2 * nd
    lock = np.empty(n, np.int32)
    mode = np.zeros(n, np.uint8)
    irq = np.full(n, IRQS_OFF, np.uint8)
    op = np.empty(n, np.uint8)
    tid = np.empty(n, np.int64)
    site = np.full(n, -1, np.int32)
    if nu:
        ua = np.asarray(u_lock, np.int32)
        lock[0:2 * nu:2] = ua
        lock[1:2 * nu:2] = ua
        mode[0:2 * nu:2] = np.asarray(u_mode, np.uint8)
        irq[0:2 * nu:2] = irq[1:2 * nu:2] = np.asarray(u_irq, np.uint8)
        op[0:2 * nu:2], op[1:2 * nu:2] = ACQUIRE, RELEASE
        tid[0:2 * nu] = np.repeat(SYNTHETIC_TID_BASE + np.arange(nu, dtype=np.int64), 2)
        site[0:2 * nu:2] = np.asarray(u_site, np.int32)
    if nd:
        end = start + 1 + 2 * size                                          # row of each group's release H
        lock[start], lock[end] = g_id, g_id
        op[start], op[end] = ACQUIRE, RELEASE
        mode[start], site[start] = g_mode, g_site
        lock[acq_t], lock[acq_t + 1] = t_id, t_id
        op[acq_t], op[acq_t + 1] = ACQUIRE, RELEASE
        mode[acq_t], site[acq_t] = t_mode, t_site
        tid[2 * nu:] = np.repeat(SYNTHETIC_TID_BASE + nu + np.arange(ng, dtype=np.int64), 2 + 2 * size)
    names = list(ids)
    base, subs = _split(names)
    subclass = subs[lock] if n else np.zeros(0, np.uint8)
    site_names = list(sites)
    site_arr = pa.DictionaryArray.from_arrays(pa.array(site, pa.int32(), mask=site < 0),
                                              pa.array(site_names, pa.string()))
    lock_arr = pa.DictionaryArray.from_arrays(pa.array(lock, pa.int32()), pa.array(base, pa.string()))
    return pa.RecordBatch.from_arrays(
        [pa.array(np.full(n, ts_ns, np.int64)), pa.array(tid), pa.array(op), lock_arr, pa.array(mode),
         pa.array(subclass, pa.uint8()), pa.array(irq), site_arr], schema=EVENT_SCHEMA)
