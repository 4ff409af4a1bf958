"""The agent SDK: a thread-safe `Agent` that buffers lock events, cuts them into Arrow batches
(by rows and by time, lock/site/task dictionary-encoded per batch), streams them on one
`IngestService.Push` call and keeps every batch until the service acknowledges it.

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
(`PushRequest.dropped_events`, shown per host by the service), reports it in `stats()` and logs a warning (the first drop, then at most every 10 s,
and at close). Dropping events breaks acquire/release pairs, so the service may then see
`bad_unlock` findings and dependencies that did not happen; the count tells how much was lost.

The parts: `AgentOptions` (options.py) holds the settings, checked once; the `Batcher`
(batcher.py) the buffer and the thread that cuts it into batches; the `Sender` (sender.py) the
unacknowledged batches and the thread that streams them; `StreamState` (state.py) what they share.
This module is the public face over them.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...events import EventError
from ...v1 import lockfleet_pb2 as pb
from .batcher import AgentClosed, Batcher, Prebuilt
from .channel import AgentError, Connection
from .encoding import COLUMNS, DEFAULTS, check_row, conform, encode_ipc
from .options import BATCH_INTERVAL, BATCH_ROWS, MAX_BUFFERED, WINDOW, AgentOptions
from .sender import Sender
from .state import THREAD_PREFIX, StreamState, Thread, get_native_id, monotonic, time_ns

log = logging.getLogger(__name__)

__all__ = ["Agent", "AgentClosed", "AgentOptions"]


class Agent:
    """A client of `IngestService.Push` for one host and one stream; see the module's documentation.

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
    `compression` ("auto", "none", "lz4", "zstd"; see `lockfleet.wire`): batches go out with
    Arrow IPC compression when the service says it reads it (auto: LZ4 if offered).
    """

    def __init__(self, target: str | Connection | None = None, host: str | None = None, *,
                 stream_id: str | None = None, first_seq: int = 1,
                 token: str = "", token_file: str | Path | None = None, tls_ca: str | Path | None = None,
                 tls_cert: str | Path | None = None, tls_key: str | Path | None = None, server_name: str = "",
                 batch_rows: int = BATCH_ROWS, batch_interval: float = BATCH_INTERVAL,
                 max_buffered_events: int = MAX_BUFFERED, overflow: str = "block", window: int = WINDOW,
                 retry_for: float | None = None, on_refused: str = "skip", compression: str = "auto",
                 on_ack: Callable[[int, pb.PushResponse], None] | None = None, quiet: bool = False) -> None:
        self.options = options = AgentOptions.make(
            target, host, stream_id=stream_id, first_seq=first_seq, token=token, token_file=token_file,
            tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, server_name=server_name, batch_rows=batch_rows,
            batch_interval=batch_interval, max_buffered_events=max_buffered_events, overflow=overflow,
            window=window, retry_for=retry_for, on_refused=on_refused, compression=compression, on_ack=on_ack, quiet=quiet)
        self.connection = options.connection
        self.host = options.host
        self.stream_id = options.stream_id
        # failures are logged (ERROR) unless the caller reports them itself
        self._log_failure = logging.DEBUG if quiet else logging.ERROR
        self.state = StreamState()
        self.sender = Sender(options, self.state, lambda: self.batcher.update_room_locked(), self._fail)
        self.batcher = Batcher(options, self.state, self.sender, self._fail)
        self._threads = (Thread(target=self.batcher.run, name=f"{THREAD_PREFIX}-batcher", daemon=True),
                         Thread(target=self.sender.run, name=f"{THREAD_PREFIX}-sender", daemon=True))
        for t in self._threads:
            t.start()

    # -- events -----------------------------------------------------------------------------

    def acquire(self, lock: str, tid: int | None = None, mode: int = 0, subclass: int = 0, instance: int = 0,
                irq: int = 0, site: str | None = None, task: str | None = None, ts_ns: int | None = None,
                trylock: bool = False) -> bool:
        """Record an acquisition of the class `lock` (op 0, or 2 with `trylock`: a trylock that
        succeeded). `tid` defaults to the calling thread's native id, `ts_ns` to now. Returns
        False when the event was dropped (overflow="drop" and the buffer is full)."""
        row = check_row(ts_ns if ts_ns is not None else time_ns(), tid if tid is not None else get_native_id(),
                        2 if trylock else 0, lock, mode, subclass, instance, irq, site, task)
        return self.batcher.put(row)

    def release(self, lock: str, tid: int | None = None, instance: int = 0, site: str | None = None,
                task: str | None = None, ts_ns: int | None = None, irq: int = 0) -> bool:
        """Record a release of the class `lock` (op 1); see `acquire`."""
        row = check_row(ts_ns if ts_ns is not None else time_ns(), tid if tid is not None else get_native_id(),
                        1, lock, 0, 0, instance, irq, site, task)
        return self.batcher.put(row)

    def record(self, rows: Iterable[Mapping[str, Any] | tuple[Any, ...]] | pa.RecordBatch | pa.Table) -> int:
        """Record many events at once: a pyarrow RecordBatch or Table with the event columns
        (docs/contract.md section 2; no `host` column: an Agent speaks for one host), or an iterable of
        dicts with the keys of `COLUMNS` (ts_ns and tid default as in `acquire`), or of tuples in
        the order of `COLUMNS`. Checked whole first (EventError naming the column and row).
        Returns how many were taken (0 when dropped)."""
        if isinstance(rows, (pa.RecordBatch, pa.Table)):
            table = conform(rows)
            return self.batcher.put_many(table, table.num_rows)
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
                    out.append(check_row(ts if ts is not None else time_ns(),
                                         tid if tid is not None else get_native_id(), r["op"], r["lock"],
                                         *(r.get(k, DEFAULTS[k]) for k in COLUMNS[4:])))
                else:
                    if len(r) != len(COLUMNS):
                        raise EventError(f"a tuple row has {len(COLUMNS)} fields ({', '.join(COLUMNS)})")
                    out.append(check_row(*r))
            except EventError as exc:
                raise EventError(f"row {i}: {exc}") from None
        return self.batcher.put_many(out, len(out)) if out else 0

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
            codec = self.sender.codec    # known once a call has read the service's codecs (see connect)
            ipc = encode_ipc(batch, codec)
        self.batcher.put_many(Prebuilt(ipc, rows, "" if isinstance(batch, bytes) else codec), rows, kind="batches")

    # -- flush and close --------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> bool:
        """Open the Push call now, before any event, and wait (up to `timeout` seconds) until it
        is made: the threads gRPC runs a call on then exist from here on, named `lockfleet-agent-
        grpc-N`, instead of appearing in the middle of a traced program (which counts its threads).
        Their thread numbers come from a counter of their own, not threading's. Returns whether
        the call was made; events are sent as usual either way."""
        st = self.state
        before = set(threading.enumerate())
        saved_counter = getattr(threading, "_counter", None)
        if saved_counter is not None:
            threading._counter = itertools.count(1).__next__  # type: ignore[attr-defined]
        try:
            with st.lock:
                if self.sender.call is None and st.error is None and not st.stop:
                    st.open_early = True
                    st.send_cond.notify_all()
                deadline = monotonic() + timeout
                while st.open_early and st.error is None and not st.stop:
                    left = deadline - monotonic()
                    if left <= 0:
                        break
                    st.send_cond.wait(left)
                made = self.sender.call is not None and not st.open_early
                # and its headers (the codecs the service reads), so that batches given next are
                # encoded for them; an older service sends none before its first ack
                headers_by = min(deadline, monotonic() + 0.25)
                while made and self.sender.call is not None and not self.sender.call.headers \
                        and self.sender.offers_codecs:
                    left = headers_by - monotonic()
                    if left <= 0:
                        break
                    st.send_cond.wait(left)
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
        st = self.state
        deadline = None if timeout is None else monotonic() + timeout
        with st.lock:
            target = self.batcher.accepted_locked()
            batches = st.prebuilt_total
            st.flush_upto = max(st.flush_upto, target)
            self.batcher.kicked = True
            st.cut_cond.notify()
            while st.settled < target or st.prebuilt_settled < batches:
                if st.error is not None:
                    raise st.error
                left = None if deadline is None else deadline - monotonic()
                if left is not None and left <= 0:
                    return False
                st.room_cond.wait(0.5 if left is None else min(left, 0.5))
            if st.error is not None:
                raise st.error
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the threads and the call. Raises the Agent's error if it failed, or
        an AgentError if events were still unacknowledged after `timeout` seconds. Events
        recorded after close() began are refused (AgentClosed). Idempotent."""
        st = self.state
        with st.lock:
            already = st.closing
            st.closing = True
            st.events_ok = False
            self.batcher.update_room_locked()
            st.room_cond.notify_all()      # writers blocked on a full buffer give up
        if already and st.stop:
            with st.lock:
                if st.error is not None:
                    raise st.error
            return
        try:
            done = self.flush(timeout)
        finally:
            self._shutdown()
        if not done:
            with st.lock:
                pending = self.batcher.accepted_locked() - st.settled
            raise AgentError(f"closed with {pending} event(s) not acknowledged by {self.connection.target} "
                             f"after {timeout}s (host {self.host}, stream {self.stream_id})")
        with st.lock:
            dropped, warned = st.dropped, self.batcher.dropped_warned
        if dropped > warned:
            log.warning("lockfleet agent %s: %d event(s) dropped in all (buffer full)", self.stream_id, dropped)

    def abort(self) -> None:
        """Stop at once: no flush; what is not acked is left behind (resend it with a new Agent
        of the same stream_id and first_seq to deliver it exactly once)."""
        st = self.state
        with st.lock:
            st.closing = True
            st.events_ok = False
            self.batcher.update_room_locked()
        self._shutdown()

    def _shutdown(self) -> None:
        st = self.state
        with st.lock:
            st.stop = True
            st.notify_all_locked()
        st.wake.set()
        self.sender.cancel()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=10)

    def _fail(self, err: AgentError) -> None:
        st = self.state
        with st.lock:
            if st.error is None:
                st.error = err
                st.last_error = str(err)
            st.events_ok = False
            self.batcher.update_room_locked()
            st.notify_all_locked()
        log.log(self._log_failure, "lockfleet agent %s: giving up: %s", self.stream_id, err)

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
        return self.state.dropped

    @property
    def error(self) -> AgentError | None:
        return self.state.error

    def stats(self) -> dict[str, Any]:
        """Counters: events recorded/acked/applied/dropped/refused, batches, reconnects, ..."""
        st = self.state
        with st.lock:
            accepted = self.batcher.accepted_locked()
            return {"host": self.host, "stream_id": self.stream_id, "target": self.connection.target,
                    "recorded": accepted, "buffered": accepted - st.settled,
                    "acked_events": st.acked_events, "applied_events": st.applied_events,
                    "dropped": st.dropped, "refused_events": st.refused_events,
                    "batches": st.batches_cut, "acked_batches": st.batches_acked,
                    "duplicate_batches": st.duplicates, "refused_batches": st.refused_batches,
                    "unacked_batches": len(self.sender.unacked), "next_seq": self.sender.next_seq,
                    "calls": st.calls, "reconnects": st.reconnects, "connected": st.connected,
                    "new_alerts": list(st.new_alerts), "last_error": st.last_error,
                    "failed": st.error is not None, "closed": st.closing}

    def __repr__(self) -> str:
        return f"Agent(target={self.connection.target!r}, host={self.host!r}, stream_id={self.stream_id!r})"
