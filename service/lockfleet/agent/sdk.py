"""The agent SDK: a thread-safe `Agent` that buffers lock events, cuts them into Arrow batches
(by rows and by time, lock/site/task dictionary-encoded per batch), streams them on one
`Ingest.Push` call and keeps every batch until the service acknowledges it.

    from lockfleet.agent import Agent

    with Agent("127.0.0.1:50551", host="web-1") as agent:
        agent.acquire("&rq->lock")
        agent.acquire("&p->pi_lock")
        agent.release("&p->pi_lock")
        agent.release("&rq->lock")
        agent.flush()                 # every event so far is acked (durable and applied)

Delivery. One Agent is one stream: `stream_id` (given, or the host plus a random id per Agent)
and sequence numbers 1, 2, ... (or from `first_seq`). A batch stays in memory until its ack. When
the call fails (the service restarts, the network drops, the service refuses a batch as passing:
UNAVAILABLE), the Agent reconnects with backoff and resends every unacknowledged batch in order,
with the same sequence numbers; the service acks the ones it already had as duplicates, so nothing
is applied twice and nothing acked is lost. `retry_for` bounds how long an outage may last (None:
forever); past it the Agent fails, and `flush`, `close` and every later event raise the error.

A batch the service refuses for good (e.g. over a limit: `thread_limit`, `lock_class_limit`)
is, with `on_refused="skip"` (the default), counted (`refused_batches`, `refused_events`), logged
and replaced on the wire by an empty batch of the same sequence number, so that the stream goes
on; with `on_refused="fail"` the Agent fails with `Refused`. A `seq_gap` (the service does not
know this stream's earlier batches: its data dir was lost) always fails.

Memory is bounded: at most `max_buffered_events` events that are recorded but not yet acked. When
it is full, `overflow="block"` (the default) makes the recording thread wait for acks (a batch
larger than the bound still goes in when nothing else is buffered); `overflow="drop"` drops the
new events and counts them in `dropped`. The Agent sends the running count with every batch
(`PushBatch.dropped_events`, shown per host by the service), reports it in `stats()` and logs a warning (the first drop, then at most every 10 s,
and at close). Dropping events breaks acquire/release pairs, so the service may then see
`bad_unlock` findings and dependencies that did not happen; the count tells how much was lost.
"""

from __future__ import annotations

import _thread
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from ..events import AGENT_COLUMNS, DEFAULTS, MAX_NAME_BYTES, EventError, check_row, normalize, schema
from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .channel import AgentError, Connection, Refused, Unreachable, from_rpc_error, open_channel, read_token
from .files import to_ipc

log = logging.getLogger(__name__)

# The primitives the Agent itself uses, taken before `instrument()` may patch `threading`.
_allocate_lock = _thread.allocate_lock
_Condition = threading.Condition
_Thread = threading.Thread
_get_native_id = threading.get_native_id
_time_ns = time.time_ns
_monotonic = time.monotonic

DEFAULT_TARGET = "127.0.0.1:50551"
THREAD_PREFIX = "lockfleet-agent"
BATCH_ROWS = 8192
BATCH_INTERVAL = 0.2
MAX_BUFFERED = 1_000_000
WINDOW = 8
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
DROP_WARN_EVERY = 10.0
RETRY_ACK_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
FATAL_RPC_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED",
                   "FAILED_PRECONDITION", "OUT_OF_RANGE", "NOT_FOUND")
OVERFLOW = ("block", "drop")
ON_REFUSED = ("skip", "fail")

# One row of the buffer: the columns of SCHEMA, in its order.
COLUMNS = AGENT_COLUMNS
SCHEMA = schema(COLUMNS)
_STRUCT = pa.struct(list(SCHEMA))
WIRE_SCHEMA = schema(COLUMNS, dictionary=True)


class AgentClosed(AgentError):
    """The Agent was closed; it takes no more events."""


@dataclass
class _Batch:
    seq: int
    ipc: bytes
    rows: int
    prebuilt: bool = False        # given whole to send_batch
    placeholder: bool = False     # the empty stand-in for a refused batch


@dataclass
class _Prebuilt:
    """A batch given whole (`send_batch`): sent as one sequence number, never merged."""

    ipc: bytes
    rows: int


class _Call:
    """State of one Push call, shared by the request generator and the ack reader."""

    def __init__(self) -> None:
        self.ended = False
        self.grpc_call: Any = None


