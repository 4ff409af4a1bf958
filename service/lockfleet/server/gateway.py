"""The gateway: admits pushed batches into the engine, exactly once and durably.

For each batch, on the thread reading its stream: check the envelope (host, stream id, seq, size,
whose host it may speak for), decode the Arrow IPC bytes (row count first, then full validation),
check the schema against the stream's earlier batches and the events against the schema
(docs/contract.md section 2), then, in one ordered section for the whole service: check the seq
against the stream's high-water mark (a resent batch is a duplicate, a skipped one is refused), the
fleet-wide limits, apply the batch with `Engine.ingest`, and append it to the event log. The log's
order is therefore the engine's order, and replaying it rebuilds the same state. The ack waits until the log says the
record is durable (group commit: many batches share one fsync). A duplicate's ack waits until the
batch it repeats is durable.

Memory is bounded: a batch holds a share of `max_inflight_bytes` from the moment it is read until it
is durable, and the reader waits for that share, so that when the engine or the disk falls behind
the streams stop being read and acks slow down. While the log cannot be written (disk full), new
batches are refused with UNAVAILABLE and not applied; batches applied but not yet durable stay in
memory and are written when the disk recovers (a resend of one is then acked as a duplicate).

Knows nothing of grpc nor of how cycles are found: outcomes carry gRPC status code *names*.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine import Engine
from ..errors import RefusedError
from ..events import MAX_NAME_BYTES, EventError, Events, normalize
from ..store import EventLog, LogUnavailable, Record, SnapshotIncompatible
from ..store.snapshot import section_format
from ..wire import available_codecs
from .config import Limits
from .ratelimit import HostRates

log = logging.getLogger(__name__)
T = TypeVar("T")
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class Peer:
    """Who is on the other end of a stream. Under mTLS, `names` are the certificate's CN and DNS
    SANs; a non-relay peer may push only for those hosts."""

    mtls: bool = False
    names: frozenset[str] = frozenset()
    relay: bool = False
    label: str = ""

    def may_speak_for(self, host: str) -> bool:
        return not self.mtls or self.relay or host in self.names


ANYONE = Peer()


@dataclass(frozen=True)
class Outcome:
    """What to acknowledge for one batch."""

    seq: int
    ok: bool
    duplicate: bool = False
    code: str = ""            # gRPC status code name when not ok
    error: str = ""
    reason: str = ""          # a stable short token for the refusal (metrics, clients)
    events: int = 0
    new_alerts: tuple[str, ...] = ()


@dataclass
class Ticket:
    """A batch between admission and its ack."""

    seq: int
    received: float
    outcome: Outcome | None = None     # set: final (a refusal); unset: wait for `lsn`
    lsn: int = 0
    events: int = 0
    duplicate: bool = False
    new_alerts: tuple[str, ...] = ()


@dataclass
class Prepared:
    """A batch between `Gateway.prepare` and `Gateway.apply`."""

    ticket: Ticket
    host: str
    stream_id: str
    seq: int
    ipc: bytes
    peer: Peer
    cost: int = 0                 # its share of the in-flight budget (held from prepare on)
    table: pa.Table | None = None
    ev: Events | None = None
    fp: str = ""
    classes: set[str] = field(default_factory=set)
    threads: dict[str, np.ndarray] = field(default_factory=dict)
    host_rows: dict[str, tuple[int, int]] = field(default_factory=dict)


class Refusal(RefusedError):
    def __init__(self, code: str, reason: str, error: str) -> None:
        super().__init__(error)
        self.code, self.reason, self.error = code, reason, error


@dataclass
class Counters:
    batches: int = 0          # batches applied (replayed ones included), cumulative across restarts
    events: int = 0
    duplicates: int = 0
    refused: int = 0
    replayed: int = 0         # batches replayed from the log at this start
    bytes: int = 0            # Arrow IPC bytes applied since this start (for snapshot scheduling)
    refused_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class HostStats:
    """What one host has sent (for `QueryService.Hosts`)."""

    batches: int = 0          # batches with this host on the envelope
    events: int = 0           # rows attributed to it (its envelope's, or a relay's `host` column)
    first_ns: int = 0         # service clock at its first batch; 0 when known only from a replayed log
    last_ns: int = 0          # service clock at its latest batch
    last_event_ts_ns: int = 0  # the latest event time it sent (host clock)


@dataclass
class StreamState:
    seq: int                  # high-water seq, applied
    lsn: int                  # the log record that set it (durable once the log passes it)
    schema: str               # the stream's schema, as `_fingerprint` has it


@dataclass(frozen=True)
class ReplayReport:
    batches: int
    events: int
    streams: int
    torn_bytes: int
    seconds: float
    skipped: int = 0
    snapshot_lsn: int = 0


class Budget:
    """A bound on bytes held by batches in flight; `acquire` waits for room. `peak` is the most
    ever held at once (never above `capacity`: a share larger than the capacity takes all of it)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a budget needs a capacity of at least 1, not {capacity}")
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self.waits = 0            # acquisitions that had to wait for room
        self._cond = threading.Condition()

    def acquire(self, n: int, give_up: Callable[[], str]) -> str:
        """Take `n` (at most the capacity); returns "" or, if `give_up()` says why, that reason."""
        n = min(n, self.capacity)
        with self._cond:
            if self.used + n > self.capacity:
                self.waits += 1
            while self.used + n > self.capacity:
                why = give_up()
                if why:
                    return why
                self._cond.wait(0.25)
            self.used += n
            self.peak = max(self.peak, self.used)
            return ""

    def release(self, n: int) -> None:
        n = min(n, self.capacity)
        with self._cond:
            self.used -= n
            self._cond.notify_all()


