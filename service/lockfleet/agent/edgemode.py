"""Edge mode: run the core on the host and ship only what is new.

A kernel takes millions of locks a second; no fleet can ship every event. An `EdgeAgent` takes
the same events as an `Agent` (`acquire`, `release`, `record`, or `ingest(batch)`), feeds them to
a local `lockfleet.Engine`, and on each flush (every `flush_interval` seconds, or `flush()`)
ships only what the local engine learnt since the last shipment, as a small batch of SYNTHETIC
lock events on an ordinary `Agent` stream. The service needs no change: it sees events, and its
engine rebuilds from them the same dependencies (with their kinds), irq usage bits and findings,
merged with every other host's into the same graph and alerts.

What one shipment holds (`export_new`), in this order:

- each new dependency `H -> T`, in the order the local engine made them: one synthetic thread
  acquires H (op 2 when H was first held as a trylock, else op 0; mode 0 for an `E` kind, else
  the mode H was held in), acquires T (mode 2 for an `xR` kind, else 0 or 1 as first taken;
  never a trylock), releases T, releases H. `site`, `task`, `ts_ns` and `instance` come from the
  dependency's first evidence (`Link.first_held` / `first_taken`). `irq` is 12 (hard and soft
  irqs off, not in an irq): the same irq context for both, so the dependency is made, and no
  usage bit is marked;
- each new kind on a dependency (new or known), the same four rows with the modes of that kind
  (time: the dependency's last use, as the engine keeps no time per kind);
- with `ship_counts` (the default), each known dependency whose count grew, the same four rows
  with its first kind (time: its last use), so the count delta reaches the service;
- each new irq usage bit of a class: one acquire (the mode and trylock of the acquisition that
  first set it) and one release of that class on a synthetic thread, with the `irq` bits that
  set exactly that bit (the table of docs/semantics.md: 13 in-hardirq, 8 hardirq-on, 14
  in-softirq, 0 softirq-on; the last also sets hardirq-on, which the class then has anyway);
- each new local `recursive` finding: acquire X twice on a synthetic thread, release it twice;
  each new local `bad_unlock`: a release of X on a synthetic thread that holds nothing.
  (circular, irq_inversion and inconsistent_state findings need no rows of their own: the
  service's engine finds them again from the dependencies and usage bits.)

Counts: the acquire-of-taken row of each dependency carries an extra column `count` (uint64,
null elsewhere): the acquisitions it stands for since the last shipment (0 for a second new kind
shipped in the same round). The service's engine reads a uint64 `count` column (docs/semantics.md),
so `Link.count` on the service equals the sum over the hosts' local counts, as with raw events.

Synthetic threads use tids from a reserved high range (`SYNTHETIC_TID_BASE` and up, cycling
over `SYNTHETIC_TID_POOL` ids so that the service's per-host thread limit is never reached);
every synthetic thread's rows are contiguous and leave it holding nothing, so reusing a tid is
safe. A host should not mix an EdgeAgent with a raw Agent on the same host name.

Limitations: a class name printed as `name/N` (N in 0..7) is shipped as class `name` with
subclass N, as the engine prints them; a lock literally named `x/3` with subclass 0 would be
shipped as `x` subclass 3 (the engine's printed names are ambiguous in the same way). Order
within a shipment is not the raw order (new dependencies first, then new kinds, usages,
findings), and the engine finds one cycle per new dependency or kind and one irq path per
(class, irq): so the set of dependencies, kinds, usage strings and of recursive, bad_unlock,
inconsistent_state and irq_inversion ids is always the same as the raw events give, but a cycle
may be found through another closing edge (another cycle, another id) and an irq_inversion may
show another path, when a kind or a usage arrived between two new dependencies of one shipment.
Exporting after every event reproduces the raw alerts exactly (tests/test_agent_edges.py).
"""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..engine import Engine
from ..events import (
    ACQUIRE,
    AGENT_COLUMNS,
    COUNT,
    DEFAULTS,
    EXCLUSIVE,
    IRQS_OFF,
    RECURSIVE_READ,
    RELEASE,
    TRY_ACQUIRE,
    USAGE_IRQ,
    EventError,
    schema,
    split_class,
)
from .client.sdk import Agent

SYNTHETIC_TID_BASE = 1 << 62
SYNTHETIC_TID_POOL = 1024
FLUSH_INTERVAL = 1.0
LOCAL_BATCH_ROWS = 65536

_KIND_BITS = {"EN": 1, "ER": 2, "SN": 4, "SR": 8}

# One schema for every shipment (a stream keeps one schema): the Agent's wire columns plus `count`.
EDGE_SCHEMA = schema((*AGENT_COLUMNS, COUNT), dictionary=True)
_LOCAL_SCHEMA = schema(AGENT_COLUMNS)
_COLUMNS = AGENT_COLUMNS


