"""Ingest.Push: one PushAck per PushBatch, in order, after the gateway has made it durable."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .gateway import Gateway


class IngestServicer(pb_grpc.IngestServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def Push(self, request_iterator: Iterator[pb.PushBatch], context: grpc.ServicerContext) -> Iterator[pb.PushAck]:
        for batch in request_iterator:
            out = self._gateway.push(batch.host, batch.stream_id, batch.seq, batch.arrow_ipc)
            yield pb.PushAck(seq=out.seq, ok=out.ok, duplicate=out.duplicate, code=out.code,
                             error=out.error, events=out.events, new_alerts=list(out.new_alerts))
