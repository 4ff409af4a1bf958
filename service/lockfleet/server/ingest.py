"""Ingest.Push: one PushAck per PushBatch, in order, after the gateway has made it durable.

Each call has a reader thread that admits batches as they arrive (decode, check, apply, append to
the log) and queues their tickets; the call's own thread sends the acks in order as the log makes
the batches durable. At most `max_inflight_per_stream` batches are received and not yet acked on
one call: the reader takes a slot of that window before it reads the next message and the ack
gives it back, so when the window is full the reader stops reading and gRPC's flow control holds
the client back. The most ever outstanding is reported to the gateway (`window_peak`).

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
from .auth import peer_of
from .gateway import Gateway, Ticket

log = logging.getLogger(__name__)
_END = object()


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, gateway: Gateway, inflight: int = 16, mtls: bool = False,
                 on_ack: Callable[[float, bool], None] | None = None, ack_stall: float = 60.0) -> None:
        self._gateway = gateway
        self._inflight = max(1, inflight)
        self._ack_stall = ack_stall
        self._mtls = mtls
        self._on_ack = on_ack or (lambda _s, _ok: None)

    def Push(self, request_iterator: Iterator[pb.PushBatch], context: grpc.ServicerContext) -> Iterator[pb.PushAck]:
        peer = peer_of(context, self._mtls)
        tickets: queue.Queue[Ticket | object] = queue.Queue()
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
                    ticket = self._gateway.admit(msg.host, msg.stream_id, msg.seq, msg.arrow_ipc, peer)
                    if msg.dropped_events and ticket.outcome is None:
                        self._gateway.note_drops(msg.host, msg.stream_id, msg.dropped_events)
                    tickets.put(ticket)
            except grpc.RpcError:
                pass          # the client went away
            except Exception:
                log.exception("ingest reader failed")
            finally:
                tickets.put(_END)

        threading.Thread(target=read, name="lockfleet-push-reader", daemon=True).start()
        self._gateway.note_call(+1)
        try:
            while True:
                try:
                    item = tickets.get(timeout=1.0)
                except queue.Empty:
                    if done.is_set():
                        return
                    continue
                if item is _END:
                    return
                assert isinstance(item, Ticket)
                out = self._gateway.complete(item)
                self._on_ack(time.monotonic() - item.received, out.ok)
                with count:
                    outstanding[0] -= 1
                window.release()
                sending_since[0] = time.monotonic()
                yield pb.PushAck(seq=out.seq, ok=out.ok, duplicate=out.duplicate, code=out.code, error=out.error,
                                 reason=out.reason, events=out.events, new_alerts=list(out.new_alerts))
                sending_since[0] = 0.0
        finally:
            done.set()
            self._gateway.note_call(-1)