@dataclass
class ExportState:
    """What was shipped so far from one local engine (one per EdgeAgent)."""

    ship_counts: bool = True
    kinds: list[int] = field(default_factory=list)     # by edge id: kinds bit mask shipped
    counts: list[int] = field(default_factory=list)    # by edge id: count shipped
    usages: dict[str, set[str]] = field(default_factory=dict)   # class name -> usage bits shipped
    findings: set[str] = field(default_factory=set)    # recursive / bad_unlock alert ids shipped
    findings_seen: int = 0                             # the engine's finding count at the last export
    usage_bits: list[int] = field(default_factory=list)  # by class id: usage bits already looked at
    next_tid: int = 0
    shipments: int = 0
    rows: int = 0
    new_edges: int = 0
    new_kinds: int = 0
    count_updates: int = 0
    new_usages: int = 0
    new_findings: int = 0

    def tid(self) -> int:
        t = SYNTHETIC_TID_BASE + self.next_tid % SYNTHETIC_TID_POOL
        self.next_tid += 1
        return t


class _Rows:
    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {f.name: [] for f in EDGE_SCHEMA}

    def add(self, ts: int, tid: int, op: int, cls: str, mode: int = 0, instance: int = 0, irq: int = IRQS_OFF,
            site: str = "", task: str = "", count: int | None = None) -> None:
        name, sub = split_class(cls)
        c = self.cols
        c["ts_ns"].append(ts)
        c["tid"].append(tid)
        c["op"].append(op)
        c["lock"].append(name)
        c["mode"].append(mode)
        c["subclass"].append(sub)
        c["instance"].append(instance & 0xFFFF_FFFF_FFFF_FFFF)
        c["irq"].append(irq)
        c["site"].append(site or None)
        c["task"].append(task or None)
        c["count"].append(count)

    def __len__(self) -> int:
        return len(self.cols["ts_ns"])

    def batch(self) -> pa.RecordBatch:
        arrays = []
        for f in EDGE_SCHEMA:
            vals = self.cols[f.name]
            if pa.types.is_dictionary(f.type):
                arrays.append(pa.array(vals, f.type.value_type).dictionary_encode())
            else:
                arrays.append(pa.array(vals, f.type))
        return pa.RecordBatch.from_arrays(arrays, schema=EDGE_SCHEMA)


def _pair(rows: _Rows, state: ExportState, link: Any, kind: str, ts: int, count: int | None) -> None:
    """One synthetic thread making `link` with `kind`."""
    h, t = link.first_held, link.first_taken
    held_mode = 0 if kind[0] == "E" else (h.mode or 1)
    taken_mode = RECURSIVE_READ if kind[1] == "R" else (t.mode if t.mode != RECURSIVE_READ else EXCLUSIVE)
    tid = state.tid()
    rows.add(ts, tid, TRY_ACQUIRE if h.trylock else ACQUIRE, link.held, held_mode, h.instance, site=h.site,
             task=t.task)
    rows.add(ts, tid, ACQUIRE, link.taken, taken_mode, t.instance, site=t.site, task=t.task, count=count)
    rows.add(ts, tid, RELEASE, link.taken, 0, t.instance, task=t.task)
    rows.add(ts, tid, RELEASE, link.held, 0, h.instance, task=t.task)


def _first_kind(link: Any) -> str:
    return ("E" if link.first_held.mode == EXCLUSIVE else "S") + ("R" if link.first_taken.mode == RECURSIVE_READ else "N")