_EVENT_REASONS = (("is missing", "missing_column"), ("has type", "wrong_type"), ("is a dictionary of", "wrong_type"),
                  ("dictionary indices", "wrong_type"), ("null in a required", "null_in_required_column"),
                  ("empty lock name", "empty_lock_name"), ("appears", "duplicate_column"),
                  ("dictionary index out of range", "bad_dictionary"), ("value", "value_out_of_range"))


def event_reason(message: str) -> str:
    for needle, reason in _EVENT_REASONS:
        if needle in message:
            return reason
    return "invalid_events"


class Gateway:
    """Thread-safe front of one Engine and its EventLog."""

    def __init__(self, engine: Engine, eventlog: EventLog, limits: Limits | None = None,
                 observe: Callable[[str, Any], None] | None = None) -> None:
        self._engine = engine
        self._log = eventlog
        self.limits = limits or Limits()
        self._apply = threading.Lock()          # the ordered section: engine + log order
        self._meta = threading.Lock()           # stream states, for the fast path
        self._streams: dict[tuple[str, str], StreamState] = {}
        self._preparing: dict[tuple[str, str], int] = {}   # highest seq prepared per stream
        self._schemas: dict[str, str] = {}      # interned fingerprints
        self._classes: set[str] = set()
        self._threads: dict[str, set[int]] = {}
        self._budget = Budget(self.limits.max_inflight_bytes)
        self._rates = HostRates(self.limits.max_host_bytes_per_second)
        self.window_peak = 0                    # most batches ever received and not yet acked on one stream
        self.push_calls = 0                     # Push calls open now
        self.stalled_calls = 0                  # Push calls ended because their client read no acks
        self._closing = ""
        self._observe = observe or (lambda _k, _v: None)
        self.counters = Counters()
        self.snapshot_lsn = 0
        self._hosts: dict[str, HostStats] = {}
        self._drops: dict[tuple[str, str], int] = {}   # (host, stream id) -> events its agent dropped

    # -- start-up ---------------------------------------------------------------------------

    def restore(self, lsn: int, sections: dict[str, bytes]) -> None:
        """Adopt a snapshot's state (see `capture`); raises SnapshotIncompatible when a section is in
        a format this build does not read (the caller then tries an older snapshot or the log)."""
        meta = json.loads(sections["gateway"])
        if meta.get("version") != SNAPSHOT_VERSION:
            raise SnapshotIncompatible(f"gateway section format {meta.get('version')}, this build reads "
                                       f"{SNAPSHOT_VERSION}")
        try:
            engine = type(self._engine).restore(sections["engine"])
        except Exception as exc:  # whole bytes (the file's crc held) the engine does not take: another format
            raise SnapshotIncompatible(f"engine section {section_format(sections['engine'])} is not a format "
                                       f"this build restores ({type(exc).__name__}: {exc})") from None
        schemas = meta["schemas"]
        streams = {(h, s): StreamState(seq, 0, schemas[i]) for h, s, seq, i in meta["streams"]}
        classes = set(json.loads(sections["classes"]))
        threads: dict[str, set[int]] = {}
        if sections.get("threads"):
            with pa.ipc.open_stream(pa.py_buffer(sections["threads"])) as reader:
                t = reader.read_all()
            hosts, tids = t.column("host").to_pylist(), t.column("tid").to_numpy()
            for h, tid in zip(hosts, tids.tolist()):
                threads.setdefault(h, set()).add(tid)
        c = meta["counters"]
        hosts = {h: HostStats(**v) for h, v in meta.get("hosts", {}).items()}
        self._engine = engine
        self._hosts = hosts
        self._streams = streams
        self._schemas = {s: s for s in schemas}
        self._classes = classes
        self._threads = threads
        self.counters = Counters(batches=c["batches"], events=c["events"], duplicates=c["duplicates"],
                                 refused=c["refused"], refused_by_reason=dict(c["refused_by_reason"]))
        self.snapshot_lsn = lsn

    def replay(self, after_lsn: int = 0) -> ReplayReport:
        """Apply every logged batch after `after_lsn` (a restored snapshot's) and start the log."""
        start = time.monotonic()
        skipped = events = 0
        with self._apply:
            for rec in self._log.replay(after_lsn):
                key = (rec.host, rec.stream_id)
                st = self._streams.get(key)
                if st is not None and rec.seq <= st.seq:
                    skipped += 1  # cannot happen with this gateway; tolerate it
                    continue
                try:
                    table = decode(rec.ipc, max_rows=1 << 62)
                    ev = normalize(table)
                    self._engine.ingest_events(ev, host=rec.host)
                except (EventError, Refusal) as exc:
                    skipped += 1
                    log.error("replay: skipped logged batch host=%s stream=%s seq=%d: %s",
                              rec.host, rec.stream_id, rec.seq, exc)
                    continue
                self._classes |= batch_classes(ev)
                for h, tids in batch_threads(ev, rec.host).items():
                    self._threads.setdefault(h, set()).update(tids.tolist())
                self._count_hosts(rec.host, batch_host_rows(ev, rec.host), 0)
                self._streams[key] = StreamState(rec.seq, rec.lsn, self._intern(fingerprint(table.schema)))
                self.counters.batches += 1
                self.counters.replayed += 1
                self.counters.events += table.num_rows
                self.counters.bytes += len(rec.ipc)
                events += table.num_rows
            self._log.start()
        torn = int(getattr(self._log, "torn_bytes", 0))
        return ReplayReport(batches=self.counters.replayed, events=events, streams=len(self._streams),
                            torn_bytes=torn, seconds=time.monotonic() - start, skipped=skipped,
                            snapshot_lsn=after_lsn)

    # -- ingest -----------------------------------------------------------------------------

    def admit(self, host: str, stream_id: str, seq: int, ipc: bytes, peer: Peer = ANYONE) -> Ticket:
        """Admit one batch up to its append to the log; never raises for bad input."""
        return self.apply(self.prepare(host, stream_id, seq, ipc, peer))

    def prepare(self, host: str, stream_id: str, seq: int, ipc: bytes, peer: Peer = ANYONE) -> Prepared:
        """The part of admission done outside the ordered section (envelope, decode, validation),
        so that a stream's next batch is prepared while the one before it is applied; `apply` must
        follow, in the stream's order. Never raises for bad input."""
        prep = Prepared(Ticket(seq=seq, received=time.monotonic()), host, stream_id, seq, ipc, peer)
        try:
            self._prepare(prep)
        except Refusal as r:
            prep.ticket.outcome = self._refuse(host, stream_id, seq, r)
        return prep

    def apply(self, prep: Prepared) -> Ticket:
        """The ordered part of admission: seq, limits, the engine and the log's append."""
        ticket = prep.ticket
        if ticket.outcome is not None or ticket.duplicate:
            return ticket
        try:
            self._apply_prepared(prep)
        except Refusal as r:
            self._budget.release(prep.cost)
            ticket.outcome = self._refuse(prep.host, prep.stream_id, prep.seq, r)
        except BaseException:
            self._budget.release(prep.cost)
            raise
        return ticket

    def _prepare(self, prep: Prepared) -> None:
        ticket, host, stream_id, seq, ipc, peer = prep.ticket, prep.host, prep.stream_id, prep.seq, prep.ipc, prep.peer
        lim = self.limits
        if not host:
            raise Refusal("INVALID_ARGUMENT", "empty_host", "host is empty: every batch names the host whose events it holds")
        if not stream_id:
            raise Refusal("INVALID_ARGUMENT", "empty_stream_id", "stream_id is empty: name the agent's stream of batches")
        if len(host.encode()) > MAX_NAME_BYTES or len(stream_id.encode()) > MAX_NAME_BYTES:
            raise Refusal("INVALID_ARGUMENT", "name_too_long", f"host and stream_id may be at most {MAX_NAME_BYTES} bytes")
        if seq < 1:
            raise Refusal("INVALID_ARGUMENT", "bad_seq", "seq must start at 1 and count up within (host, stream_id)")
        if not peer.may_speak_for(host):
            raise Refusal("PERMISSION_DENIED", "host_not_in_certificate",
                          f"this client's certificate names {', '.join(sorted(peer.names)) or 'no host'}, not host "
                          f"{host!r}; only a certificate with OU=lockfleet-relay may push for other hosts")
        key = (host, stream_id)
        with self._meta:
            st = self._streams.get(key)
        if st is not None and seq <= st.seq:
            self._duplicate(ticket, st)
            return
        # batches of this stream before this one may still be between prepare and apply: a gap past
        # them is refused here, before decoding; the ordered section checks the seq exactly
        with self._meta:
            ahead = self._preparing.get(key, 0)
        expected = max(st.seq if st else 0, ahead) + 1
        if seq > expected:
            raise Refusal("FAILED_PRECONDITION", "seq_gap",
                          f"seq {seq} skips ahead: expected seq {expected} next for host {host!r} stream "
                          f"{stream_id!r}; resend from there")
        if len(ipc) > lim.max_message_bytes:
            raise Refusal("RESOURCE_EXHAUSTED", "message_too_large",
                          f"batch seq {seq}: {len(ipc)} bytes of arrow_ipc is over the limit of "
                          f"{lim.max_message_bytes} (--max-message-bytes); send smaller batches")
        self._unavailable_check()
        why = self._rates.take(host, len(ipc), self._give_up)
        if why:
            raise Refusal("UNAVAILABLE", "log_unavailable" if self._log.error else "shutting_down", why)
        cost = 2 * len(ipc) + 4096
        why = self._budget.acquire(cost, self._give_up)
        if why:
            raise Refusal("UNAVAILABLE", "log_unavailable" if self._log.error else "shutting_down", why)
        try:
            self._prepare_held(prep, cost)
        except BaseException:
            self._budget.release(cost)
            raise
        prep.cost = cost
        with self._meta:
            if seq > self._preparing.get(key, 0):
                self._preparing[key] = seq

    def _prepare_held(self, prep: Prepared, cost: int) -> None:
        lim = self.limits
        host, seq, ipc, peer = prep.host, prep.seq, prep.ipc, prep.peer
        table = decode(ipc, lim.max_rows, seq)
        check_strings(table, lim.max_string_bytes, seq)
        try:
            ev = normalize(table)
        except EventError as exc:
            raise Refusal("INVALID_ARGUMENT", event_reason(str(exc)), f"batch seq {seq}: {exc}") from None
        fp = fingerprint(table.schema)
        if peer.mtls and not peer.relay and ev.host is not None:
            used = {ev.host.values[i] for i in _unique(ev.host.index).tolist() if i >= 0}
            others = sorted(used - {host})
            if others:
                raise Refusal("PERMISSION_DENIED", "host_not_in_certificate",
                              f"batch seq {seq}: column 'host' names {', '.join(map(repr, others[:3]))}, but this "
                              f"client's certificate is for {host!r} and is not a relay's (OU=lockfleet-relay)")
        prep.table, prep.ev, prep.fp = table, ev, fp
        prep.classes = batch_classes(ev)
        prep.threads = batch_threads(ev, host)
        prep.host_rows = batch_host_rows(ev, host)

    def _apply_prepared(self, prep: Prepared) -> None:
        lim = self.limits
        ticket, host, stream_id, seq, ipc, key, cost = (prep.ticket, prep.host, prep.stream_id, prep.seq, prep.ipc,
                                                        (prep.host, prep.stream_id), prep.cost)
        table, ev, fp, classes, threads, host_rows = (prep.table, prep.ev, prep.fp, prep.classes, prep.threads,
                                                      prep.host_rows)
        assert table is not None and ev is not None, "a batch applied before Gateway.prepare decoded it"
        with self._apply:
            self._unavailable_check()
            with self._meta:
                st = self._streams.get(key)
            if st is not None and seq <= st.seq:   # another call of the same stream got there first
                self._budget.release(cost)
                self._duplicate(ticket, st)
                return
            if seq != (st.seq if st else 0) + 1:
                raise Refusal("FAILED_PRECONDITION", "seq_gap", f"seq {seq} skips ahead: expected seq "
                              f"{(st.seq if st else 0) + 1} next for host {host!r} stream {stream_id!r}; "
                              "resend from there")
            if st is not None and st.schema != fp:
                raise Refusal("FAILED_PRECONDITION", "schema_changed",
                              f"batch seq {seq}: the schema changed mid-stream ({schema_change(st.schema, fp)}); "
                              "a stream keeps one schema: start a new stream_id for the new one")
            new_classes = classes - self._classes
            if len(self._classes) + len(new_classes) > lim.max_lock_classes:
                raise Refusal("RESOURCE_EXHAUSTED", "lock_class_limit",
                              f"batch seq {seq}: {len(new_classes)} new lock classes would make "
                              f"{len(self._classes) + len(new_classes)}, over the limit of {lim.max_lock_classes} "
                              "(--max-lock-classes)")
            new_threads: dict[str, list[int]] = {}
            for h, tids in threads.items():
                known = self._threads.get(h, ())
                fresh = [t for t in tids.tolist() if t not in known]
                if len(known) + len(fresh) > lim.max_threads_per_host:
                    raise Refusal("RESOURCE_EXHAUSTED", "thread_limit",
                                  f"batch seq {seq}: host {h!r} would have {len(known) + len(fresh)} tracked "
                                  f"threads, over the limit of {lim.max_threads_per_host} (--max-threads-per-host)")
                if fresh:
                    new_threads[h] = fresh
            try:
                t0 = time.perf_counter()
                new = self._engine.ingest_events(ev, host=host)
                apply_seconds = time.perf_counter() - t0
            except EventError as exc:
                raise Refusal("INVALID_ARGUMENT", event_reason(str(exc)), f"batch seq {seq}: {exc}") from None
            except Exception as exc:  # an engine bug: report it, keep serving
                log.exception("engine failed on batch host=%s stream=%s seq=%d", host, stream_id, seq)
                raise Refusal("INTERNAL", "engine_failure", f"batch seq {seq}: the engine failed "
                              f"({type(exc).__name__}: {exc}); see the service log") from None
            budget = self._budget
            lsn = self._log.append(Record(host=host, stream_id=stream_id, seq=seq, ipc=ipc),
                                   on_durable=lambda: budget.release(cost))
            with self._meta:
                self._streams[key] = StreamState(seq, lsn, self._intern(fp))
            self._classes |= new_classes
            for h, fresh in new_threads.items():
                self._threads.setdefault(h, set()).update(fresh)
            self.counters.batches += 1
            self.counters.events += table.num_rows
            self.counters.bytes += len(ipc)
            self._count_hosts(host, host_rows, time.time_ns())
        ticket.lsn = lsn
        ticket.events = table.num_rows
        ticket.new_alerts = tuple(a.id for a in new)
        self._observe("applied", table.num_rows)
        self._observe("apply_seconds", apply_seconds)
        if new:
            self._observe("raised", ticket.new_alerts)
        for alert in new:
            log.warning("new %s alert %s: %s on hosts %s", alert.kind, alert.id,
                        " -> ".join(alert.locks), ", ".join(alert.hosts))

    def _duplicate(self, ticket: Ticket, st: StreamState) -> None:
        self.counters.duplicates += 1
        self._observe("duplicate", 1)
        ticket.duplicate = True
        ticket.lsn = st.lsn

    def _unavailable_check(self) -> None:
        if self._closing:
            raise Refusal("UNAVAILABLE", "shutting_down", self._closing)
        err = self._log.error
        if err:
            raise Refusal("UNAVAILABLE", "log_unavailable", f"{err}; this batch was not applied, resend it later")

    def _give_up(self) -> str:
        if self._closing:
            return self._closing
        err = self._log.error
        return f"{err}; this batch was not applied, resend it later" if err else ""

    def complete(self, ticket: Ticket, timeout: float | None = None) -> Outcome:
        """Wait until the ticket's batch is durable; the ack to send."""
        if ticket.outcome is not None:
            return ticket.outcome
        try:
            if ticket.lsn and not self._log.wait_durable(ticket.lsn, timeout):
                return Outcome(seq=ticket.seq, ok=False, code="DEADLINE_EXCEEDED", reason="not_durable_in_time",
                               error="the batch was applied but is not yet durable; resend it to get its ack")
        except LogUnavailable as exc:
            self._count_refusal("log_unavailable")
            return Outcome(seq=ticket.seq, ok=False, code="UNAVAILABLE", reason="log_unavailable",
                           error=f"batch seq {ticket.seq} is applied but not yet durable: {exc}; it is kept in "
                                 "memory and written when the log recovers: resend it then to get its ack")
        return Outcome(seq=ticket.seq, ok=True, duplicate=ticket.duplicate, events=ticket.events,
                       new_alerts=ticket.new_alerts)

    def _refuse(self, host: str, stream_id: str, seq: int, r: Refusal) -> Outcome:
        self._count_refusal(r.reason)
        log.warning("refused batch host=%r stream=%r seq=%d: %s (%s): %s", host, stream_id, seq, r.code,
                    r.reason, r.error)
        return Outcome(seq=seq, ok=False, code=r.code, reason=r.reason, error=r.error)

    def _count_refusal(self, reason: str) -> None:
        with self._meta:
            self.counters.refused += 1
            self.counters.refused_by_reason[reason] = self.counters.refused_by_reason.get(reason, 0) + 1
        self._observe("refused", reason)

    def _count_hosts(self, host: str, rows: dict[str, tuple[int, int]], now_ns: int) -> None:
        """Per-host counters for one applied batch (in the ordered section)."""
        with self._meta:
            env = self._hosts.setdefault(host, HostStats())
            env.batches += 1
            for h, (n, last_ts) in rows.items():
                st = self._hosts.setdefault(h, HostStats())
                st.events += n
                st.last_event_ts_ns = max(st.last_event_ts_ns, last_ts)
            for h in {host, *rows}:
                st = self._hosts[h]
                if now_ns:
                    st.first_ns = st.first_ns or now_ns
                    st.last_ns = now_ns

    def _intern(self, fp: str) -> str:
        return self._schemas.setdefault(fp, fp)

    # -- snapshots --------------------------------------------------------------------------

    def capture(self) -> tuple[int, dict[str, bytes]]:
        """The whole state at one LSN, as snapshot sections (the log must be durable up to it
        before the snapshot is written)."""
        with self._apply:
            lsn = self._log.appended_lsn
            engine_bytes = self._engine.snapshot()
            schemas = list(self._schemas)
            index = {s: i for i, s in enumerate(schemas)}
            c = self.counters
            meta = {"version": SNAPSHOT_VERSION, "lsn": lsn, "schemas": schemas,
                    "streams": [[h, s, st.seq, index[st.schema]] for (h, s), st in self._streams.items()],
                    "counters": {"batches": c.batches, "events": c.events, "duplicates": c.duplicates,
                                 "refused": c.refused, "refused_by_reason": dict(c.refused_by_reason)},
                    "hosts": {h: asdict(st) for h, st in self._hosts.items()}}
            classes = json.dumps(sorted(self._classes))
            hosts = [h for h, tids in self._threads.items() for _ in range(len(tids))]
            tids = np.fromiter((t for s in self._threads.values() for t in s), dtype=np.int64, count=len(hosts))
        sink = pa.BufferOutputStream()
        table = pa.table({"host": pa.array(hosts, pa.string()), "tid": pa.array(tids)})
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return lsn, {"gateway": json.dumps(meta).encode(), "engine": bytes(engine_bytes),
                     "classes": classes.encode(), "threads": sink.getvalue().to_pybytes()}

    # -- queries and life -------------------------------------------------------------------

    def read(self, fn: Callable[[Engine], T]) -> T:
        """Run a read-only query against the engine, serialized with ingest."""
        with self._apply:
            return fn(self._engine)

    def read_durable(self, fn: Callable[[Engine], T]) -> tuple[T, int]:
        """Like `read`, and the log position that view includes (see `wait_durable`)."""
        with self._apply:
            return fn(self._engine), self._log.appended_lsn

    def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        """Whether every batch up to `lsn` is durable within `timeout`; raises LogUnavailable."""
        return bool(self._log.wait_durable(lsn, timeout))

    @property
    def applied_batches(self) -> int:
        """Batches applied so far (changes whenever the engine's state may have)."""
        return self.counters.batches

    def note_drops(self, host: str, stream_id: str, dropped: int) -> None:
        """An agent's running count of the events it dropped on a stream (kept in memory: agents
        send it again with every batch)."""
        key = (host, stream_id)
        with self._meta:
            if dropped > self._drops.get(key, 0):
                self._drops[key] = dropped

    def hosts(self) -> dict[str, dict[str, int]]:
        """Per host: HostStats as a dict, plus `streams`, `threads` and `dropped_events`."""
        with self._meta:
            out = {h: asdict(st) for h, st in self._hosts.items()}
            streams: dict[str, int] = {}
            for h, _sid in self._streams:
                streams[h] = streams.get(h, 0) + 1
            drops: dict[str, int] = {}
            for (h, _sid), n in self._drops.items():
                drops[h] = drops.get(h, 0) + n
        for h, d in out.items():
            d["streams"] = streams.get(h, 0)
            d["threads"] = len(self._threads.get(h, ()))
            d["dropped_events"] = drops.get(h, 0)
        return out

    def ingest_stats(self) -> dict[str, Any]:
        with self._meta:
            c = asdict(self.counters)
            streams = len(self._streams)
        return {**c, "streams": streams, "lock_classes_seen": len(self._classes),
                "inflight_bytes": self._budget.used, "inflight_bytes_peak": self._budget.peak,
                "inflight_bytes_limit": self._budget.capacity, "inflight_waits": self._budget.waits,
                "stream_window_peak": self.window_peak, "stream_window_limit": self.limits.max_inflight_per_stream,
                "rate_limited": self._rates.stats(), "push_calls": self.push_calls,
                "stalled_calls": self.stalled_calls,
                "snapshot_lsn": self.snapshot_lsn, **self._log.stats()}

    def note_call(self, opened: int, stalled: bool = False) -> None:
        """A Push call opened (+1) or ended (-1; `stalled`: ended because its client read no acks)."""
        with self._meta:
            self.push_calls += opened
            self.stalled_calls += int(stalled)

    def note_window(self, outstanding: int) -> None:
        """A stream has `outstanding` batches received and not yet acked (for `window_peak`)."""
        if outstanding > self.window_peak:
            with self._meta:
                self.window_peak = max(self.window_peak, outstanding)

    def begin_shutdown(self, why: str = "the service is shutting down; resend to it once it is back") -> None:
        """Refuse new batches from now on; those already admitted still get their acks."""
        self._closing = why
        with self._apply:   # wait for any admission in the ordered section to finish
            pass

    @property
    def log_error(self) -> str:
        return self._log.error


