"""Client of the Query service: alerts, stats and chains, as plain Python values."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .channel import Connection, as_connection, from_rpc_error, open_channel

TIMEOUT = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class AlertView:
    """An alert as the service sends it: `data` is Alert.to_dict(), `report` its rendering."""

    data: dict[str, Any]
    report: str


@dataclass(frozen=True)
class ChainView:
    found: bool
    locks: list[str]
    links: list[dict[str, Any]]


def _call(target: str | Connection, fn: Callable[[pb_grpc.QueryStub, tuple[tuple[str, str], ...]], T]) -> T:
    conn = as_connection(target)
    with open_channel(conn) as channel:
        try:
            return fn(pb_grpc.QueryStub(channel), conn.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(conn, err) from None


def fetch_alerts(target: str | Connection, kind: str = "", lock: str = "", host: str = "") -> list[AlertView]:
    reply = _call(target, lambda q, md: q.Alerts(pb.AlertsRequest(kind=kind, lock=lock, host=host), timeout=TIMEOUT,
                                                 metadata=md))
    return [AlertView(data=json.loads(a.json) if a.json else _minimal(a), report=a.report) for a in reply.alerts]


def fetch_stats(target: str | Connection) -> dict[str, Any]:
    reply = _call(target, lambda q, md: q.Stats(pb.StatsRequest(), timeout=TIMEOUT, metadata=md))
    stats: dict[str, Any] = json.loads(reply.json)
    return stats


def fetch_chain(target: str | Connection, src: str, dst: str) -> ChainView:
    reply = _call(target, lambda q, md: q.Chain(pb.ChainRequest(src=src, dst=dst), timeout=TIMEOUT, metadata=md))
    links = [{"held": x.held, "taken": x.taken, "kinds": list(x.kinds), "host": x.host, "task": x.task,
              "ts_ns": x.ts_ns, "held_site": x.held_site, "taken_site": x.taken_site, "count": x.count,
              "hosts": list(x.hosts)} for x in reply.links]
    return ChainView(found=reply.found, locks=list(reply.locks), links=links)


def _minimal(a: pb.Alert) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "locks": list(a.locks), "hosts": list(a.hosts)}