def export_new(engine: Engine, state: ExportState) -> pa.RecordBatch | None:
    """Synthetic events for what `engine` learnt since `state` was last updated (see the module's
    documentation), or None when there is nothing new; updates `state`."""
    rows = _Rows()
    n = engine.edge_count()
    known = len(state.kinds)
    links: dict[int, Any] = {}
    # 1. new dependencies, in the order they were made, with the kind they were made with
    for e in range(known, n):
        link = links[e] = engine.link(e)
        kind = _first_kind(link)
        if kind not in link.kinds:  # cannot happen; be safe: ship a kind the engine has
            kind = link.kinds[0]
        _pair(rows, state, link, kind, link.first_taken.ts_ns, link.count)
        state.kinds.append(_KIND_BITS[kind])
        state.counts.append(link.count)
        state.new_edges += 1
    # the engine's tables, read in bulk: only dependencies and classes that changed are visited
    kinds_now, counts_now, _last = engine.edge_table()
    # 2. new kinds on any dependency (the first new kind's rows carry the count delta)
    shipped_kinds = np.asarray(state.kinds, dtype=np.uint8)
    for e in np.flatnonzero(kinds_now != shipped_kinds).tolist():
        link = links.get(e) or engine.link(e)
        links[e] = link
        for k in link.kinds:
            if not state.kinds[e] & _KIND_BITS[k]:
                delta = link.count - state.counts[e]
                _pair(rows, state, link, k, link.last_ts_ns or link.first_taken.ts_ns, delta)
                state.counts[e] = link.count
                state.kinds[e] |= _KIND_BITS[k]
                state.new_kinds += 1
    # 3. count deltas of the other known dependencies
    if state.ship_counts and known:
        grown = np.flatnonzero(counts_now[:known] > np.asarray(state.counts[:known], dtype=np.uint64))
        for e in grown.tolist():
            if e in links:
                continue
            link = engine.link(e)
            delta = link.count - state.counts[e]
            if delta > 0:
                kind = _first_kind(link)
                _pair(rows, state, link, kind if kind in link.kinds else link.kinds[0],
                      link.last_ts_ns or link.first_taken.ts_ns, delta)
                state.counts[e] = link.count
                state.count_updates += 1
    # 4. new irq usage bits (only classes whose bits changed since the last shipment)
    usage_now = engine.class_usages()
    if len(state.usage_bits) < len(usage_now):
        state.usage_bits.extend([0] * (len(usage_now) - len(state.usage_bits)))
    changed = np.flatnonzero(usage_now != np.asarray(state.usage_bits, dtype=np.uint8))
    for c in changed.tolist():
        state.usage_bits[c] = int(usage_now[c])
        name = engine.class_name(c)
        u = engine.usage(name)
        if u is None or not u[1]:
            continue
        shipped = state.usages.setdefault(name, set())
        for usage in u[1]:
            if usage.usage in shipped:
                continue
            o = usage.first
            mode = 0 if usage.usage.endswith("-W") else (o.mode or 1)
            tid = state.tid()
            rows.add(o.ts_ns, tid, TRY_ACQUIRE if o.trylock else ACQUIRE, name, mode, o.instance,
                     irq=USAGE_IRQ[usage.usage], site=o.site, task=o.task)
            rows.add(o.ts_ns, tid, RELEASE, name, 0, o.instance, irq=USAGE_IRQ[usage.usage], task=o.task)
            shipped.add(usage.usage)
            state.new_usages += 1
    # 5. new local recursive and bad_unlock findings
    n_found = engine.finding_count()
    for a in (engine.alerts() if n_found > state.findings_seen else ()):
        if a.kind not in ("recursive", "bad_unlock") or a.id in state.findings or not a.locks:
            continue
        trigger = a.trigger
        ts, site, task, inst = (trigger.ts_ns, trigger.site, trigger.task, trigger.instance) if trigger is not None else (0, "", "", 0)
        tid = state.tid()
        if a.kind == "recursive":
            cls = a.locks[0]
            rows.add(ts, tid, ACQUIRE, cls, 0, 0, site=(a.held[-1].site if a.held else ""), task=task)
            rows.add(ts, tid, ACQUIRE, cls, 0, 0, site=site, task=task)
            rows.add(ts, tid, RELEASE, cls, 0, 0, task=task)
            rows.add(ts, tid, RELEASE, cls, 0, 0, task=task)
        else:
            rows.add(ts, tid, RELEASE, split_class(a.locks[0])[0], 0, inst, site=site, task=task)
        state.findings.add(a.id)
        state.new_findings += 1
    state.findings_seen = n_found
    if not len(rows):
        return None
    state.shipments += 1
    state.rows += len(rows)
    return rows.batch()


def _host_free(table: pa.Table) -> pa.Table:
    if "host" in table.column_names:
        if table.column("host").null_count < table.num_rows:
            raise EventError("column 'host': an EdgeAgent speaks for one host; use one EdgeAgent per host")
        table = table.drop_columns(["host"])
    return table


