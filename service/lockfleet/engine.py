"""`Engine`: the Python face of the core. It validates batches (events.py), interns names once per
batch, runs the Cython core over the columns, and turns the core's findings (ids of classes,
edges and occurrences) into deduplicated `Alert`s with their evidence.

The engine knows nothing of gRPC or files. One Engine is not thread-safe: callers serialise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from ._core import Core
from ._names import Names
from .events import USAGE_BITS, Events, class_name, dictionary_key, normalize, split_class
from .findings.model import Alert, Link, Occurrence, Usage, Witness

log = logging.getLogger(__name__)

_F_KIND = {1: "circular", 2: "recursive", 3: "bad_unlock", 4: "irq_inversion", 5: "inconsistent_state"}
_F_WITNESS = 6
_EDGE_KINDS = ("EN", "ER", "SN", "SR")
# the kinds of a dependency's kind bits, for every value of the bits
_KINDS_OF = tuple(tuple(k for i, k in enumerate(_EDGE_KINDS) if (bits >> i) & 1) for bits in range(16))
_IRQ = ("HARDIRQ", "SOFTIRQ")
DEFAULT_HOST = "localhost"
_SNAPSHOT_MAGIC = b"LFENG003"


class _Interner:
    """Names <-> dense ids for one kind of name. Interning runs in C over the Arrow dictionary's
    buffers (`_names.Names`); a dictionary seen before (same buffers) is not even re-read."""

    __slots__ = ("_cache", "table")

    def __init__(self) -> None:
        self.table = Names()
        self._cache: dict[tuple, tuple[pa.Array, np.ndarray]] = {}

    def get(self, s: str) -> int:
        return self.table.get(s)

    def find(self, s: str) -> int:
        return self.table.find(s)

    def name(self, i: int) -> str:
        return self.table.name(i) if i >= 0 else ""

    def names(self) -> list[str]:
        return self.table.names()

    def __len__(self) -> int:
        return len(self.table)

    def map(self, dictionary: pa.Array) -> np.ndarray:
        key = dictionary_key(dictionary)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        ids = self.table.map_array(dictionary)
        if len(self._cache) >= 16:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (dictionary, ids)
        return ids


@dataclass
class _Record:
    """What the engine keeps of one finding; Alerts are built from it with current evidence."""

    id: str
    kind: str
    seq: int
    edges: tuple[int, ...] = ()      # circular: the cycle from #0; irq_inversion: the path
    cls: int = -1                    # recursive, bad_unlock, inconsistent_state, irq_inversion: the class
    irq: int = -1                    # inconsistent_state, irq_inversion: 0 hardirq, 1 softirq
    bits: tuple[int, ...] = ()       # usage bits shown (inconsistent_state, irq_inversion)
    safe_cls: int = -1               # irq_inversion: the safe end of the path
    occ: int = -1                    # the trigger occurrence
    held: tuple[int, ...] = ()       # held locks at the trigger
    hosts: set[str] = field(default_factory=set)
    count: int = 1
    inversion: int = -1              # circular: the core's index of its inversion
    witnesses: list[tuple[int, ...]] = field(default_factory=list)   # circular: kept cycles after the first


# The irq rule for read locks (docs/semantics.md): lockdep's since 5.10, or the one before it.
IRQ_RULES = ("5.10", "pre-5.10")
IRQ_RULE_DEFAULT = "5.10"


class Engine:
    """One fleet's lock-dependency state, in memory (writes no files)."""

    def __init__(self, *, max_lock_depth: int = 48, irq_rule: str = IRQ_RULE_DEFAULT,
                 max_chains: int | None = None, exact_hosts: int | None = None) -> None:
        """`max_chains`: the bound of the core's chain cache (lockdep's MAX_LOCKDEP_CHAINS; the
        core's default when None); a full cache is emptied and its chains validated again.
        `exact_hosts`: how many hosts of a dependency are named (default 8); the rest are counted
        by a sketch (docs/semantics.md, "Hosts of a dependency")."""
        if irq_rule not in IRQ_RULES:
            raise ValueError(f"irq_rule must be one of {', '.join(IRQ_RULES)}, not {irq_rule!r}")
        self.max_lock_depth = max_lock_depth
        self.irq_rule = irq_rule
        core_kw = {k: v for k, v in (("max_chains", max_chains), ("exact_hosts", exact_hosts)) if v is not None}
        self._core = Core(max_lock_depth, **core_kw)
        self._core.irq_rule_pre510 = irq_rule == "pre-5.10"
        self._locks = _Interner()
        self._sites = _Interner()
        self._tasks = _Interner()
        self._hosts = _Interner()
        self._records: dict[str, _Record] = {}
        self._by_inversion: list[str] = []       # inversion index -> circular finding id
        self._class_names: list[str] = []        # class id -> printed name
        self._batches = 0

    # ------------------------------------------------------------------ ingest

    def ingest(self, batch: pa.RecordBatch | pa.Table, host: str | None = None) -> list[Alert]:
        """Apply a batch of events in row order; return the Alerts it raised for the first time.
        A bad batch raises EventError and applies nothing."""
        ev = normalize(batch)
        if ev.n == 0:
            return []
        return self._apply(ev, host or DEFAULT_HOST)

    def ingest_events(self, ev: Events, host: str | None = None) -> list[Alert]:
        """ingest() for a batch the caller has already validated with `events.normalize` (the
        service checks its limits on the normalized columns, and need not validate twice)."""
        if ev.n == 0:
            return []
        return self._apply(ev, host or DEFAULT_HOST)

    def _apply(self, ev: Events, host: str) -> list[Alert]:
        core = self._core
        kw = {}
        if ev.mode is not None:
            kw["mode"] = ev.mode
        if ev.subclass is not None:
            kw["subclass"] = ev.subclass
        if ev.instance is not None:
            kw["instance"] = ev.instance
        if ev.irq is not None:
            kw["irq"] = ev.irq
        if ev.count is not None:
            kw["count"] = ev.count
        for col, interner in (("site", self._sites), ("task", self._tasks), ("host", self._hosts)):
            s = getattr(ev, col)
            if s is not None:
                kw[col] = s.index
                kw[col + "_map"] = interner.map(s.dictionary)
        core.ingest(ev.ts_ns, ev.tid, ev.op, ev.lock.index, self._locks.map(ev.lock.dictionary),
                    default_host=self._hosts.get(host), **kw)
        self._batches += 1
        for h, tid in core.overflows():
            log.warning("held-lock stack overflow (max_lock_depth=%d) on host %s thread %d: "
                        "acquisition not tracked", self.max_lock_depth, self._hosts.name(h), tid)
        new: list[_Record] = []
        for f in core.findings():
            rec = self._record(f)
            if rec is not None:
                new.append(rec)
        return [self._alert(r) for r in new]

    def _record(self, f: tuple) -> _Record | None:
        """Fold one core finding into the records; return the record if the finding is new."""
        code, _row, a, b, c, d, occ, held, path = f
        core = self._core
        if code == _F_WITNESS:       # a later cycle through inversion b, kept as its evidence
            self._records[self._by_inversion[b]].witnesses.append(tuple(path))
            return None
        kind = _F_KIND[code]
        if kind == "circular":
            # the finding is its inversion: the dependency (the cycle's last, a) that closed it
            edges = tuple(path)
            ident = "\0".join(self._edge_names(a))
            rec = _Record(id="", kind=kind, seq=0, edges=edges, occ=occ, inversion=len(self._by_inversion))
        elif kind in ("recursive", "bad_unlock"):
            ident = self._class_name(a)
            rec = _Record(id="", kind=kind, seq=0, cls=a, occ=occ, held=tuple(held))
        elif kind == "inconsistent_state":
            ident = f"{_IRQ[b]}\0{self._class_name(a)}"
            rec = _Record(id="", kind=kind, seq=0, cls=a, irq=b, bits=(c, d), occ=occ, held=tuple(held))
        else:  # irq_inversion: a = unsafe class, b = irq, c = safe class, d = its irq-on bit
            ident = f"{_IRQ[b]}\0{self._class_name(a)}"
            safe_bits = core.class_info(c)[2]
            in_bit = 4 * b if (safe_bits >> (4 * b)) & 1 else 4 * b + 1
            rec = _Record(id="", kind=kind, seq=0, edges=tuple(path), cls=a, irq=b, bits=(in_bit, d),
                          safe_cls=c, occ=occ)
        rid = kind + "-" + hashlib.sha1(f"{kind}\n{ident}".encode()).hexdigest()[:16]
        if occ >= 0:
            host = self._hosts.name(core.occurrence(occ)[5])
        else:  # a cycle: the host that first took its closing dependency
            host = self._hosts.name(core.edge_info(path[-1])[3]) if path else ""
        old = self._records.get(rid)
        if old is not None:
            old.count += 1
            if host:
                old.hosts.add(host)
            return None
        rec.id = rid
        rec.seq = len(self._records) + 1
        if host:
            rec.hosts.add(host)
        self._records[rid] = rec
        if kind == "circular":
            self._by_inversion.append(rid)
        return rec

    # ------------------------------------------------------------------ evidence

    def _class_name(self, c: int) -> str:
        # a class's name never changes: cached by class id
        names = self._class_names
        if c < len(names):
            return names[c]
        for k in range(len(names), self._core.class_count()):
            name_id, sub, _usage = self._core.class_info(k)
            name = self._locks.name(name_id)
            names.append(class_name(name, sub))
        return names[c]

    def _edge_names(self, e: int) -> tuple[str, str]:
        src, dst = self._core.edge_info(e)[:2]
        return self._class_name(src), self._class_name(dst)

    def _occurrence(self, o: int) -> Occurrence:
        cls, mode, trylock, inst, site, host, task, tid, ts, irq = self._core.occurrence(o)
        return Occurrence(lock=self._class_name(cls), mode=mode, trylock=bool(trylock), instance=inst,
                          site=self._sites.name(site), host=self._hosts.name(host),
                          task=self._tasks.name(task), tid=tid, ts_ns=ts, irq=irq)

    def _link(self, e: int) -> Link:
        (src, dst, kinds, host, task, ts, site_h, site_t, inst_h, inst_t, mode_t, try_h, mode_h,
         count, last, hosts) = self._core.edge_info(e)
        held, taken = self._class_name(src), self._class_name(dst)
        host_name, task_name = self._hosts.name(host), self._tasks.name(task)
        # the core keeps one time per dependency: when it was first made
        return Link(held=held, taken=taken,
                    kinds=_KINDS_OF[kinds & 15],
                    first_held=Occurrence(lock=held, mode=mode_h, trylock=bool(try_h), instance=inst_h,
                                          site=self._sites.name(site_h), host=host_name,
                                          task=task_name, ts_ns=ts),
                    first_taken=Occurrence(lock=taken, mode=mode_t, instance=inst_t,
                                           site=self._sites.name(site_t), host=host_name,
                                           task=task_name, ts_ns=ts),
                    count=count, hosts=tuple(sorted(self._hosts.name(h) for h in hosts)),
                    last_ts_ns=last, host_count=self._core.edge_host_count(e))

    def _usage_string(self, c: int) -> str:
        """lockdep's get_usage_chars: per irq state, the write then the read character."""
        u = self._core.class_info(c)[2]
        out = []
        for x in range(2):
            for rd in range(2):
                in_bit, on_bit = (u >> (4 * x + rd)) & 1, (u >> (4 * x + 2 + rd)) & 1
                out.append("?" if in_bit and on_bit else "+" if on_bit else "-" if in_bit else ".")
        return "".join(out)

    def _alert(self, r: _Record) -> Alert:
        core = self._core
        links = tuple(self._link(e) for e in r.edges)
        classes: list[int] = []
        usages: tuple[Usage, ...] = ()
        if r.kind == "circular":
            classes = [core.edge_info(e)[0] for e in r.edges]
        elif r.kind == "irq_inversion":
            classes = [core.edge_info(e)[0] for e in r.edges] + [r.cls]
        else:
            classes = [r.cls]
        if r.bits:
            owners = (r.safe_cls if r.kind == "irq_inversion" else r.cls, r.cls)
            usages = tuple(Usage(lock=self._class_name(c), usage=USAGE_BITS[bit],
                                 first=self._occurrence(core.class_usage_occ(c, bit)))
                           for c, bit in zip(owners, r.bits) if core.class_usage_occ(c, bit) >= 0)
        hosts = set(r.hosts)
        for link in links:
            hosts.update(link.hosts)
        if r.kind == "irq_inversion":
            # lockdep reports on whichever came last: the usage that made a class safe or
            # unsafe, or the dependency that completed the path between them
            moments = [u.first for u in usages] + [link.first_taken for link in links]
            trigger = max(moments, key=lambda o: o.ts_ns) if moments else None
        elif r.occ >= 0:
            trigger = self._occurrence(r.occ)
        else:  # a cycle: lockdep reports the acquisition that closed it
            trigger = links[-1].first_taken if links else None
        names = [self._class_name(c) for c in classes]
        inversion, count = None, r.count
        witnesses: tuple[Witness, ...] = ()
        if r.kind == "circular" and r.inversion >= 0:
            inversion = (links[-1].held, links[-1].taken)
            witnesses = (self._witness(r.edges, links),) + tuple(self._witness(w) for w in r.witnesses)
            for w in witnesses[1:]:
                hosts.update(w.hosts)
            count = self._core.inversion_witnesses(r.inversion)
        host_count = self._host_count(r, hosts, links, witnesses)
        return Alert(
            id=r.id, kind=r.kind, locks=tuple(names), hosts=tuple(sorted(h for h in hosts if h)),
            links=links, trigger=trigger, held=tuple(self._occurrence(o) for o in r.held),
            usages=usages, usage_strings={n: self._usage_string(c) for n, c in zip(names, classes)},
            irq_state=_IRQ[r.irq] if r.irq >= 0 else "", count=count,
            first_ts_ns=trigger.ts_ns if trigger else 0, seq=r.seq, inversion=inversion,
            witnesses=witnesses, host_count=host_count)

    def _host_count(self, r: _Record, hosts: set[str], links: tuple[Link, ...],
                    witnesses: tuple[Witness, ...]) -> int:
        """0 (len(hosts)) when every host of the finding's dependencies is named; else the core's
        estimate of the hosts of the finding (its dependencies' sketches merged, docs/semantics.md)."""
        every = [*links, *(x for w in witnesses for x in w.links)]
        if all(link.host_count <= len(link.hosts) for link in every):
            return 0
        edges = [e for es in (r.edges, *r.witnesses) for e in es]
        ids = [i for i in (self._hosts.find(h) for h in hosts if h) if i >= 0]
        return self._core.host_union(edges, ids)[0]

    def _witness(self, edges: tuple[int, ...], links: tuple[Link, ...] | None = None) -> Witness:
        if links is None:
            links = tuple(self._link(e) for e in edges)
        return Witness(locks=tuple(link.held for link in links), links=links,
                       hosts=tuple(sorted({h for link in links for h in link.hosts if h})))

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        """The whole state (graph, evidence, held stacks, alerts, names) as bytes."""
        meta = {
            "max_lock_depth": self.max_lock_depth,
            "irq_rule": self.irq_rule,
            "batches": self._batches,
            "names": {k: getattr(self, "_" + k).names() for k in ("locks", "sites", "tasks", "hosts")},
            "records": [{**asdict(r), "hosts": sorted(r.hosts)} for r in self._records.values()],
            "by_inversion": self._by_inversion,
        }
        blob = json.dumps(meta, separators=(",", ":")).encode()
        return _SNAPSHOT_MAGIC + struct.pack("<Q", len(blob)) + blob + self._core.dump()

    @classmethod
    def restore(cls, data: bytes) -> Engine:
        """An Engine from snapshot()'s bytes; ValueError if they are not a valid snapshot."""
        if not data.startswith(_SNAPSHOT_MAGIC) or len(data) < len(_SNAPSHOT_MAGIC) + 8:
            raise ValueError("not a lockfleet engine snapshot")
        off = len(_SNAPSHOT_MAGIC)
        (n,) = struct.unpack_from("<Q", data, off)
        off += 8
        try:
            meta = json.loads(data[off:off + n])
        except ValueError as e:
            raise ValueError(f"corrupt engine snapshot: {e}") from None
        eng = cls(max_lock_depth=meta["max_lock_depth"],
                  irq_rule=meta.get("irq_rule", IRQ_RULE_DEFAULT))
        eng._core = Core.load(memoryview(data)[off + n:])
        eng._core.irq_rule_pre510 = eng.irq_rule == "pre-5.10"
        eng._batches = meta["batches"]
        for k, names in meta["names"].items():
            interner = getattr(eng, "_" + k)
            for name in names:
                interner.get(name)
        for r in meta["records"]:
            rec = _Record(**{**r, "edges": tuple(r["edges"]), "bits": tuple(r["bits"]),
                             "held": tuple(r["held"]), "hosts": set(r["hosts"]),
                             "witnesses": [tuple(w) for w in r["witnesses"]]})
            eng._records[rec.id] = rec
        eng._by_inversion = list(meta["by_inversion"])
        return eng

    # ------------------------------------------------------------------ queries

    def alerts(self) -> list[Alert]:
        """Every finding so far, deduplicated, in the order they were raised."""
        return [self._alert(r) for r in self._records.values()]

    def witnesses(self, alert_id: str) -> list[Witness] | None:
        """The witness cycles kept for circular finding `alert_id` (its own first), or None for
        an unknown id; [] for a finding of another kind."""
        a = self.alert(alert_id)
        return None if a is None else list(a.witnesses)

    def alert(self, alert_id: str) -> Alert | None:
        r = self._records.get(alert_id)
        return self._alert(r) if r is not None else None

    def _class_id(self, name: str) -> int:
        name_id = self._locks.find(name)
        if name_id >= 0:
            c = self._core.find_class(name_id, 0)
            if c >= 0:
                return c
        base, sub = split_class(name)
        if sub:
            name_id = self._locks.find(base)
            if name_id >= 0:
                return self._core.find_class(name_id, sub)
        return -1

    def _path(self, a: str, b: str) -> list[int] | None:
        ca, cb = self._class_id(a), self._class_id(b)
        if ca < 0 or cb < 0 or ca == cb:
            return None
        return self._core.shortest_path(ca, cb)

    def chain(self, a: str, b: str) -> list[str] | None:
        """The shortest dependency path a ~> b, as lock names (a first, b last), or None."""
        path = self._path(a, b)
        if path is None:
            return None
        return [self._edge_names(path[0])[0]] + [self._edge_names(e)[1] for e in path]

    def chain_links(self, a: str, b: str) -> list[Link] | None:
        """The same path as chain(), with each link's evidence."""
        path = self._path(a, b)
        return None if path is None else [self._link(e) for e in path]

    def links(self) -> list[Link]:
        """Every dependency with its evidence and counters."""
        return [self._link(e) for e in range(self._core.edge_count())]

    # Evidence by id, for readers that walk the graph themselves (the service's lock view, the
    # export, analyze's tables). Dependency ids run 0..edge_count()-1 in the order the
    # dependencies were first made; class ids likewise. Ids are stable for an Engine's life.

    def edge_count(self) -> int:
        return self._core.edge_count()

    def link(self, edge: int) -> Link:
        """Dependency `edge` with its evidence and counters."""
        return self._link(edge)

    def edge_classes(self) -> tuple[np.ndarray, np.ndarray]:
        """The held and taken class ids of every dependency, by dependency id."""
        src, dst, _kinds = self._core.edges()
        return src, dst

    def edge_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every dependency's kinds bit mask (uint8: EN 1, ER 2, SN 4, SR 8), count (uint64) and
        last time (int64 ns), by dependency id, read in bulk."""
        _src, _dst, kinds = self._core.edges()
        count, last = self._core.edge_counts()
        return kinds & 15, count, last

    def class_usages(self) -> np.ndarray:
        """Every class's irq usage bits (uint8, by class id), read in bulk."""
        return self._core.class_usages()

    def finding_count(self) -> int:
        """How many findings there are (they only grow): a cheap test for new ones."""
        return len(self._records)

    def class_id(self, name: str) -> int:
        """The id of lock class `name` (`name` or `name/subclass`), or -1."""
        return self._class_id(name)

    def class_name(self, cls: int) -> str:
        return self._class_name(cls)

    def usage(self, name: str) -> tuple[str, list[Usage]] | None:
        """Lock class `name`'s lockdep usage string (`{+.+.}`'s inside) and its irq usage bits,
        each with the acquisition that first set it; None for an unknown class."""
        c = self._class_id(name)
        if c < 0:
            return None
        found = []
        for bit, usage in enumerate(USAGE_BITS):
            o = self._core.class_usage_occ(c, bit)
            if o >= 0:
                found.append(Usage(lock=self._class_name(c), usage=usage, first=self._occurrence(o)))
        return self._usage_string(c), found

    def edges(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Every dependency: (held, taken, kinds seen)."""
        src, dst, kinds = self._core.edges()
        names = [self._class_name(c) for c in range(self._core.class_count())]
        return [(names[s], names[d], _KINDS_OF[kb & 15]) for s, d, kb in zip(src.tolist(), dst.tolist(), kinds.tolist())]

    def stats(self) -> dict[str, int]:
        core = self._core
        by_kind = dict.fromkeys(_F_KIND.values(), 0)
        for r in self._records.values():
            by_kind[r.kind] += 1
        return {
            "events": core.events,
            "acquires": core.acquires,
            "releases": core.releases,
            "locks": core.class_count(),
            "edges": core.edge_count(),
            "alerts": len(self._records),
            **{f"alerts_{k}": v for k, v in by_kind.items()},
            "hosts": len(self._hosts),
            "threads": core.thread_count(),
            "chains": core.chain_count(),
            "chain_hits": core.chain_hits,
            "chain_misses": core.chain_misses,
            "chain_flushes": core.chain_flushes,
            "threads_dropped": core.threads_dropped,
            "host_sketches": core.sketch_count(),
            "depth_overflows": core.depth_overflows,
            "batches": self._batches,
            "graph_recomputes": core.recomputes,
            "graph_reorders": core.reorders,
            "cycle_searches": core.searches,
            "search_budget_exhausted": core.search_budget_exhausted,
            "inversions": len(self._by_inversion),
            "witnesses": core.witnesses,
            "witness_budget_exhausted": core.witness_budget_exhausted,
            "inversions_untracked": core.inversions_untracked,
            "search_steps": core.search_steps,
            "reach_spread_steps": core.spread_steps,
            "core_bytes": core.memory_bytes(),
            # the core's memory by table family (capacities): what grows with what
            **{f"core_bytes_{k}": v for k, v in core.memory_breakdown().items()},
        }