class Agent:
    """A client of `Ingest.Push` for one host and one stream; see the module's documentation.

    `target` is "HOST:PORT" (default: $LOCKFLEET_TARGET, else 127.0.0.1:50551) or a
    `Connection`; `token` (or `token_file`: the token alone, or the server's format with an
    `ingest <token>` line), `tls_ca` (turns TLS on), `tls_cert` and `tls_key` (mTLS) and
    `server_name` build one, as `lockfleet push` takes them. `host` defaults to
    $LOCKFLEET_HOST, else the machine's name. Every method is thread-safe.

    Batching: a batch is cut when `batch_rows` events are buffered, or `batch_interval` seconds
    after the first of them (at most about twice that), or at `flush()`. `window` batches at most
    are unacknowledged on the wire. `stream_id` and `first_seq` name the stream (a caller that
    gives them may resume a stream: the service acks what it already has as duplicates).
    `on_ack(seq, ack)` sees each acked batch (on the Agent's sender thread). `quiet` logs
    outages and failures at DEBUG (for callers that report the raised errors themselves).
    """

    def __init__(self, target: str | Connection | None = None, host: str | None = None, *,
                 stream_id: str | None = None, first_seq: int = 1,
                 token: str = "", token_file: str | Path | None = None, tls_ca: str | Path | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None, server_name: str = "",
                 batch_rows: int = BATCH_ROWS, batch_interval: float = BATCH_INTERVAL,
                 max_buffered_events: int = MAX_BUFFERED, overflow: str = "block", window: int = WINDOW,
                 retry_for: float | None = None, on_refused: str = "skip",
                 on_ack: Callable[[int, pb.PushAck], None] | None = None, quiet: bool = False) -> None:
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW)}, not {overflow!r}")
        if on_refused not in ON_REFUSED:
            raise ValueError(f"on_refused must be one of {', '.join(ON_REFUSED)}, not {on_refused!r}")
        if batch_rows < 1 or max_buffered_events < 1 or window < 1 or first_seq < 1:
            raise ValueError("batch_rows, max_buffered_events, window and first_seq must be >= 1")
        if token_file:
            token = read_token(token_file, "ingest")
        if isinstance(target, Connection):
            if token or tls_ca or tls_cert or tls_key or server_name:
                raise ValueError("give either a Connection or the token/TLS options, not both")
            self.connection = target
        else:
            self.connection = Connection(target or os.environ.get("LOCKFLEET_TARGET") or DEFAULT_TARGET,
                                         token=token, tls_ca=Path(tls_ca) if tls_ca else None,
                                         tls_cert=Path(tls_cert) if tls_cert else None,
                                         tls_key=Path(tls_key) if tls_key else None, server_name=server_name)
        if bool(self.connection.tls_cert) != bool(self.connection.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        self.host = host or os.environ.get("LOCKFLEET_HOST") or socket.gethostname()
        self.stream_id = stream_id or f"{self.host}/{uuid.uuid4().hex[:16]}"
        if not (0 < len(self.host.encode()) <= MAX_NAME_BYTES and 0 < len(self.stream_id.encode()) <= MAX_NAME_BYTES):
            raise UsageError(f"host and stream_id must be 1..{MAX_NAME_BYTES} bytes")
        self.batch_rows = int(batch_rows)
        self.batch_interval = float(batch_interval)
        self.max_buffered_events = int(max_buffered_events)
        self.overflow = overflow
        self.window = int(window)
        self.retry_for = retry_for
        self.on_refused = on_refused
        self._on_ack = on_ack
        # outages and failures are logged (WARNING, ERROR) unless the caller reports them itself
        self._log_outage = logging.DEBUG if quiet else logging.WARNING
        self._log_failure = logging.DEBUG if quiet else logging.ERROR

        self._lock = _allocate_lock()
        self._cut_cond = _Condition(self._lock)     # the batcher waits here
        self._send_cond = _Condition(self._lock)    # the sender and the request generator wait here
        self._room_cond = _Condition(self._lock)    # flush, close and blocked writers wait here
        # The buffer. `_rows` takes rows without the lock (list.append is atomic); only its prefix
        # is ever taken out (a slice and `del rows[:n]`, each atomic), under the lock.
        self._rows: list[tuple[Any, ...]] = []
        self._chunks: list[list[tuple[Any, ...]] | pa.Table | _Prebuilt] = []   # before _rows, in order
        self._chunk_rows = 0                        # events in _chunks
        self._prebuilt = 0                          # pre-built batches in _chunks
        self._events_ok = True                      # False once closing, failed, or sending batches
        self._room = 0                              # see _update_room_locked
        self._kicked = False                        # the batcher was told the buffer holds a batch
        self._kind = ""                             # "events" or "batches": one schema per stream
        self._unacked: deque[_Batch] = deque()
        self._next_seq = first_seq
        self._flush_upto = 0                        # cut everything accepted up to here now
        self._closing = False
        self._stop = False
        self._error: AgentError | None = None
        self._call: _Call | None = None
        self._wake = threading.Event()              # interrupts the sender's backoff sleep
        # counters (under _lock); accepted = _cut_total + _chunk_rows + len(_rows)
        self._cut_total = 0         # events taken out of the buffer into batches
        self._settled = 0           # of them, acked or refused for good
        self._inflight = 0          # _cut_total - _settled (read without the lock by the hot path)
        self._prebuilt_total = 0    # pre-built batches accepted (they may be empty: counted apart)
        self._prebuilt_settled = 0
        self._acked_events = 0
        self._applied_events = 0
        self._refused_events = 0
        self._dropped = 0
        self._batches_cut = 0
        self._batches_acked = 0
        self._duplicates = 0
        self._refused_batches = 0
        self._reconnects = 0
        self._calls = 0
        self._connected = False
        self._open_early = False                   # connect(): open the Push call before any event
        self._new_alerts: list[str] = []
        self._last_error = ""
        self._last_drop_warning = -DROP_WARN_EVERY
        self._dropped_warned = 0
        self._update_room_locked()

        self._cutter = _Thread(target=self._cut_loop, name=f"{THREAD_PREFIX}-batcher", daemon=True)
        self._sender = _Thread(target=self._send_loop, name=f"{THREAD_PREFIX}-sender", daemon=True)
        self._cutter.start()
        self._sender.start()

    # -- events -----------------------------------------------------------------------------

    def acquire(self, lock: str, tid: int | None = None, mode: int = 0, subclass: int = 0, instance: int = 0,
                irq: int = 0, site: str | None = None, task: str | None = None, ts_ns: int | None = None,
                trylock: bool = False) -> bool:
        """Record an acquisition of the class `lock` (op 0, or 2 with `trylock`: a trylock that
        succeeded). `tid` defaults to the calling thread's native id, `ts_ns` to now. Returns
        False when the event was dropped (overflow="drop" and the buffer is full)."""
        row = check_row(ts_ns if ts_ns is not None else _time_ns(), tid if tid is not None else _get_native_id(),
                         2 if trylock else 0, lock, mode, subclass, instance, irq, site, task)
        return self._put(row)

    def release(self, lock: str, tid: int | None = None, instance: int = 0, site: str | None = None,
                task: str | None = None, ts_ns: int | None = None, irq: int = 0) -> bool:
        """Record a release of the class `lock` (op 1); see `acquire`."""
        row = check_row(ts_ns if ts_ns is not None else _time_ns(), tid if tid is not None else _get_native_id(),
                         1, lock, 0, 0, instance, irq, site, task)
        return self._put(row)

    def record(self, rows: Iterable[Mapping[str, Any] | tuple[Any, ...]] | pa.RecordBatch | pa.Table) -> int:
        """Record many events at once: a pyarrow RecordBatch or Table with the event columns
        (docs/contract.md section 2; no `host` column: an Agent speaks for one host), or an iterable of
        dicts with the keys of `COLUMNS` (ts_ns and tid default as in `acquire`), or of tuples in
        the order of `COLUMNS`. Checked whole first (EventError naming the column and row).
        Returns how many were taken (0 when dropped)."""
        if isinstance(rows, (pa.RecordBatch, pa.Table)):
            table = _conform(rows)
            return self._put_many(table, table.num_rows)
        out = []
        for i, r in enumerate(rows):
            try:
                if isinstance(r, Mapping):
                    unknown = set(r) - set(COLUMNS)
                    if unknown:
                        raise EventError(f"unknown field(s) {', '.join(sorted(unknown))}")
                    if "lock" not in r or "op" not in r:
                        raise EventError("'lock' and 'op' are required")
                    ts = r.get("ts_ns")
                    tid = r.get("tid")
                    out.append(check_row(ts if ts is not None else _time_ns(),
                                          tid if tid is not None else _get_native_id(), r["op"], r["lock"],
                                          *(r.get(k, DEFAULTS[k]) for k in COLUMNS[4:])))
                else:
                    if len(r) != len(COLUMNS):
                        raise EventError(f"a tuple row has {len(COLUMNS)} fields ({', '.join(COLUMNS)})")
                    out.append(check_row(*r))
            except EventError as exc:
                raise EventError(f"row {i}: {exc}") from None
        return self._put_many(out, len(out)) if out else 0

    def send_batch(self, batch: pa.RecordBatch | pa.Table | bytes) -> None:
        """Send one pre-built batch of events (any schema of docs/contract.md section 2, or its Arrow IPC
        stream bytes) whole, as one sequence number (an empty one too): what `lockfleet push`
        does with a file's batches. A stream keeps one schema, so an Agent that sends batches
        records no events."""
        if isinstance(batch, bytes):
            with pa.ipc.open_stream(pa.py_buffer(batch)) as reader:
                rows = reader.read_all().num_rows
            ipc = batch
        else:
            rows = batch.num_rows
            if isinstance(batch, pa.Table):
                batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in batch.columns], schema=batch.schema)
            ipc = to_ipc(batch)
        self._put_many(_Prebuilt(ipc, rows), rows, kind="batches")

    # -- the buffer -------------------------------------------------------------------------

    def _put(self, row: tuple[Any, ...]) -> bool:
        """One checked row into the buffer; raises if the Agent takes no more events."""
        rows = self._rows
        if len(rows) < self._room:
            rows.append(row)
            return True
        if not self._events_ok:
            self._refuse_put()
        return self._put_slow(row, True)  # type: ignore[no-any-return]

    def _offer(self, row: tuple[Any, ...]) -> bool | None:
        """The hot path of instrumentation (no lock taken, never raises): True, taken; False,
        dropped (the buffer is full); None, the Agent failed or is closed (stop offering)."""
        rows = self._rows
        if len(rows) < self._room:
            rows.append(row)
            return True
        if not self._events_ok:
            return None
        return self._put_slow(row, False)

    def _put_slow(self, row: tuple[Any, ...], raising: bool) -> bool | None:
        """The buffer holds a batch's worth (tell the batcher) or the bound is reached."""
        rows = self._rows
        if len(rows) + self._inflight + self._chunk_rows < self.max_buffered_events:
            rows.append(row)
            if not self._kicked:
                self._kick()
            return True
        return self._full(row, raising)

    def _update_room_locked(self) -> None:
        """`_room`: how long `_rows` may grow before the hot path takes the slow path (0 when
        the Agent takes no events). Called whenever what it depends on changes."""
        self._room = (min(self.batch_rows, self.max_buffered_events - self._inflight - self._chunk_rows)
                      if self._events_ok else 0)

    def _kick(self) -> None:
        with self._lock:
            self._kicked = True
            self._cut_cond.notify()

    def _accepted_locked(self) -> int:
        return self._cut_total + self._chunk_rows + len(self._rows)

    def _full(self, row: tuple[Any, ...], raising: bool) -> Any:
        """The buffer is full: wait for room ("block") or drop the event ("drop")."""
        with self._lock:
            try:
                if not self._room_locked(1):
                    return False
            except AgentError:
                if raising:
                    raise
                return None
            self._rows.append(row)
            if len(self._rows) >= self.batch_rows:
                self._kicked = True
                self._cut_cond.notify()
            return True

    def _put_many(self, chunk: Any, n: int, kind: str = "events") -> int:
        if n == 0 and not isinstance(chunk, _Prebuilt):
            return 0
        with self._lock:
            if self._error is not None or self._closing:
                self._refuse_put_locked(kind)
            if kind == "batches" and (self._kind == "events" or self._rows):
                self._refuse_put_locked(kind, "events")
            if kind == "events" and self._kind == "batches":
                self._refuse_put_locked(kind, "batches")
            if not self._room_locked(n):
                return 0
            self._kind = kind
            if kind == "batches":
                self._events_ok = False
            rows = self._rows
            if isinstance(chunk, list):
                rows.extend(chunk)
            else:
                k = len(rows)
                if k:
                    self._chunks.append(rows[:k])
                    del rows[:k]
                    self._chunk_rows += k
                self._chunks.append(chunk)
                self._chunk_rows += n
                if isinstance(chunk, _Prebuilt):
                    self._prebuilt += 1
                    self._prebuilt_total += 1
            if self._prebuilt or self._chunk_rows + len(rows) >= self.batch_rows:
                self._kicked = True
                self._cut_cond.notify()
            self._update_room_locked()
        return n

    def _refuse_put(self) -> None:
        with self._lock:
            self._refuse_put_locked()
        raise AgentError("the agent takes no events")  # not reached

    def _refuse_put_locked(self, kind: str = "events", have: str = "") -> None:
        if self._error is not None:
            raise self._error
        if self._closing:
            raise AgentClosed(f"the agent for host {self.host!r} (stream {self.stream_id}) is closed")
        raise ValueError(f"this agent already sends {have or self._kind}; a stream keeps one schema, so use "
                         f"another Agent for {kind}")

    def _room_locked(self, n: int) -> bool:
        """Under the lock, before `n` events go in: True when they may (waiting for room with
        "block"); False when they are dropped ("drop"). A bound smaller than `n` lets them in
        when nothing else is buffered."""
        def pending() -> int:
            return self._accepted_locked() - self._settled

        if pending() + n <= self.max_buffered_events:
            return True
        if self.overflow == "drop":
            self._dropped += n
            now = _monotonic()
            if now - self._last_drop_warning >= DROP_WARN_EVERY:
                self._last_drop_warning = now
                self._dropped_warned = self._dropped
                dropped, waiting = self._dropped, pending()
                # log outside the lock: a handler's lock may be instrumented, and record into us
                self._lock.release()
                try:
                    log.warning("lockfleet agent %s: buffer full (%d events not yet acked, max_buffered_events="
                                "%d): dropping events; %d dropped so far", self.stream_id, waiting,
                                self.max_buffered_events, dropped)
                finally:
                    self._lock.acquire()
            return False
        while pending() + n > self.max_buffered_events and pending() > 0:
            if self._error is not None or self._closing:
                self._refuse_put_locked()
            self._flush_upto = max(self._flush_upto, self._accepted_locked())   # full: send what there is
            self._kicked = True
            self._cut_cond.notify()
            self._room_cond.wait(0.5)
        if self._error is not None or self._closing:
            self._refuse_put_locked()
        return True

    # -- flush and close --------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> bool:
        """Open the Push call now, before any event, and wait (up to `timeout` seconds) until it
        is made: the threads gRPC runs a call on then exist from here on, named `lockfleet-agent-
        grpc-N`, instead of appearing in the middle of a traced program (which counts its threads).
        Their thread numbers come from a counter of their own, not threading's. Returns whether
        the call was made; events are sent as usual either way."""
        before = set(threading.enumerate())
        saved_counter = getattr(threading, "_counter", None)
        if saved_counter is not None:
            threading._counter = itertools.count(1).__next__  # type: ignore[attr-defined]
        try:
            with self._lock:
                if self._call is None and self._error is None and not self._stop:
                    self._open_early = True
                    self._send_cond.notify_all()
                deadline = _monotonic() + timeout
                while self._open_early and self._error is None and not self._stop:
                    left = deadline - _monotonic()
                    if left <= 0:
                        break
                    self._send_cond.wait(left)
                made = self._call is not None and not self._open_early
        finally:
            if saved_counter is not None:
                threading._counter = saved_counter  # type: ignore[attr-defined]
        for i, t in enumerate(sorted(set(threading.enumerate()) - before, key=lambda t: t.ident or 0), 1):
            if not t.name.startswith(THREAD_PREFIX):
                t.name = f"{THREAD_PREFIX}-grpc-{i}"
        return made

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far now and wait until it is acknowledged. True when it
        is; False if `timeout` (seconds) passed first. Raises the Agent's error if it failed."""
        deadline = None if timeout is None else _monotonic() + timeout
        with self._lock:
            target = self._accepted_locked()
            batches = self._prebuilt_total
            self._flush_upto = max(self._flush_upto, target)
            self._kicked = True
            self._cut_cond.notify()
            while self._settled < target or self._prebuilt_settled < batches:
                if self._error is not None:
                    raise self._error
                left = None if deadline is None else deadline - _monotonic()
                if left is not None and left <= 0:
                    return False
                self._room_cond.wait(0.5 if left is None else min(left, 0.5))
            if self._error is not None:
                raise self._error
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the threads and the call. Raises the Agent's error if it failed, or
        an AgentError if events were still unacknowledged after `timeout` seconds. Events
        recorded after close() began are refused (AgentClosed). Idempotent."""
        with self._lock:
            already = self._closing
            self._closing = True
            self._events_ok = False
            self._update_room_locked()
            self._room_cond.notify_all()      # writers blocked on a full buffer give up
        if already and self._stop:
            with self._lock:
                if self._error is not None:
                    raise self._error
            return
        try:
            done = self.flush(timeout)
        finally:
            self._shutdown()
        if not done:
            with self._lock:
                pending = self._accepted_locked() - self._settled
            raise AgentError(f"closed with {pending} event(s) not acknowledged by {self.connection.target} "
                             f"after {timeout}s (host {self.host}, stream {self.stream_id})")
        with self._lock:
            dropped, warned = self._dropped, self._dropped_warned
        if dropped > warned:
            log.warning("lockfleet agent %s: %d event(s) dropped in all (buffer full)", self.stream_id, dropped)

    def abort(self) -> None:
        """Stop at once: no flush; what is not acked is left behind (resend it with a new Agent
        of the same stream_id and first_seq to deliver it exactly once)."""
        with self._lock:
            self._closing = True
            self._events_ok = False
            self._update_room_locked()
        self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            self._stop = True
            call = self._call
            self._cut_cond.notify_all()
            self._send_cond.notify_all()
            self._room_cond.notify_all()
        self._wake.set()
        if call is not None and call.grpc_call is not None:
            call.grpc_call.cancel()
        for t in (self._cutter, self._sender):
            if t is not threading.current_thread():
                t.join(timeout=10)

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            try:
                self.close(timeout=5)
            except AgentError as err:
                log.warning("%s", err)

    # -- what happened ----------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def error(self) -> AgentError | None:
        return self._error

    def stats(self) -> dict[str, Any]:
        """Counters: events recorded/acked/applied/dropped/refused, batches, reconnects, ..."""
        with self._lock:
            accepted = self._accepted_locked()
            return {"host": self.host, "stream_id": self.stream_id, "target": self.connection.target,
                    "recorded": accepted, "buffered": accepted - self._settled,
                    "acked_events": self._acked_events, "applied_events": self._applied_events,
                    "dropped": self._dropped, "refused_events": self._refused_events,
                    "batches": self._batches_cut, "acked_batches": self._batches_acked,
                    "duplicate_batches": self._duplicates, "refused_batches": self._refused_batches,
                    "unacked_batches": len(self._unacked), "next_seq": self._next_seq,
                    "calls": self._calls, "reconnects": self._reconnects, "connected": self._connected,
                    "new_alerts": list(self._new_alerts), "last_error": self._last_error,
                    "failed": self._error is not None, "closed": self._closing}

    def __repr__(self) -> str:
        return f"Agent(target={self.connection.target!r}, host={self.host!r}, stream_id={self.stream_id!r})"

    # -- the batcher thread -----------------------------------------------------------------

    def _cut_loop(self) -> None:
        first_seen: float | None = None      # when the batcher first saw the buffer non-empty
        try:
            while True:
                with self._lock:
                    while True:
                        if self._error is not None:
                            return
                        n = len(self._rows)
                        buffered = n + self._chunk_rows + self._prebuilt
                        if self._stop and not buffered:
                            return
                        now = _monotonic()
                        first_seen = (first_seen or now) if buffered else None
                        whole = buffered and bool(
                            self._chunks or self._stop or self._closing or self._flush_upto > self._cut_total
                            or now - first_seen >= self.batch_interval)  # type: ignore[operator]
                        if whole or n >= self.batch_rows:
                            break
                        self._kicked = False
                        self._cut_cond.wait(self.batch_interval if first_seen is None
                                            else first_seen + self.batch_interval - now)
                    rows = self._rows
                    if whole:
                        chunks = self._chunks
                        taken = self._chunk_rows + n
                        if n:
                            chunks.append(rows[:n])
                            del rows[:n]
                        self._chunks, self._chunk_rows, self._prebuilt = [], 0, 0
                    else:       # full batches only; the rest waits for more rows or its time
                        taken = n - n % self.batch_rows
                        chunks = [rows[:taken]]
                        del rows[:taken]
                    if n:
                        self._kind = "events"
                    self._cut_total += taken
                    self._inflight += taken
                    self._kicked = False
                    self._update_room_locked()
                    first_seen = now if rows else None
                batches, lost = self._build(chunks)
                with self._lock:
                    for ipc, count, prebuilt in batches:
                        self._unacked.append(_Batch(self._next_seq, ipc, count, prebuilt))
                        self._next_seq += 1
                        self._batches_cut += 1
                    if lost:
                        self._settled += lost
                        self._inflight -= lost
                        self._refused_events += lost
                        self._update_room_locked()
                        self._room_cond.notify_all()
                    self._send_cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - a bug here must not hang the writers
            log.exception("lockfleet agent %s: the batcher failed", self.stream_id)
            self._fail(AgentError(f"the agent's batcher failed: {type(exc).__name__}: {exc}"))

    def _build(self, chunks: list[Any]) -> tuple[list[tuple[bytes, int, bool]], int]:
        """Chunks -> ((ipc, rows, pre-built?) batches of at most batch_rows rows, pre-built
        batches whole; the number of events that could not be encoded)."""
        out: list[tuple[bytes, int, bool]] = []
        group: list[pa.Table] = []
        lost = 0

        def emit() -> None:
            if not group:
                return
            table = pa.concat_tables(group) if len(group) > 1 else group[0]
            group.clear()
            for off in range(0, table.num_rows, self.batch_rows):
                part = table.slice(off, self.batch_rows)
                out.append((to_ipc(_encode(part)), part.num_rows, False))

        for c in chunks:
            if isinstance(c, _Prebuilt):
                emit()
                out.append((c.ipc, c.rows, True))
            elif isinstance(c, pa.Table):
                group.append(c)
            elif c:
                try:
                    group.append(_rows_to_table(c))
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    lost += len(c)
                    log.error("lockfleet agent %s: %d event(s) cannot be encoded, skipped: %s", self.stream_id,
                              len(c), exc)
        emit()
        return out, lost

    # -- the sender thread ------------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = BACKOFF_MIN
        outage_since: float | None = None
        try:
            while True:
                with self._lock:
                    waited = False
                    while not self._unacked and not self._open_early and not self._stop and self._error is None:
                        waited = True
                        self._send_cond.wait()
                    if self._error is not None or self._stop:
                        return
                if waited:
                    outage_since = None
                progress, err, fatal, immediate = self._one_call()
                if progress:
                    outage_since = None
                    backoff = BACKOFF_MIN
                if err is None:
                    continue
                with self._lock:
                    self._last_error = str(err)
                    stopping = self._stop
                if fatal:
                    self._fail(err)
                    return
                if stopping:
                    return
                if immediate:
                    continue
                now = _monotonic()
                if outage_since is None:
                    outage_since = now
                    log.log(self._log_outage, "lockfleet agent %s: %s; resending the unacknowledged batches "
                            "after reconnecting", self.stream_id, err)
                if self.retry_for is not None and now - outage_since >= self.retry_for:
                    self._fail(err)
                    return
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, BACKOFF_MAX)
                with self._lock:
                    self._reconnects += 1
        except BaseException as exc:  # noqa: BLE001
            log.exception("lockfleet agent %s: the sender failed", self.stream_id)
            self._fail(AgentError(f"the agent's sender failed: {type(exc).__name__}: {exc}"))

    def _one_call(self) -> tuple[bool, AgentError | None, bool, bool]:
        """One Push call, resending from the oldest unacked batch. Returns (progress, error,
        fatal, reconnect at once)."""
        progress = False
        state = _Call()
        try:
            channel = open_channel(self.connection)
        except AgentError as exc:
            return False, exc, True, False
        try:
            with self._lock:
                if self._stop or not (self._unacked or self._open_early):
                    return False, None, False, False
                start = self._unacked[0].seq if self._unacked else 0    # the generator moves up to the first
                self._call = state
                self._calls += 1
            call = pb_grpc.IngestStub(channel).Push(self._requests(state, start), metadata=self.connection.metadata)
            state.grpc_call = call
            with self._lock:
                self._open_early = False
                self._send_cond.notify_all()
            with self._lock:
                stop = self._stop
            if stop:
                call.cancel()
            for ack in call:
                with self._lock:
                    self._connected = True
                verdict = self._take_ack(ack)
                if verdict is None:
                    progress = True
                    continue
                err, fatal, immediate = verdict
                return progress, err, fatal, immediate
            with self._lock:
                left = bool(self._unacked) and not self._stop
            if left:
                return progress, Unreachable(f"lockfleet at {self.connection.target} closed the stream"), False, False
            return progress, None, False, False
        except grpc.RpcError as rpc_err:
            with self._lock:
                stopping = self._stop
            if stopping:
                return progress, None, False, False
            err = from_rpc_error(self.connection, rpc_err)
            code = rpc_err.code().name if isinstance(rpc_err, grpc.Call) and rpc_err.code() else ""
            return progress, err, code in FATAL_RPC_CODES, False
        finally:
            with self._lock:
                state.ended = True
                self._connected = False
                if self._call is state:
                    self._call = None
                self._send_cond.notify_all()
            if state.grpc_call is not None:
                state.grpc_call.cancel()
            channel.close()

    def _requests(self, state: _Call, seq: int) -> Iterator[pb.PushBatch]:
        """The request stream of one call: unacked batches from `seq` on, at most `window` of
        them unacknowledged; runs on a thread of gRPC's."""
        while True:
            with self._lock:
                while True:
                    if state.ended or self._error is not None:
                        return
                    if self._stop and not self._unacked:
                        return
                    if self._unacked:
                        first = self._unacked[0].seq
                        i = seq - first
                        if i < 0:
                            seq, i = first, 0
                        if i < len(self._unacked) and i < self.window:
                            b = self._unacked[i]
                            break
                    self._send_cond.wait(0.5)
            yield pb.PushBatch(host=self.host, stream_id=self.stream_id, seq=b.seq, arrow_ipc=b.ipc,
                               dropped_events=self._dropped)
            seq += 1

    def _take_ack(self, ack: pb.PushAck) -> tuple[AgentError, bool, bool] | None:
        """Apply one ack; None when it was a success, else (error, fatal, reconnect at once)."""
        where = self.connection.target
        with self._lock:
            b = self._unacked[0] if self._unacked else None
            if b is None or ack.seq != b.seq:
                return (Unreachable(f"lockfleet at {where} acked seq {ack.seq}, expected "
                                    f"{b.seq if b else 'none'}; reconnecting"), False, False)
            if ack.ok:
                self._unacked.popleft()
                if not b.placeholder:
                    self._prebuilt_settled += b.prebuilt
                    self._settled += b.rows
                    self._inflight -= b.rows
                    self._update_room_locked()
                    self._acked_events += b.rows
                    self._applied_events += ack.events
                    self._batches_acked += 1
                    self._duplicates += ack.duplicate
                    self._new_alerts.extend(ack.new_alerts)
                self._send_cond.notify_all()
                self._room_cond.notify_all()
                callback = self._on_ack if not b.placeholder else None
            else:
                refusal = Refused(ack.code or "UNKNOWN", f"lockfleet at {where} refused batch seq {ack.seq} "
                                  f"({ack.code}{': ' + ack.reason if ack.reason else ''}): {ack.error}", ack.reason)
                if ack.code in RETRY_ACK_CODES:
                    return refusal, False, False
                if ack.reason == "seq_gap" or self.on_refused == "fail" or b.placeholder:
                    return refusal, True, False
                # skip: count it, and put an empty batch of the same seq in its place
                self._unacked[0] = _Batch(b.seq, _empty_ipc(b.ipc), 0, placeholder=True)
                self._prebuilt_settled += b.prebuilt
                self._settled += b.rows
                self._inflight -= b.rows
                self._update_room_locked()
                self._refused_events += b.rows
                self._refused_batches += 1
                self._last_error = str(refusal)
                self._room_cond.notify_all()
                log.warning("lockfleet agent %s: %s; its %d event(s) are skipped", self.stream_id, refusal, b.rows)
                return refusal, False, True
        if callback is not None:
            callback(ack.seq, ack)
        return None

    def _fail(self, err: AgentError) -> None:
        with self._lock:
            if self._error is None:
                self._error = err
                self._last_error = str(err)
            self._events_ok = False
            self._update_room_locked()
            self._cut_cond.notify_all()
            self._send_cond.notify_all()
            self._room_cond.notify_all()
        log.log(self._log_failure, "lockfleet agent %s: giving up: %s", self.stream_id, err)


