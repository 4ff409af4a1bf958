"""An Agent's buffer and the thread that cuts it into batches.

Events come in as checked rows (`put`, or `offer` from instrumentation's hot path, which takes no
lock: `rows.append` is atomic and only a prefix of `rows` is ever taken out, under the lock), as
Arrow tables or as pre-built batches (`put_many`). The batcher thread cuts a batch when
`batch_rows` events are buffered, `batch_interval` seconds after the first of them, or when a flush
asks, encodes it for the wire and hands it to the sender. At most `max_buffered_events` events are
recorded but not yet acked: past that, "block" makes the writer wait, "drop" drops and counts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .channel import AgentError
from .encoding import encode, encode_ipc, rows_to_table
from .options import AgentOptions
from .state import StreamState, monotonic

if TYPE_CHECKING:
    from .sender import Sender

log = logging.getLogger(__name__)

DROP_WARN_EVERY = 10.0


class AgentClosed(AgentError):
    """The Agent was closed; it takes no more events."""


@dataclass
class Prebuilt:
    """A batch given whole (`send_batch`): sent as one sequence number, never merged."""

    ipc: bytes
    rows: int
    codec: str = ""               # the Arrow IPC compression `ipc` is written with ("" none)


class Batcher:
    """The buffer of one Agent and its batcher thread (see the module's documentation)."""

    def __init__(self, options: AgentOptions, state: StreamState, sender: Sender,
                 fail: Callable[[AgentError], None]) -> None:
        self.state = state
        self.sender = sender
        self.fail = fail
        self.host, self.stream_id = options.host, options.stream_id
        self.batch_rows = options.batch_rows
        self.batch_interval = options.batch_interval
        self.max_buffered_events = options.max_buffered_events
        self.overflow = options.overflow
        self.rows: list[tuple[Any, ...]] = []
        self.chunks: list[list[tuple[Any, ...]] | pa.Table | Prebuilt] = []   # before rows, in order
        self.chunk_rows = 0                         # events in chunks
        self.prebuilt = 0                           # pre-built batches in chunks
        self.room = 0                               # see update_room_locked
        self.kicked = False                         # the batcher was told the buffer holds a batch
        self.kind = ""                              # "events" or "batches": one schema per stream
        self._last_drop_warning = -DROP_WARN_EVERY
        self.dropped_warned = 0
        self.update_room_locked()

    # -- putting events in ---------------------------------------------------------------------

    def put(self, row: tuple[Any, ...]) -> bool:
        """One checked row into the buffer; raises if the Agent takes no more events."""
        rows = self.rows
        if len(rows) < self.room:
            rows.append(row)
            return True
        if not self.state.events_ok:
            self.refuse_put()
        return self._put_slow(row, True)  # type: ignore[return-value]

    def offer(self, row: tuple[Any, ...]) -> bool | None:
        """The hot path of instrumentation (no lock taken, never raises): True, taken; False,
        dropped (the buffer is full); None, the Agent failed or is closed (stop offering)."""
        rows = self.rows
        if len(rows) < self.room:
            rows.append(row)
            return True
        if not self.state.events_ok:
            return None
        return self._put_slow(row, False)

    def _put_slow(self, row: tuple[Any, ...], raising: bool) -> bool | None:
        """The buffer holds a batch's worth (tell the batcher) or the bound is reached."""
        rows = self.rows
        if len(rows) + self.state.inflight + self.chunk_rows < self.max_buffered_events:
            rows.append(row)
            if not self.kicked:
                self.kick()
            return True
        return self._full(row, raising)  # type: ignore[no-any-return]

    def update_room_locked(self) -> None:
        """`room`: how long `rows` may grow before the hot path takes the slow path (0 when
        the Agent takes no events). Called whenever what it depends on changes."""
        st = self.state
        self.room = (min(self.batch_rows, self.max_buffered_events - st.inflight - self.chunk_rows)
                     if st.events_ok else 0)

    def kick(self) -> None:
        with self.state.lock:
            self.kicked = True
            self.state.cut_cond.notify()

    def accepted_locked(self) -> int:
        return self.state.cut_total + self.chunk_rows + len(self.rows)

    def _full(self, row: tuple[Any, ...], raising: bool) -> Any:
        """The buffer is full: wait for room ("block") or drop the event ("drop")."""
        with self.state.lock:
            try:
                if not self.room_locked(1):
                    return False
            except AgentError:
                if raising:
                    raise
                return None
            self.rows.append(row)
            if len(self.rows) >= self.batch_rows:
                self.kicked = True
                self.state.cut_cond.notify()
            return True

    def put_many(self, chunk: Any, n: int, kind: str = "events") -> int:
        """A list of checked rows, a table of the plain schema or a `Prebuilt` batch, whole;
        returns how many events were taken (0 when dropped)."""
        if n == 0 and not isinstance(chunk, Prebuilt):
            return 0
        st = self.state
        with st.lock:
            if st.error is not None or st.closing:
                self.refuse_put_locked(kind)
            if kind == "batches" and (self.kind == "events" or self.rows):
                self.refuse_put_locked(kind, "events")
            if kind == "events" and self.kind == "batches":
                self.refuse_put_locked(kind, "batches")
            if not self.room_locked(n):
                return 0
            self.kind = kind
            if kind == "batches":
                st.events_ok = False
            rows = self.rows
            if isinstance(chunk, list):
                rows.extend(chunk)
            else:
                k = len(rows)
                if k:
                    self.chunks.append(rows[:k])
                    del rows[:k]
                    self.chunk_rows += k
                self.chunks.append(chunk)
                self.chunk_rows += n
                if isinstance(chunk, Prebuilt):
                    self.prebuilt += 1
                    st.prebuilt_total += 1
            if self.prebuilt or self.chunk_rows + len(rows) >= self.batch_rows:
                self.kicked = True
                st.cut_cond.notify()
            self.update_room_locked()
        return n

    def refuse_put(self) -> None:
        with self.state.lock:
            self.refuse_put_locked()
        raise AgentError("the agent takes no events")  # not reached

    def refuse_put_locked(self, kind: str = "events", have: str = "") -> None:
        st = self.state
        if st.error is not None:
            raise st.error
        if st.closing:
            raise AgentClosed(f"the agent for host {self.host!r} (stream {self.stream_id}) is closed")
        raise ValueError(f"this agent already sends {have or self.kind}; a stream keeps one schema, so use "
                         f"another Agent for {kind}")

    def room_locked(self, n: int) -> bool:
        """Under the lock, before `n` events go in: True when they may (waiting for room with
        "block"); False when they are dropped ("drop"). A bound smaller than `n` lets them in
        when nothing else is buffered."""
        st = self.state

        def pending() -> int:
            return self.accepted_locked() - st.settled

        if pending() + n <= self.max_buffered_events:
            return True
        if self.overflow == "drop":
            st.dropped += n
            now = monotonic()
            if now - self._last_drop_warning >= DROP_WARN_EVERY:
                self._last_drop_warning = now
                self.dropped_warned = st.dropped
                dropped, waiting = st.dropped, pending()
                # log outside the lock: a handler's lock may be instrumented, and record into us
                st.lock.release()
                try:
                    log.warning("lockfleet agent %s: buffer full (%d events not yet acked, max_buffered_events="
                                "%d): dropping events; %d dropped so far", self.stream_id, waiting,
                                self.max_buffered_events, dropped)
                finally:
                    st.lock.acquire()
            return False
        while pending() + n > self.max_buffered_events and pending() > 0:
            if st.error is not None or st.closing:
                self.refuse_put_locked()
            st.flush_upto = max(st.flush_upto, self.accepted_locked())   # full: send what there is
            self.kicked = True
            st.cut_cond.notify()
            st.room_cond.wait(0.5)
        if st.error is not None or st.closing:
            self.refuse_put_locked()
        return True

    # -- the batcher thread --------------------------------------------------------------------

    def run(self) -> None:
        """The batcher thread: cut, encode, hand to the sender, until stopped or failed."""
        st = self.state
        first_seen: float | None = None      # when the batcher first saw the buffer non-empty
        try:
            while True:
                with st.lock:
                    while True:
                        if st.error is not None:
                            return
                        n = len(self.rows)
                        buffered = n + self.chunk_rows + self.prebuilt
                        if st.stop and not buffered:
                            return
                        now = monotonic()
                        first_seen = (first_seen or now) if buffered else None
                        whole = buffered and bool(
                            self.chunks or st.stop or st.closing or st.flush_upto > st.cut_total
                            or now - first_seen >= self.batch_interval)  # type: ignore[operator]
                        if whole or n >= self.batch_rows:
                            break
                        self.kicked = False
                        st.cut_cond.wait(self.batch_interval if first_seen is None
                                         else first_seen + self.batch_interval - now)
                    rows = self.rows
                    if whole:
                        chunks = self.chunks
                        taken = self.chunk_rows + n
                        if n:
                            chunks.append(rows[:n])
                            del rows[:n]
                        self.chunks, self.chunk_rows, self.prebuilt = [], 0, 0
                    else:       # full batches only; the rest waits for more rows or its time
                        taken = n - n % self.batch_rows
                        chunks = [rows[:taken]]
                        del rows[:taken]
                    if n:
                        self.kind = "events"
                    st.cut_total += taken
                    st.inflight += taken
                    self.kicked = False
                    self.update_room_locked()
                    first_seen = now if rows else None
                batches, lost = self.build(chunks)
                with st.lock:
                    for ipc, count, prebuilt, codec in batches:
                        self.sender.enqueue_locked(ipc, count, prebuilt, codec)
                    if lost:
                        st.settled += lost
                        st.inflight -= lost
                        st.refused_events += lost
                        self.update_room_locked()
                        st.room_cond.notify_all()
                    st.send_cond.notify_all()
        except BaseException as exc:
            log.exception("lockfleet agent %s: the batcher failed", self.stream_id)
            self.fail(AgentError(f"the agent's batcher failed: {type(exc).__name__}: {exc}"))

    def build(self, chunks: list[Any]) -> tuple[list[tuple[bytes, int, bool, str]], int]:
        """Chunks -> ((ipc, rows, pre-built?, codec) batches of at most batch_rows rows, pre-built
        batches whole; the number of events that could not be encoded). Encoded with the codec
        the sender last chose (see `Sender.codec`)."""
        out: list[tuple[bytes, int, bool, str]] = []
        group: list[pa.Table] = []
        codec = self.sender.codec
        lost = 0

        def emit() -> None:
            if not group:
                return
            table = pa.concat_tables(group) if len(group) > 1 else group[0]
            group.clear()
            for off in range(0, table.num_rows, self.batch_rows):
                part = table.slice(off, self.batch_rows)
                out.append((encode_ipc(encode(part), codec), part.num_rows, False, codec))

        for c in chunks:
            if isinstance(c, Prebuilt):
                emit()
                out.append((c.ipc, c.rows, True, c.codec))
            elif isinstance(c, pa.Table):
                group.append(c)
            elif c:
                try:
                    group.append(rows_to_table(c))
                except (pa.ArrowException, ValueError, TypeError) as exc:
                    lost += len(c)
                    log.error("lockfleet agent %s: %d event(s) cannot be encoded, skipped: %s", self.stream_id,
                              len(c), exc)
        emit()
        return out, lost
