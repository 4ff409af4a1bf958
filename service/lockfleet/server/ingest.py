"""IngestService.Push: one PushResponse per PushRequest, in order, after the gateway has made it durable.

Each call has a reader thread that prepares batches as they arrive (decode, check) and an applier
thread that applies them in order (engine, append to the log) and queues their tickets; the call's own thread sends the acks in order as the log makes
the batches durable. At most `max_inflight_per_stream` batches are received and not yet acked on
one call: the reader takes a slot of that window before it reads the next message and the ack
gives it back, so when the window is full the reader stops reading and gRPC's flow control holds
the client back. The most ever outstanding is reported to the gateway (`window_peak`). The call's initial metadata
names the Arrow IPC compression codecs the service reads (`lockfleet.wire`), so that an agent
compresses its batches only for a service that reads them.

A client that stops reading its acks (while it still holds the call open) would hold a stream
slot and a thread forever: when one ack has waited `ack_stall` seconds to be taken by the client,
the call is cancelled (the batches it had admitted are applied and durable; a resend after
reconnecting is acked as a duplicate).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from ..wire import CODECS_METADATA, available_codecs
from .auth import peer_of
from .gateway import Gateway, Prepared, Ticket

log = logging.getLogger(__name__)


class _End:
    """The end of a call's queue."""


_END = _End()


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, gateway: Gateway, inflight: int = 16, mtls: bool = False,
                 on_ack: Callable[[float, bool], None] | None = None, ack_stall: float = 60.0) -> None:
        self._gateway = gateway
        self._inflight = max(1, inflight)
        self._ack_stall = ack_stall
        self._mtls = mtls
        self._on_ack = on_ack or (lambda _s, _ok: None)

    def Push(self, request_iterator: Iterator[pb.PushRequest], context: grpc.ServicerContext) -> Iterator[pb.PushResponse]:
        peer = peer_of(context, self._mtls)
        # the Arrow IPC compression codecs this service reads, before any ack (see lockfleet.wire)
        context.send_initial_metadata(((CODECS_METADATA, ",".join(available_codecs())),))
        tickets: queue.Queue[Ticket | _End] = queue.Queue()
        window = threading.BoundedSemaphore(self._inflight)
        outstanding = [0]
        count = threading.Lock()
        done = threading.Event()
        context.add_callback(done.set)
        sending_since = [0.0]        # when the ack being handed to the client was yielded (0: none)

        def take_slot() -> bool:
            while not done.is_set():
                if window.acquire(timeout=0.5):
                    return True
                since = sending_since[0]
                if since and time.monotonic() - since > self._ack_stall:
                    self._gateway.note_call(0, stalled=True)
                    log.warning("ending a Push call from %s: its client took no ack for %.0fs (it does not read "
                                "its acks)", context.peer(), time.monotonic() - since)
                    done.set()
                    context.cancel()
                    return False
            return False

        def read() -> None:
            try:
                messages = iter(request_iterator)
                while take_slot():
                    try:
                        msg = next(messages)
                    except StopIteration:
                        window.release()
                        return
                    with count:
                        outstanding[0] += 1
                        n = outstanding[0]
                    self._gateway.note_window(n)
                    if staged:
                        prepared.put((self._gateway.prepare(msg.host, msg.stream_id, msg.seq, msg.arrow_ipc, peer),
                                      msg.dropped_events, msg.host, msg.stream_id))
                    else:   # a gateway that admits in one step (the cluster's)
                        prepared.put((self._gateway.admit(msg.host, msg.stream_id, msg.seq, msg.arrow_ipc, peer),
                                      msg.dropped_events, msg.host, msg.stream_id))
            except grpc.RpcError:
                pass          # the client went away
            except Exception:
                log.exception("ingest reader failed")
            finally:
                prepared.put(_END)

        def apply() -> None:
            try:
                while True:
                    item = prepared.get()
                    if isinstance(item, _End):
                        return
                    staged_or_admitted, dropped, host, sid = item
                    ticket = (self._gateway.apply(staged_or_admitted) if isinstance(staged_or_admitted, Prepared)
                              else staged_or_admitted)
                    if dropped and ticket.outcome is None:
                        self._gateway.note_drops(host, sid, dropped)
                    tickets.put(ticket)
            except Exception:
                log.exception("ingest applier failed")
                done.set()
            finally:
                tickets.put(_END)

        # two stages per call: the reader decodes and checks batch i + 1 while the applier applies
        # batch i (the engine's core runs without the GIL), in the stream's order
        # (the prepared batch, or the ticket of one admitted in one step; dropped events; host; stream)
        prepared: queue.Queue[tuple[Prepared | Ticket, int, str, str] | _End] = queue.Queue()
        staged = hasattr(self._gateway, "prepare")
        threading.Thread(target=read, name="lockfleet-push-reader", daemon=True).start()
        threading.Thread(target=apply, name="lockfleet-push-applier", daemon=True).start()
        self._gateway.note_call(+1)
        try:
            while True:
                try:
                    item = tickets.get(timeout=1.0)
                except queue.Empty:
                    if done.is_set():
                        return
                    continue
                if isinstance(item, _End):
                    return
                out = self._gateway.complete(item)
                self._on_ack(time.monotonic() - item.received, out.ok)
                with count:
                    outstanding[0] -= 1
                window.release()
                sending_since[0] = time.monotonic()
                yield pb.PushResponse(seq=out.seq, ok=out.ok, duplicate=out.duplicate, code=out.code, error=out.error,
                                 reason=out.reason, events=out.events, new_alerts=list(out.new_alerts))
                sending_since[0] = 0.0
        finally:
            done.set()
            self._gateway.note_call(-1)