# -- rows and batches -------------------------------------------------------------------------

def _rows_to_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    # one pass over the tuples in C (about twice as fast as a column at a time)
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(rows, type=_STRUCT))])


def _encode(table: pa.Table) -> pa.RecordBatch:
    """Plain columns -> the wire schema: lock, site and task dictionary-encoded (per batch: the
    dictionary holds the names this batch uses)."""
    table = table.combine_chunks()
    arrays = []
    for f in SCHEMA:
        col = table.column(f.name)
        arr = col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks) if col.num_chunks else \
            pa.array([], f.type)
        if f.name in ("lock", "site", "task"):
            arr = pc.dictionary_encode(arr)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=WIRE_SCHEMA)


def _conform(data: pa.RecordBatch | pa.Table) -> pa.Table:
    """Events given as Arrow -> the Agent's plain schema, checked (EventError naming column/row)."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    if "host" in table.column_names and table.column("host").null_count < table.num_rows:
        raise EventError("column 'host': an Agent speaks for one host; use one Agent per host")
    normalize(table)    # required columns, types, ranges, with the column and row in the message
    cols = []
    for f in SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            cols.append(col.cast(f.type))
        elif f.name in ("site", "task"):
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            cols.append(pa.array([0] * table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _empty_ipc(ipc: bytes) -> bytes:
    """An empty batch with the schema of `ipc`: the stand-in for a refused batch."""
    try:
        with pa.ipc.open_stream(pa.py_buffer(ipc)) as reader:
            schema = reader.schema
    except (pa.ArrowException, OSError, ValueError):
        schema = WIRE_SCHEMA
    return to_ipc(pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema))
