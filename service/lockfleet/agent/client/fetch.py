"""Client of the Query service: alerts, stats, chains, locks, hosts, the edge export, DOT, the
stream of publications and suppressions, as plain Python values."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from ...v1 import lockfleet_pb2 as pb
from ...v1 import lockfleet_pb2_grpc as pb_grpc
from .channel import Connection, as_connection, from_rpc_error, open_channel

TIMEOUT = 30.0
EXPORT_TIMEOUT = 3600.0
T = TypeVar("T")


@dataclass(frozen=True)
class AlertView:
    """An alert as the service sends it: `data` is Alert.to_dict() (plus "suppression", a dict,
    when the finding is suppressed), `report` its rendering."""

    data: dict[str, Any]
    report: str

    @property
    def suppression(self) -> dict[str, Any] | None:
        s = self.data.get("suppression")
        return s if isinstance(s, dict) else None


@dataclass(frozen=True)
class ChainView:
    found: bool
    locks: list[str]
    links: list[dict[str, Any]]


@dataclass(frozen=True)
class LockInfo:
    found: bool
    name: str
    usage: str = ""
    usages: list[dict[str, Any]] = field(default_factory=list)
    edges_in: list[dict[str, Any]] = field(default_factory=list)
    edges_out: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    count: int = 0
    alerts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class PublicationView:
    """One publication of WatchAlerts: `seq` to resume from, `event` "new" or "grew"."""

    seq: int
    event: str
    alert: AlertView
    new_hosts: list[str]
    new_kinds: list[str]
    published_ns: int

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "event": self.event, "new_hosts": self.new_hosts, "new_kinds": self.new_kinds,
                "published_ns": self.published_ns, "alert": self.alert.data}


def _call(target: str | Connection, fn: Callable[[pb_grpc.QueryStub, tuple[tuple[str, str], ...]], T]) -> T:
    conn = as_connection(target)
    with open_channel(conn) as channel:
        try:
            return fn(pb_grpc.QueryStub(channel), conn.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(conn, err) from None


def _alert_view(a: pb.Alert) -> AlertView:
    return AlertView(data=json.loads(a.json) if a.json else _minimal(a), report=a.report)


def fetch_alerts(target: str | Connection, kind: str = "", lock: str = "", host: str = "", since_ns: int = 0,
                 until_ns: int = 0, alert_id: str = "", hide_suppressed: bool = False) -> list[AlertView]:
    req = pb.AlertsRequest(kind=kind, lock=lock, host=host, since_ns=since_ns, until_ns=until_ns, id=alert_id,
                           hide_suppressed=hide_suppressed)
    reply = _call(target, lambda q, md: q.Alerts(req, timeout=TIMEOUT, metadata=md))
    return [_alert_view(a) for a in reply.alerts]


def fetch_stats(target: str | Connection) -> dict[str, Any]:
    reply = _call(target, lambda q, md: q.Stats(pb.StatsRequest(), timeout=TIMEOUT, metadata=md))
    stats: dict[str, Any] = json.loads(reply.json)
    return stats


def _link_dict(x: pb.Link) -> dict[str, Any]:
    return {"held": x.held, "taken": x.taken, "kinds": list(x.kinds), "host": x.host, "task": x.task,
            "ts_ns": x.ts_ns, "held_site": x.held_site, "taken_site": x.taken_site, "count": x.count,
            "hosts": list(x.hosts)}


def fetch_chain(target: str | Connection, src: str, dst: str) -> ChainView:
    reply = _call(target, lambda q, md: q.Chain(pb.ChainRequest(src=src, dst=dst), timeout=TIMEOUT, metadata=md))
    return ChainView(found=reply.found, locks=list(reply.locks), links=[_link_dict(x) for x in reply.links])


def fetch_witnesses(target: str | Connection, alert_id: str) -> dict[str, Any] | None:
    """The witnesses of finding `alert_id` as a JSON-ready dict ({"id", "kind", "count",
    "inversion", "witnesses": [{"locks", "hosts", "links"}]}), or None for an unknown id."""
    reply = _call(target, lambda q, md: q.Witnesses(pb.WitnessesRequest(id=alert_id), timeout=TIMEOUT, metadata=md))
    if not reply.found:
        return None
    return {"id": alert_id, "kind": reply.kind, "count": reply.count,
            "inversion": ({"held": reply.inversion_held, "taken": reply.inversion_taken}
                          if reply.inversion_held else None),
            "witnesses": [{"locks": list(w.locks), "hosts": list(w.hosts), "links": [_link_dict(x) for x in w.links]}
                          for w in reply.witnesses]}


def fetch_lock(target: str | Connection, name: str) -> LockInfo:
    r = _call(target, lambda q, md: q.Lock(pb.LockRequest(name=name), timeout=TIMEOUT, metadata=md))
    if not r.found:
        return LockInfo(found=False, name=name)

    def link(x: pb.Link) -> dict[str, Any]:
        return {**_link_dict(x), "last_ts_ns": x.last_ts_ns}

    return LockInfo(found=True, name=r.name, usage=r.usage,
                    usages=[{"usage": u.usage, "host": u.host, "task": u.task, "ts_ns": u.ts_ns, "site": u.site}
                            for u in r.usages],
                    edges_in=[link(x) for x in r.edges_in], edges_out=[link(x) for x in r.edges_out],
                    hosts=list(r.hosts), first_ts_ns=r.first_ts_ns, last_ts_ns=r.last_ts_ns, count=r.count,
                    alerts=list(r.alerts))


def fetch_hosts(target: str | Connection) -> list[dict[str, Any]]:
    r = _call(target, lambda q, md: q.Hosts(pb.HostsRequest(), timeout=TIMEOUT, metadata=md))
    return [{"host": h.host, "batches": h.batches, "events": h.events, "streams": h.streams, "threads": h.threads,
             "first_received_ns": h.first_received_ns, "last_received_ns": h.last_received_ns,
             "last_event_ts_ns": h.last_event_ts_ns, "dropped_events": h.dropped_events, "alerts": list(h.alerts)}
            for h in r.hosts]


def export_edges(target: str | Connection, out: Path | str, rows_per_batch: int = 0) -> int:
    """Write the graph's edges as an Arrow IPC stream file; returns the bytes written. The file is
    written beside `out` and renamed into place once complete."""
    out = Path(out)
    tmp = out.with_name(out.name + ".part")

    def run(q: pb_grpc.QueryStub, md: tuple[tuple[str, str], ...]) -> int:
        n = 0
        with open(tmp, "wb") as f:
            for chunk in q.ExportEdges(pb.ExportEdgesRequest(rows_per_batch=rows_per_batch), timeout=EXPORT_TIMEOUT,
                                       metadata=md):
                f.write(chunk.arrow_ipc)
                n += len(chunk.arrow_ipc)
        return n

    try:
        size = _call(target, run)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def fetch_dot(target: str | Connection, alert_id: str, radius: int | None = None, max_edges: int = 0) -> str | None:
    req = pb.DotRequest(id=alert_id, max_edges=max_edges)
    if radius is not None:
        req.radius = radius
    r = _call(target, lambda q, md: q.Dot(req, timeout=TIMEOUT, metadata=md))
    return r.dot if r.found else None


def watch_alerts(target: str | Connection, after_seq: int = 0, from_end: bool = False,
                 timeout: float | None = None) -> Iterator[PublicationView]:
    """Publications with seq > after_seq, as they come (the stream stays open; stop iterating to end it).
    Raises Unreachable or Refused."""
    conn = as_connection(target)
    with open_channel(conn) as channel:
        call = pb_grpc.QueryStub(channel).WatchAlerts(pb.WatchAlertsRequest(after_seq=after_seq, from_end=from_end),
                                                     timeout=timeout, metadata=conn.metadata)
        try:
            for p in call:
                yield PublicationView(seq=p.seq, event=p.event, alert=_alert_view(p.alert), new_hosts=list(p.new_hosts),
                                      new_kinds=list(p.new_kinds), published_ns=p.published_ns)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:   # type: ignore[attr-defined]
                return
            raise from_rpc_error(conn, err) from None
        finally:
            call.cancel()


def _suppression_dict(s: pb.Suppression) -> dict[str, Any]:
    return {"id": s.id, "reason": s.reason, "author": s.author, "ts_ns": s.ts_ns, "blessed": s.blessed}


def suppress(target: str | Connection, alert_id: str, reason: str, author: str = "") -> tuple[dict[str, Any], bool]:
    """Record a suppression; returns it and whether a finding with that id exists now."""
    r = _call(target, lambda q, md: q.Suppress(pb.SuppressRequest(id=alert_id, reason=reason, author=author),
                                               timeout=TIMEOUT, metadata=md))
    return _suppression_dict(r.suppression), r.known


def unsuppress(target: str | Connection, alert_id: str) -> dict[str, Any]:
    r = _call(target, lambda q, md: q.Unsuppress(pb.UnsuppressRequest(id=alert_id), timeout=TIMEOUT, metadata=md))
    return _suppression_dict(r.suppression)


def fetch_suppressions(target: str | Connection) -> tuple[list[dict[str, Any]], list[str]]:
    r = _call(target, lambda q, md: q.Suppressions(pb.SuppressionsRequest(), timeout=TIMEOUT, metadata=md))
    return [_suppression_dict(s) for s in r.suppressions], list(r.blessed)


def _minimal(a: pb.Alert) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "locks": list(a.locks), "hosts": list(a.hosts)}
