"""The Query service: alerts (with filters), counters and dependency chains, read from the engine."""

from __future__ import annotations

import json

import grpc

from ..alerts.model import KINDS, Alert, Link
from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .gateway import Gateway


class QueryServicer(pb_grpc.QueryServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def Alerts(self, request: pb.AlertsRequest, context: grpc.ServicerContext) -> pb.AlertsReply:
        if request.kind and request.kind not in KINDS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown alert kind {request.kind!r}; one of: {', '.join(KINDS)}")
        alerts = self._gateway.read(lambda eng: list(eng.alerts()))
        chosen = [a for a in alerts
                  if (not request.kind or a.kind == request.kind)
                  and (not request.lock or request.lock in a.locks)
                  and (not request.host or request.host in a.hosts)]
        return pb.AlertsReply(alerts=[alert_message(a) for a in chosen])

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsReply:
        stats = dict(self._gateway.read(lambda eng: eng.stats()))
        stats["ingest"] = self._gateway.ingest_stats()
        return pb.StatsReply(json=json.dumps(stats, sort_keys=True, default=_jsonable))

    def Chain(self, request: pb.ChainRequest, context: grpc.ServicerContext) -> pb.ChainReply:
        if not request.src or not request.dst:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chain needs both src and dst lock names")
        locks, links = self._gateway.read(
            lambda eng: (eng.chain(request.src, request.dst), eng.chain_links(request.src, request.dst)))
        if locks is None:
            return pb.ChainReply(found=False)
        return pb.ChainReply(found=True, locks=list(locks), links=[link_message(x) for x in links or ()])


def alert_message(alert: Alert) -> pb.Alert:
    return pb.Alert(id=alert.id, kind=alert.kind, locks=list(alert.locks), hosts=list(alert.hosts),
                    report=alert.render(), json=json.dumps(alert.to_dict(), default=_jsonable))


def link_message(link: Link) -> pb.Link:
    return pb.Link(held=link.held, taken=link.taken, kinds=list(link.kinds), host=link.first_taken.host,
                   task=link.first_taken.task, ts_ns=link.first_taken.ts_ns, held_site=link.first_held.site,
                   taken_site=link.first_taken.site, count=link.count, hosts=list(link.hosts))


def _jsonable(value: object) -> object:
    """numpy scalars (and arrays) from the engine's counters; anything else as text."""
    item = getattr(value, "tolist", None)
    return item() if callable(item) else str(value)