# -- the pieces of admission (also used by replay) ------------------------------------------

def decode(ipc: bytes, max_rows: int, seq: int = 0) -> pa.Table:
    """Arrow IPC stream bytes -> a fully validated Table; raises Refusal."""
    where = f"batch seq {seq}: " if seq else ""
    if not ipc:
        raise Refusal("INVALID_ARGUMENT", "not_arrow_ipc", f"{where}arrow_ipc is empty")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(ipc))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise Refusal("INVALID_ARGUMENT", "not_arrow_ipc",
                      f"{where}arrow_ipc is not an Arrow IPC stream, or is truncated ({_one_line(exc)})") from None
    batches = []
    rows = 0
    try:
        with reader:
            for batch in reader:
                rows += batch.num_rows
                if rows > max_rows:
                    raise Refusal("RESOURCE_EXHAUSTED", "too_many_rows",
                                  f"{where}the batch claims {rows} or more rows, over the limit of {max_rows} "
                                  "(--max-rows); send smaller batches")
                batches.append(batch)
            table = pa.Table.from_batches(batches, schema=reader.schema)
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        text = _one_line(exc)
        if any(k in text.lower() for k in _CODEC_ERRORS):
            raise Refusal("INVALID_ARGUMENT", "bad_compression",
                          f"{where}arrow_ipc is compressed with a codec this service does not read, or its "
                          f"compressed body does not decompress ({text}); it reads uncompressed batches and "
                          f"Arrow IPC compression {' or '.join(available_codecs()) or '(none)'}") from None
        raise Refusal("INVALID_ARGUMENT", "malformed_ipc", f"{where}arrow_ipc is damaged or truncated ({text})") from None
    return table


