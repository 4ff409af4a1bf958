"""An Agent's sender: the batches cut but not yet acknowledged, and the thread that streams them
on one `IngestService.Push` call at a time.

Each batch gets the next sequence number of the stream. At most `window` batches are unacked on
the wire. When the call fails (the service restarts, the network drops, an ack says UNAVAILABLE),
the sender reconnects with backoff and resends every unacknowledged batch in order with the same
sequence numbers; past `retry_for` seconds of outage the Agent fails. A batch refused for good is
skipped (counted, replaced by an empty batch of the same sequence number) or fails the Agent."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from ...v1 import lockfleet_pb2 as pb
from ...v1 import lockfleet_pb2_grpc as pb_grpc
from ...wire import CODECS_METADATA, choose_codec, parse_codecs, reencode
from .channel import AgentError, Refused, Unreachable, from_rpc_error, open_channel
from .encoding import empty_ipc
from .options import AgentOptions
from .state import THREAD_PREFIX, StreamState, Thread, monotonic

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
RETRY_ACK_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
FATAL_RPC_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "UNIMPLEMENTED",
                   "FAILED_PRECONDITION", "OUT_OF_RANGE", "NOT_FOUND")


@dataclass
class Batch:
    seq: int
    ipc: bytes
    rows: int
    prebuilt: bool = False        # given whole to send_batch
    placeholder: bool = False     # the empty stand-in for a refused batch
    codec: str = ""               # the Arrow IPC compression `ipc` is written with ("" none)


class _Call:
    """State of one Push call, shared by the request generator and the ack reader."""

    def __init__(self) -> None:
        self.ended = False
        self.grpc_call: Any = None
        self.headers = False      # the service's initial metadata (its codecs) was read


class Sender:
    """The unacknowledged batches of one Agent and its sender thread (see the module's
    documentation). `room_changed` is called, under the lock, when acks or refusals free room
    in the buffer; `fail` fails the Agent."""

    def __init__(self, options: AgentOptions, state: StreamState, room_changed: Callable[[], None],
                 fail: Callable[[AgentError], None]) -> None:
        self.state = state
        self.connection = options.connection
        self.host, self.stream_id = options.host, options.stream_id
        self.window = options.window
        self.retry_for = options.retry_for
        self.on_refused = options.on_refused
        self.on_ack = options.on_ack
        # outages are logged (WARNING) unless the caller reports them itself
        self.log_outage = logging.DEBUG if options.quiet else logging.WARNING
        self.room_changed = room_changed
        self.fail = fail
        self.unacked: deque[Batch] = deque()
        self.next_seq = options.first_seq
        self.call: _Call | None = None
        self.compression = options.compression
        self.codec = ""                  # what the service last offered and we chose (read unlocked)
        self.offers_codecs = True        # False: it sent no codec list (an older service)

    def enqueue_locked(self, ipc: bytes, rows: int, prebuilt: bool, codec: str = "") -> None:
        """Under the lock: one more batch to send, with the next sequence number."""
        self.unacked.append(Batch(self.next_seq, ipc, rows, prebuilt, codec=codec))
        self.next_seq += 1
        self.state.batches_cut += 1

    def run(self) -> None:
        """The sender thread: one Push call after another until stopped or failed."""
        st = self.state
        backoff = BACKOFF_MIN
        outage_since: float | None = None
        try:
            while True:
                with st.lock:
                    waited = False
                    while not self.unacked and not st.open_early and not st.stop and st.error is None:
                        waited = True
                        st.send_cond.wait()
                    if st.error is not None or st.stop:
                        return
                if waited:
                    outage_since = None
                progress, err, fatal, immediate = self._one_call()
                if progress:
                    outage_since = None
                    backoff = BACKOFF_MIN
                if err is None:
                    continue
                with st.lock:
                    st.last_error = str(err)
                    stopping = st.stop
                if fatal:
                    self.fail(err)
                    return
                if stopping:
                    return
                if immediate:
                    continue
                now = monotonic()
                if outage_since is None:
                    outage_since = now
                    log.log(self.log_outage, "lockfleet agent %s: %s; resending the unacknowledged batches "
                            "after reconnecting", self.stream_id, err)
                if self.retry_for is not None and now - outage_since >= self.retry_for:
                    self.fail(err)
                    return
                st.wake.wait(backoff)
                st.wake.clear()
                backoff = min(backoff * 2, BACKOFF_MAX)
                with st.lock:
                    st.reconnects += 1
        except BaseException as exc:
            log.exception("lockfleet agent %s: the sender failed", self.stream_id)
            self.fail(AgentError(f"the agent's sender failed: {type(exc).__name__}: {exc}"))

    def cancel(self) -> None:
        """End the current call, if any (the Agent is stopping)."""
        with self.state.lock:
            call = self.call
        if call is not None and call.grpc_call is not None:
            call.grpc_call.cancel()

    def _one_call(self) -> tuple[bool, AgentError | None, bool, bool]:
        """One Push call, resending from the oldest unacked batch. Returns (progress, error,
        fatal, reconnect at once)."""
        st = self.state
        progress = False
        state = _Call()
        try:
            channel = open_channel(self.connection)
        except AgentError as exc:
            return False, exc, True, False
        try:
            with st.lock:
                if st.stop or not (self.unacked or st.open_early):
                    return False, None, False, False
                start = self.unacked[0].seq if self.unacked else 0    # the generator moves up to the first
                self.call = state
                st.calls += 1
            call = pb_grpc.IngestServiceStub(channel).Push(self._requests(state, start), metadata=self.connection.metadata)
            state.grpc_call = call
            self._read_codecs(state, call)
            with st.lock:
                st.open_early = False
                st.send_cond.notify_all()
            with st.lock:
                stop = st.stop
            if stop:
                call.cancel()
            for ack in call:
                with st.lock:
                    st.connected = True
                verdict = self._take_ack(ack)
                if verdict is None:
                    progress = True
                    continue
                err, fatal, immediate = verdict
                return progress, err, fatal, immediate
            with st.lock:
                left = bool(self.unacked) and not st.stop
            if left:
                return progress, Unreachable(f"lockfleet at {self.connection.target} closed the stream"), False, False
            return progress, None, False, False
        except grpc.RpcError as rpc_err:
            with st.lock:
                stopping = st.stop
            if stopping:
                return progress, None, False, False
            err = from_rpc_error(self.connection, rpc_err)
            code = rpc_err.code().name if isinstance(rpc_err, grpc.Call) and rpc_err.code() else ""
            return progress, err, code in FATAL_RPC_CODES, False
        finally:
            with st.lock:
                state.ended = True
                st.connected = False
                if self.call is state:
                    self.call = None
                st.send_cond.notify_all()
            if state.grpc_call is not None:
                state.grpc_call.cancel()
            channel.close()

    def _requests(self, state: _Call, seq: int) -> Iterator[pb.PushRequest]:
        """The request stream of one call: unacked batches from `seq` on, at most `window` of
        them unacknowledged; runs on a thread of gRPC's."""
        st = self.state
        waited_headers = 0.0
        while True:
            with st.lock:
                while True:
                    if state.ended or st.error is not None:
                        return
                    if st.stop and not self.unacked:
                        return
                    if self.unacked:
                        first = self.unacked[0].seq
                        i = seq - first
                        if i < 0:
                            seq, i = first, 0
                        if i < len(self.unacked) and i < self.window:
                            b = self.unacked[i]
                            if state.headers or not self.offers_codecs or self.compression == "none":
                                break
                            # the call's headers name the codecs: wait briefly for them
                            if waited_headers >= 0.25:
                                break
                            waited_headers += 0.05
                            st.send_cond.wait(0.05)
                            continue
                    st.send_cond.wait(0.5)
            codec = self.codec
            if codec != b.codec and b.rows and not b.placeholder:
                ipc = reencode(b.ipc, codec) if codec else b.ipc
                b.ipc, b.codec = ipc, codec      # kept so: a resend does not compress it again
            yield pb.PushRequest(host=self.host, stream_id=self.stream_id, seq=b.seq, arrow_ipc=b.ipc,
                               dropped_events=st.dropped)
            seq += 1

    def _read_codecs(self, state: _Call, call: Any) -> None:
        """Read the call's initial metadata (the codecs the service reads) on a thread of its own:
        an older service sends its headers only with its first ack."""
        if self.compression == "none":
            state.headers = True
            return
        st = self.state

        def read() -> None:
            try:
                metadata = call.initial_metadata() or ()
            except Exception:
                return
            offered = parse_codecs(metadata)
            known = any(k == CODECS_METADATA for k, _v in metadata)
            with st.lock:
                self.offers_codecs = known
                self.codec = choose_codec(self.compression, offered)
                state.headers = True
                st.send_cond.notify_all()

        Thread(target=read, name=f"{THREAD_PREFIX}-headers", daemon=True).start()

    def _take_ack(self, ack: pb.PushResponse) -> tuple[AgentError, bool, bool] | None:
        """Apply one ack; None when it was a success, else (error, fatal, reconnect at once)."""
        st = self.state
        where = self.connection.target
        with st.lock:
            b = self.unacked[0] if self.unacked else None
            if b is None or ack.seq != b.seq:
                return (Unreachable(f"lockfleet at {where} acked seq {ack.seq}, expected "
                                    f"{b.seq if b else 'none'}; reconnecting"), False, False)
            if ack.ok:
                self.unacked.popleft()
                if not b.placeholder:
                    st.prebuilt_settled += b.prebuilt
                    st.settled += b.rows
                    st.inflight -= b.rows
                    self.room_changed()
                    st.acked_events += b.rows
                    st.applied_events += ack.events
                    st.batches_acked += 1
                    st.duplicates += ack.duplicate
                    st.new_alerts.extend(ack.new_alerts)
                st.send_cond.notify_all()
                st.room_cond.notify_all()
                callback = self.on_ack if not b.placeholder else None
            else:
                refusal = Refused(ack.code or "UNKNOWN", f"lockfleet at {where} refused batch seq {ack.seq} "
                                  f"({ack.code}{': ' + ack.reason if ack.reason else ''}): {ack.error}", ack.reason)
                if ack.code in RETRY_ACK_CODES:
                    return refusal, False, False
                if ack.reason == "seq_gap" or self.on_refused == "fail" or b.placeholder:
                    return refusal, True, False
                # skip: count it, and put an empty batch of the same seq in its place
                self.unacked[0] = Batch(b.seq, empty_ipc(b.ipc), 0, placeholder=True)
                st.prebuilt_settled += b.prebuilt
                st.settled += b.rows
                st.inflight -= b.rows
                self.room_changed()
                st.refused_events += b.rows
                st.refused_batches += 1
                st.last_error = str(refusal)
                st.room_cond.notify_all()
                log.warning("lockfleet agent %s: %s; its %d event(s) are skipped", self.stream_id, refusal, b.rows)
                return refusal, False, True
        if callback is not None:
            callback(ack.seq, ack)
        return None
