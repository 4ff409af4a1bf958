"""Build lock-event batches (docs/contract.md section 2) for tests, the way lockdep's selftests read.

    s = Stream()
    t1, t2 = s.thread(host="h1"), s.thread(host="h2")
    t1.lock("A"); t1.lock("B"); t1.unlock("B"); t1.unlock("A")
    t2.lock("B"); t2.read_lock("A"); t2.unlock("A"); t2.unlock("B")
    with t2.hardirq():
        t2.lock("C")
    batch = events(s.rows)                 # one pa.RecordBatch, host column from the threads

`events(rows)` takes `Ev` objects, dicts with the column names, or oracle-style tuples
`(host, tid, op, lock, mode, subclass, instance, irq)`, and fills the optional columns' defaults.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
from oracle import Row

ACQUIRE, RELEASE, TRY_ACQUIRE = 0, 1, 2
EXCLUSIVE, SHARED, RECURSIVE_READ = 0, 1, 2
# the irq column's bits
IN_HARDIRQ, IN_SOFTIRQ, HARDIRQS_OFF, SOFTIRQS_OFF = 1, 2, 4, 8

SCHEMA = pa.schema([
    ("ts_ns", pa.int64()),
    ("tid", pa.int64()),
    ("op", pa.uint8()),
    ("lock", pa.utf8()),
    ("mode", pa.uint8()),
    ("subclass", pa.uint8()),
    ("instance", pa.uint64()),
    ("irq", pa.uint8()),
    ("site", pa.utf8()),
    ("task", pa.utf8()),
    ("host", pa.utf8()),
])
REQUIRED = ("ts_ns", "tid", "op", "lock")

_ts = itertools.count(1_700_000_000_000_000_000, 1000)


@dataclass(frozen=True)
class Ev:
    """One row. `host` None means "the host the batch is ingested for"."""

    tid: int
    op: int
    lock: str
    mode: int = EXCLUSIVE
    subclass: int = 0
    instance: int = 0
    irq: int = 0
    host: str | None = None
    ts_ns: int = 0
    site: str | None = None
    task: str | None = None

    def oracle_row(self, default_host: str) -> Row:
        return Row(self.host if self.host is not None else default_host, self.tid, self.op,
                   self.lock, self.mode, self.subclass, self.instance, self.irq)


def as_ev(r: Any) -> Ev:
    if isinstance(r, Ev):
        return r
    if isinstance(r, dict):
        return Ev(**r)
    host, tid, op, lock, mode, subclass, instance, irq = r
    return Ev(tid, op, lock, mode, subclass, instance, irq, host)


def events(rows: Iterable[Any], *, host_column: bool | None = None, minimal: bool = False,
           dictionary: bool = False, null_hosts: str | None = None) -> pa.RecordBatch:
    """A RecordBatch of `rows`.

    host_column: include the `host` column (default: when any row names a host).
    minimal:     only the required columns plus the ones whose values are not all default.
    dictionary:  dictionary-encode `lock` (and `host`).
    null_hosts:  rows whose host equals this are written with a null host (the batch's host).
    """
    evs = [as_ev(r) for r in rows]
    if host_column is None:
        host_column = any(e.host is not None for e in evs)
    cols: dict[str, list[Any]] = {
        "ts_ns": [e.ts_ns or next(_ts) for e in evs],
        "tid": [e.tid for e in evs],
        "op": [e.op for e in evs],
        "lock": [e.lock for e in evs],
        "mode": [e.mode for e in evs],
        "subclass": [e.subclass for e in evs],
        "instance": [e.instance for e in evs],
        "irq": [e.irq for e in evs],
        "site": [e.site for e in evs],
        "task": [e.task for e in evs],
    }
    if host_column:
        cols["host"] = [None if (e.host is None or e.host == null_hosts) else e.host for e in evs]
    arrays, fields = [], []
    for f in SCHEMA:
        if f.name not in cols:
            continue
        vals = cols[f.name]
        if minimal and f.name not in REQUIRED and f.name != "host":
            if all(v in (0, None) for v in vals):
                continue
        arr = pa.array(vals, type=f.type)
        if dictionary and f.name in ("lock", "host"):
            arr = arr.dictionary_encode()
        arrays.append(arr)
        fields.append(pa.field(f.name, arr.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class Thread:
    """One task: lockdep-selftest-like calls append rows to its stream."""

    def __init__(self, stream: Stream, tid: int, host: str | None, name: str):
        self.stream, self.tid, self.host, self.name = stream, tid, host, name
        self.irq = 0

    def _emit(self, op: int, lock: str, mode: int = EXCLUSIVE, subclass: int = 0,
              instance: int = 0, irq: int | None = None, site: str | None = None) -> Thread:
        self.stream.rows.append(Ev(self.tid, op, lock, mode, subclass, instance,
                                   self.irq if irq is None else irq, self.host,
                                   site=site, task=f"{self.name}/{self.tid}"))
        self.stream.owner.append(self)
        return self

    # acquisitions
    def lock(self, lock: str, mode: int = EXCLUSIVE, subclass: int = 0, **kw: Any) -> Thread:
        """spin_lock / mutex_lock / write_lock / down_write (mode 0 unless given)."""
        return self._emit(ACQUIRE, lock, mode, subclass, **kw)

    def lock_nested(self, lock: str, subclass: int, **kw: Any) -> Thread:
        return self._emit(ACQUIRE, lock, EXCLUSIVE, subclass, **kw)

    def read_lock(self, lock: str, **kw: Any) -> Thread:
        """rwlock read_lock: a recursive read (mode 2)."""
        return self._emit(ACQUIRE, lock, RECURSIVE_READ, **kw)

    def down_read(self, lock: str, **kw: Any) -> Thread:
        """rwsem down_read: a non-recursive read (mode 1)."""
        return self._emit(ACQUIRE, lock, SHARED, **kw)

    write_lock = lock
    down_write = lock

    def trylock(self, lock: str, mode: int = EXCLUSIVE, subclass: int = 0, **kw: Any) -> Thread:
        """A trylock that succeeded (op 2)."""
        return self._emit(TRY_ACQUIRE, lock, mode, subclass, **kw)

    def unlock(self, lock: str, instance: int = 0, **kw: Any) -> Thread:
        return self._emit(RELEASE, lock, EXCLUSIVE, 0, instance, **kw)

    def lock_unlock(self, *locks: str, mode: int = EXCLUSIVE) -> Thread:
        """LOCK(a); LOCK(b); ...; UNLOCK in reverse (the selftests' LOCK_UNLOCK_2)."""
        for lk in locks:
            self.lock(lk, mode)
        for lk in reversed(locks):
            self.unlock(lk)
        return self

    # irq state, as context managers
    @contextlib.contextmanager
    def _irq(self, bits: int) -> Iterator[Thread]:
        saved = self.irq
        self.irq |= bits
        try:
            yield self
        finally:
            self.irq = saved

    def hardirq(self) -> contextlib.AbstractContextManager:
        """In a hard-irq handler (hard irqs off there): HARDIRQ_ENTER()."""
        return self._irq(IN_HARDIRQ | HARDIRQS_OFF)

    def softirq(self, hardirqs_off: bool = False) -> contextlib.AbstractContextManager:
        """In a softirq (softirqs off there); the selftests' SOFTIRQ_ENTER() also disables hard irqs."""
        return self._irq(IN_SOFTIRQ | SOFTIRQS_OFF | (HARDIRQS_OFF if hardirqs_off else 0))

    def irqs_disabled(self) -> contextlib.AbstractContextManager:
        """local_irq_disable() ... local_irq_enable()."""
        return self._irq(HARDIRQS_OFF)

    def bh_disabled(self) -> contextlib.AbstractContextManager:
        """local_bh_disable() ... local_bh_enable()."""
        return self._irq(SOFTIRQS_OFF)


@dataclass
class Stream:
    """Rows of several threads in one global order."""

    rows: list[Ev] = field(default_factory=list)
    owner: list[Thread] = field(default_factory=list)
    threads: list[Thread] = field(default_factory=list)

    def thread(self, host: str | None = None, tid: int | None = None, name: str | None = None) -> Thread:
        n = len(self.threads)
        t = Thread(self, 100 + n if tid is None else tid, host, name or f"task{n}")
        self.threads.append(t)
        return t

    def with_hosts(self, host_of: dict[int, str | None]) -> list[Ev]:
        """The rows with each thread's host replaced (by tid)."""
        return [replace(e, host=host_of.get(e.tid, e.host)) for e in self.rows]

    def segments(self) -> list[list[Ev]]:
        """Maximal runs of consecutive rows of one thread, in order."""
        out: list[list[Ev]] = []
        prev = None
        for e, t in zip(self.rows, self.owner):
            if t is not prev:
                out.append([])
                prev = t
            out[-1].append(e)
        return out


def oracle_rows(rows: Iterable[Any], default_host: str) -> list[Row]:
    return [as_ev(r).oracle_row(default_host) for r in rows]


_BASELINE_VM: int | None = None


@contextlib.contextmanager
def memory_guard(headroom: int = 3_000_000_000) -> Iterator[None]:
    """Cap the address space while the engine runs, so that a runaway allocation in the core
    becomes a MemoryError (a test failure with an example) instead of the OOM killer ending the
    whole test session. The cap is fixed (the size of the process when this module was first
    guarded, plus `headroom`), so memory leaked by failing examples cannot raise it. The soft
    limit is restored afterwards."""
    global _BASELINE_VM
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if _BASELINE_VM is None:
            with open("/proc/self/status") as f:
                _BASELINE_VM = int(f.read().split("VmSize:")[1].split()[0]) * 1024
    except (ImportError, OSError, IndexError, ValueError):
        yield
        return
    cap = _BASELINE_VM + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


