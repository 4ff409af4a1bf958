"""Ingest.Push: one PushAck per PushBatch, in order, after the gateway has made it durable.

Each call has a reader thread that admits batches as they arrive (decode, check, apply, append to
the log) and queues their tickets; the call's own thread sends the acks in order as the log makes
the batches durable. The queue holds at most `max_inflight_per_stream` tickets: when it is full
the reader stops reading, and gRPC's flow control holds the client back.
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

log = logging.getLogger("lockfleet.server")
_END = object()


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, gateway: Gateway, inflight: int = 16, mtls: bool = False,
                 on_ack: Callable[[float, bool], None] | None = None) -> None:
        self._gateway = gateway
        self._inflight = max(1, inflight)
        self._mtls = mtls
        self._on_ack = on_ack or (lambda _s, _ok: None)

    def Push(self, request_iterator: Iterator[pb.PushBatch], context: grpc.ServicerContext) -> Iterator[pb.PushAck]:
        peer = peer_of(context, self._mtls)
        tickets: queue.Queue[Ticket | object] = queue.Queue(maxsize=self._inflight)
        done = threading.Event()
        context.add_callback(done.set)

        def put(item: Ticket | object) -> bool:
            while not done.is_set():
                try:
                    tickets.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for msg in request_iterator:
                    ticket = self._gateway.admit(msg.host, msg.stream_id, msg.seq, msg.arrow_ipc, peer)
                    if msg.dropped_events and ticket.outcome is None:
                        self._gateway.note_drops(msg.host, msg.stream_id, msg.dropped_events)
                    if not put(ticket):
                        return
            except grpc.RpcError:
                pass          # the client went away
            except Exception:
                log.exception("ingest reader failed")
            finally:
                put(_END)

        threading.Thread(target=read, name="lockfleet-push-reader", daemon=True).start()
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
                yield pb.PushAck(seq=out.seq, ok=out.ok, duplicate=out.duplicate, code=out.code, error=out.error,
                                 reason=out.reason, events=out.events, new_alerts=list(out.new_alerts))
        finally:
            done.set()