class EdgeAgent:
    """An Agent that runs the core locally and ships only what is new (see the module's doc).

    `target`, `host` and `agent_kwargs` go to the inner `Agent` (which sends the shipments with
    `send_batch`: one sequence number per shipment). `flush_interval` seconds between shipments
    (None: only at `flush()`/`close()`); `ship_counts`: also ship count deltas of known
    dependencies; `max_lock_depth`: the local engine's. Every method is thread-safe."""

    def __init__(self, target: Any = None, host: str | None = None, *, flush_interval: float | None = FLUSH_INTERVAL,
                 ship_counts: bool = True, max_lock_depth: int = 48, local_batch_rows: int = LOCAL_BATCH_ROWS,
                 **agent_kwargs: Any) -> None:
        self.agent = Agent(target, host, **agent_kwargs)
        self.host = self.agent.host
        self.engine = Engine(max_lock_depth=max_lock_depth)
        self.state = ExportState(ship_counts=ship_counts)
        self.local_batch_rows = int(local_batch_rows)
        self._lock = _thread.allocate_lock()
        self._rows: list[tuple[Any, ...]] = []
        self._shipped_bytes = 0
        self._closed = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_interval:
            self._timer = threading.Thread(target=self._tick, args=(float(flush_interval),),
                                           name="lockfleet-edge-agent", daemon=True)
            self._timer.start()

    # -- events ---------------------------------------------------------------------------

    def acquire(self, lock: str, tid: int | None = None, mode: int = 0, subclass: int = 0, instance: int = 0,
                irq: int = 0, site: str | None = None, task: str | None = None, ts_ns: int | None = None,
                trylock: bool = False) -> bool:
        self._put((ts_ns if ts_ns is not None else time.time_ns(), tid if tid is not None else threading.get_native_id(),
                   TRY_ACQUIRE if trylock else ACQUIRE, lock, mode, subclass, instance, irq, site, task))
        return True

    def release(self, lock: str, tid: int | None = None, instance: int = 0, site: str | None = None,
                task: str | None = None, ts_ns: int | None = None, irq: int = 0) -> bool:
        self._put((ts_ns if ts_ns is not None else time.time_ns(), tid if tid is not None else threading.get_native_id(),
                   RELEASE, lock, 0, 0, instance, irq, site, task))
        return True

    def record(self, rows: Iterable[Mapping[str, Any] | tuple[Any, ...]] | pa.RecordBatch | pa.Table) -> int:
        """Events as Arrow (RecordBatch/Table, no `host`) or dicts/tuples as `Agent.record`."""
        if isinstance(rows, (pa.RecordBatch, pa.Table)):
            return self.ingest(rows)
        out = []
        for r in rows:
            if isinstance(r, Mapping):
                unknown = set(r) - set(_COLUMNS)
                if unknown:
                    raise EventError(f"unknown field(s) {', '.join(sorted(unknown))}")
                out.append((r.get("ts_ns") if r.get("ts_ns") is not None else time.time_ns(),
                            r.get("tid") if r.get("tid") is not None else threading.get_native_id(),
                            r["op"], r["lock"], *(r.get(k, DEFAULTS[k]) for k in _COLUMNS[4:])))
            else:
                if len(r) != len(_COLUMNS):
                    raise EventError(f"a tuple row has {len(_COLUMNS)} fields ({', '.join(_COLUMNS)})")
                out.append(tuple(r))
        with self._lock:
            self._check_open()
            self._rows.extend(out)
            if len(self._rows) >= self.local_batch_rows:
                self._drain_locked()
        return len(out)

    def ingest(self, batch: pa.RecordBatch | pa.Table) -> int:
        """A batch of events (any schema of docs/contract.md section 2, without a non-null `host`)."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        table = _host_free(table)
        with self._lock:
            self._check_open()
            self._drain_locked()
            self.engine.ingest(table, host=self.host)
        return int(table.num_rows)

    def _put(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._check_open()
            self._rows.append(row)
            if len(self._rows) >= self.local_batch_rows:
                self._drain_locked()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("EdgeAgent is closed")

    def _drain_locked(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        table = pa.Table.from_pylist([dict(zip(_COLUMNS, r)) for r in rows], schema=_LOCAL_SCHEMA)
        self.engine.ingest(table, host=self.host)

    # -- shipping -------------------------------------------------------------------------

    def ship(self) -> int:
        """Ship what is new now (without waiting for the ack); returns the rows shipped."""
        with self._lock:
            self._drain_locked()
            batch = export_new(self.engine, self.state)
            if batch is None:
                return 0
            self.agent.send_batch(batch)
            self._shipped_bytes += batch.nbytes
            return int(batch.num_rows)

    def flush(self, timeout: float | None = None) -> bool:
        """Ship what is new and wait until the service acknowledged every shipment."""
        self.ship()
        return self.agent.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        if not self._closed:
            try:
                self.ship()
            finally:
                self._closed = True
                self.agent.close(timeout)

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.ship()
            except Exception:
                if self.agent.error is not None:
                    return

    def __enter__(self) -> EdgeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Local counters (events seen, edges, chains, findings) and what was shipped, plus the
        inner Agent's counters under `agent`."""
        with self._lock:
            es = self.engine.stats()
            st = self.state
            return {"host": self.host, "events": es["events"] + len(self._rows), "edges": es["edges"],
                    "chains": es["chains"], "locks": es["locks"], "threads": es["threads"],
                    "local_alerts": es["alerts"], "depth_overflows": es["depth_overflows"],
                    "shipments": st.shipments, "shipped_rows": st.rows, "shipped_new_edges": st.new_edges,
                    "shipped_new_kinds": st.new_kinds, "shipped_count_updates": st.count_updates,
                    "shipped_usages": st.new_usages, "shipped_findings": st.new_findings,
                    "shipped_arrow_bytes": self._shipped_bytes, "agent": self.agent.stats()}