# how pyarrow words a compression it cannot undo (an unknown codec, one not built in, a bad body)
_CODEC_ERRORS = ("codec", "decompress", "compression")


def fingerprint(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def schema_change(old: str, new: str) -> str:
    a = dict(x.split(": ", 1) for x in old.split(", ") if ": " in x)
    b = dict(x.split(": ", 1) for x in new.split(", ") if ": " in x)
    diffs = [f"column '{k}' was {a[k]}, now {b[k]}" for k in a if k in b and a[k] != b[k]]
    diffs += [f"column '{k}' appeared" for k in b if k not in a]
    diffs += [f"column '{k}' went away" for k in a if k not in b]
    return "; ".join(diffs[:3]) or "column order changed"


def check_strings(table: pa.Table, max_bytes: int, seq: int) -> None:
    for i, name in enumerate(table.column_names):   # by position: a duplicated name is normalize's to refuse
        if name not in ("lock", "site", "task", "host"):
            continue
        col = table.column(i)
        typ = col.type
        arrays: list[pa.Array] = []
        if pa.types.is_dictionary(typ):
            arrays = [chunk.dictionary for chunk in col.chunks]
            typ = typ.value_type
        elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
            arrays = list(col.chunks)
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            continue    # the schema check names the wrong type
        for arr in arrays:
            longest = (pc.max(pc.binary_length(arr)).as_py() or 0) if len(arr) else 0
            if longest > max_bytes:
                raise Refusal("INVALID_ARGUMENT", "string_too_long",
                              f"batch seq {seq}: column '{name}' holds a value of {longest} bytes, over the limit "
                              f"of {max_bytes} (--max-string-bytes)")


def _unique(values: np.ndarray) -> np.ndarray:
    """Distinct values (hashing, not sorting: cheaper on a batch of repeats)."""
    unique: np.ndarray = pc.unique(pa.array(values)).to_numpy(zero_copy_only=False)
    return unique


def batch_classes(ev: Events) -> set[str]:
    """The lock classes (name, or name/subclass) a batch names."""
    idx = ev.lock.index
    values = ev.lock.values
    if ev.subclass is not None and len(ev.subclass) and int(ev.subclass.max()) > 0:
        keys = _unique(idx.astype(np.int64) * 8 + ev.subclass.astype(np.int64))
        return {values[k >> 3] if not k & 7 else f"{values[k >> 3]}/{k & 7}" for k in keys.tolist()}
    return {values[i] for i in _unique(idx).tolist()}


def batch_host_rows(ev: Events, host: str) -> dict[str, tuple[int, int]]:
    """host -> (rows, latest ts_ns) of one batch (rows without a `host` value are the envelope's)."""
    if ev.n == 0:
        return {}
    if ev.host is None:
        return {host: (ev.n, int(ev.ts_ns.max()))}
    out: dict[str, tuple[int, int]] = {}
    hidx = ev.host.index
    for h in _unique(hidx).tolist():
        name = ev.host.values[h] if h >= 0 else host
        mask = hidx == h
        n, last = int(mask.sum()), int(ev.ts_ns[mask].max())
        old = out.get(name, (0, last))
        out[name] = (old[0] + n, max(old[1], last))
    return out


def batch_threads(ev: Events, host: str) -> dict[str, np.ndarray]:
    """host -> the distinct thread ids a batch names on it."""
    if ev.n == 0:
        return {}
    if ev.host is None:
        return {host: _unique(ev.tid)}
    out: dict[str, np.ndarray] = {}
    hidx = ev.host.index
    for h in _unique(hidx).tolist():
        name = ev.host.values[h] if h >= 0 else host
        tids = _unique(ev.tid[hidx == h])
        out[name] = np.union1d(out[name], tids) if name in out else tids
    return out


def _one_line(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
