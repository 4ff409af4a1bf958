"""The Query service: alerts (with filters and their suppression), counters, dependency chains, one
lock, the hosts, the graph's edges as Arrow, a finding's neighbourhood as DOT, the stream of
publications, and suppressions.

Every read goes through `Gateway.read`, which serialises it with ingest: each one is short (the
findings, one path, one lock's edges), and the edge export reads the edge table in pieces of
`rows_per_batch` with the edge count fixed at its start, so a long export never holds ingest up
for long. What a read returns is one consistent view (the export: exactly the dependencies that
existed when it began, each with its evidence as of when its piece was read).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any, NoReturn

import grpc
import pyarrow as pa

from ..findings.dot import finding_dot
from ..findings.model import KINDS, Alert, Link, matches
from ..publishing.suppress import Suppression, SuppressionError
from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from ..wirestats import stats_to_message
from . import graphview
from .gateway import Gateway
from .publishing import Publishing

log = logging.getLogger(__name__)
EXPORT_ROWS = 8192
MAX_EXPORT_ROWS = 1 << 20
WATCH_POLL = 1.0


class QueryServicer(pb_grpc.QueryServiceServicer):
    def __init__(self, gateway: Gateway, publishing: Publishing | None = None, max_watchers: int = 16) -> None:
        self._gateway = gateway
        self._publishing = publishing
        self._max_watchers = max_watchers
        self._watchers = 0
        self._watch_lock = threading.Lock()

    # -- findings ---------------------------------------------------------------------------

    def _suppression(self, alert: Alert) -> Suppression | None:
        return self._publishing.suppression_of(alert) if self._publishing else None

    def Alerts(self, request: pb.AlertsRequest, context: grpc.ServicerContext) -> pb.AlertsResponse:
        if request.kind and request.kind not in KINDS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown alert kind {request.kind!r}; one of: {', '.join(KINDS)}")
        if request.since_ns and request.until_ns and request.until_ns <= request.since_ns:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "until must be after since")
        if request.id:
            one = self._gateway.read(lambda eng: eng.alert(request.id))
            alerts = [one] if one is not None else []
        else:
            alerts = self._gateway.read(lambda eng: list(eng.alerts()))
        out = []
        for a in alerts:
            if not matches(a, request.kind, request.host, request.lock, request.since_ns, request.until_ns):
                continue
            sup = self._suppression(a)
            if sup is not None and request.hide_suppressed:
                continue
            out.append(alert_message(a, sup))
        return pb.AlertsResponse(alerts=out)

    def Stats(self, request: pb.StatsRequest, context: grpc.ServicerContext) -> pb.StatsResponse:
        stats: dict[str, Any] = dict(self._gateway.read(lambda eng: eng.stats()))
        stats["ingest"] = self._gateway.ingest_stats()
        if self._publishing is not None:
            stats["publishing"] = self._publishing.status()
        return stats_to_message(stats)

    def Chain(self, request: pb.ChainRequest, context: grpc.ServicerContext) -> pb.ChainResponse:
        if not request.src or not request.dst:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "chain needs both src and dst lock names")
        locks, links = self._gateway.read(
            lambda eng: (eng.chain(request.src, request.dst), eng.chain_links(request.src, request.dst)))
        if locks is None:
            return pb.ChainResponse(found=False)
        return pb.ChainResponse(found=True, locks=list(locks), links=[link_message(x) for x in links or ()])

    def Witnesses(self, request: pb.WitnessesRequest, context: grpc.ServicerContext) -> pb.WitnessesResponse:
        if not request.id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "witnesses needs a finding id")
        a = self._gateway.read(lambda eng: eng.alert(request.id))
        if a is None:
            return pb.WitnessesResponse(found=False)
        held, taken = a.inversion or ("", "")
        return pb.WitnessesResponse(
            found=True, kind=a.kind, count=a.count if a.inversion else 0, inversion_held=held,
            inversion_taken=taken,
            witnesses=[pb.Witness(locks=list(w.locks), hosts=list(w.hosts), links=[link_message(x) for x in w.links])
                       for w in a.witnesses])

    # -- the graph --------------------------------------------------------------------------

    def Lock(self, request: pb.LockRequest, context: grpc.ServicerContext) -> pb.LockResponse:
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "lock needs a lock class name")
        view = self._gateway.read(lambda eng: graphview.lock_view(eng, request.name))
        if view is None:
            return pb.LockResponse(found=False, name=request.name)
        return pb.LockResponse(
            found=True, name=view.name, usage=view.usage,
            usages=[pb.LockUsage(usage=u.usage, host=u.first.host, task=u.first.task, ts_ns=u.first.ts_ns,
                                 site=u.first.site) for u in view.usages],
            edges_in=[link_message(x) for x in view.edges_in], edges_out=[link_message(x) for x in view.edges_out],
            hosts=list(view.hosts), first_ts_ns=view.first_ts_ns, last_ts_ns=view.last_ts_ns, count=view.count,
            alerts=list(view.alerts))

    def Hosts(self, request: pb.HostsRequest, context: grpc.ServicerContext) -> pb.HostsResponse:
        alerts = self._gateway.read(lambda eng: [(a.id, a.hosts) for a in eng.alerts()])
        hosts = self._gateway.hosts()
        out = []
        for name in sorted(hosts):
            h = hosts[name]
            out.append(pb.HostInfo(host=name, batches=h["batches"], events=h["events"], streams=h["streams"],
                                   threads=h["threads"], first_received_ns=h["first_ns"],
                                   last_received_ns=h["last_ns"], last_event_ts_ns=h["last_event_ts_ns"],
                                   dropped_events=h.get("dropped_events", 0),
                                   alerts=[i for i, hs in alerts if name in hs]))
        return pb.HostsResponse(hosts=out)

    def ExportEdges(self, request: pb.ExportEdgesRequest, context: grpc.ServicerContext) -> Iterator[pb.ExportEdgesResponse]:
        rows = request.rows_per_batch or EXPORT_ROWS
        if rows > MAX_EXPORT_ROWS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"rows_per_batch is at most {MAX_EXPORT_ROWS}")
        total = self._gateway.read(graphview.edge_count)
        buf = io.BytesIO()

        def take() -> bytes:
            data = buf.getvalue()
            buf.seek(0)
            buf.truncate()
            return data

        with pa.ipc.new_stream(buf, graphview.EXPORT_EDGE_SCHEMA) as writer:
            yield pb.ExportEdgesResponse(arrow_ipc=take())
            for start in range(0, total, rows):
                if not context.is_active():
                    return
                stop = min(total, start + rows)
                batch = self._gateway.read(functools.partial(graphview.edge_rows, start=start, stop=stop))
                writer.write_batch(batch)
                yield pb.ExportEdgesResponse(arrow_ipc=take())
        tail = take()
        if tail:
            yield pb.ExportEdgesResponse(arrow_ipc=tail)

    def Dot(self, request: pb.DotRequest, context: grpc.ServicerContext) -> pb.DotResponse:
        if not request.id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "dot needs a finding id")
        radius = request.radius if request.HasField("radius") else 1

        def read(eng):  # type: ignore[no-untyped-def]
            alert = eng.alert(request.id)
            if alert is None:
                return None
            return alert, graphview.neighbourhood(eng, alert, radius, request.max_edges or 60)

        found = self._gateway.read(read)
        if found is None:
            return pb.DotResponse(found=False)
        alert, (links, truncated, usage) = found
        return pb.DotResponse(found=True, dot=finding_dot(alert, links, usage, truncated))

    # -- publications -----------------------------------------------------------------------

    def WatchAlerts(self, request: pb.WatchAlertsRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchAlertsResponse]:
        outbox = self._need_publishing(context).outbox
        with self._watch_lock:
            if self._watchers >= self._max_watchers:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"already {self._watchers} WatchAlerts streams open (--max-watchers)")
            self._watchers += 1
        try:
            after = outbox.last_seq if request.from_end else request.after_seq
            while context.is_active() and not outbox.readers_closed:
                for rec in outbox.wait_after(after, WATCH_POLL, limit=256, reader=True):
                    yield pb.WatchAlertsResponse(publication=publication_message(rec))
                    after = rec["seq"]
        finally:
            with self._watch_lock:
                self._watchers -= 1

    # -- suppressions -----------------------------------------------------------------------

    def _need_publishing(self, context: grpc.ServicerContext) -> Publishing:
        if self._publishing is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this service does not publish")
        return self._publishing

    def Suppress(self, request: pb.SuppressRequest, context: grpc.ServicerContext) -> pb.SuppressResponse:
        pub = self._need_publishing(context)
        try:
            s = pub.suppressions.add(request.id, request.reason, request.author)
        except SuppressionError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot save the suppression: {exc.strerror or exc}")
        known = self._gateway.read(lambda eng: eng.alert(request.id) is not None)
        log.info("suppressed %s by %s: %s", s.id, s.author or "unknown", s.reason)
        pub.wake()
        return pb.SuppressResponse(suppression=suppression_message(s), known=known)

    def Unsuppress(self, request: pb.UnsuppressRequest, context: grpc.ServicerContext) -> pb.UnsuppressResponse:
        pub = self._need_publishing(context)
        try:
            s = pub.suppressions.remove(request.id)
        except OSError as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot save the suppressions: {exc.strerror or exc}")
        if s is None:
            blessed = self._gateway.read(lambda eng: eng.alert(request.id))
            why = pub.suppression_of(blessed) if blessed is not None else None
            if why is not None and why.blessed:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"{request.id} is suppressed by the {why.reason} of {why.author}; edit that file")
            _abort(context, grpc.StatusCode.NOT_FOUND, f"no suppression recorded for {request.id!r}")
        known = self._gateway.read(lambda eng: eng.alert(request.id) is not None)
        log.info("unsuppressed %s (was: %s)", s.id, s.reason)
        pub.wake()
        return pb.UnsuppressResponse(suppression=suppression_message(s), known=known)

    def Suppressions(self, request: pb.SuppressionsRequest, context: grpc.ServicerContext) -> pb.SuppressionsResponse:
        pub = self._need_publishing(context)
        return pb.SuppressionsResponse(suppressions=[suppression_message(s) for s in pub.suppressions.all()],
                                    blessed=pub.blessed.orders())


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """context.abort, which raises (its type says so here: grpc has no type information)."""
    context.abort(code, message)
    raise AssertionError("grpc's context.abort returned")


def suppression_message(s: Suppression) -> pb.Suppression:
    return pb.Suppression(id=s.id, reason=s.reason, author=s.author, ts_ns=s.ts_ns, blessed=s.blessed)


def alert_message(alert: Alert, suppression: Suppression | None = None) -> pb.Alert:
    data = alert.to_dict()
    if suppression is not None:   # otherwise exactly Alert.to_dict(), as the contract has it
        data["suppression"] = suppression.to_dict()
    msg = pb.Alert(id=alert.id, kind=alert.kind, locks=list(alert.locks), hosts=list(alert.hosts),
                   report=alert.render(), json=json.dumps(data, default=_jsonable), seq=alert.seq,
                   first_ts_ns=alert.first_ts_ns, host_count=alert.host_count or len(alert.hosts))
    if suppression is not None:
        msg.suppression.CopyFrom(suppression_message(suppression))
    return msg


def publication_message(rec: dict[str, Any]) -> pb.Publication:
    a = rec["alert"]
    alert = pb.Alert(id=a["id"], kind=a["kind"], locks=a["locks"], hosts=a["hosts"], report=rec.get("report", ""),
                     json=json.dumps(a, default=_jsonable), seq=a.get("seq", 0), first_ts_ns=a.get("first_ts_ns", 0),
                     host_count=a.get("host_count", len(a["hosts"])))
    return pb.Publication(seq=rec["seq"], event=rec["event"], alert=alert, new_hosts=rec.get("new_hosts", []),
                          new_kinds=rec.get("new_kinds", []), published_ns=rec["published_ns"])


def link_message(link: Link) -> pb.Link:
    return pb.Link(held=link.held, taken=link.taken, kinds=list(link.kinds), host=link.first_taken.host,
                   task=link.first_taken.task, ts_ns=link.first_taken.ts_ns, held_site=link.first_held.site,
                   taken_site=link.first_taken.site, count=link.count, hosts=list(link.hosts),
                   last_ts_ns=link.last_ts_ns, host_count=link.host_count or len(link.hosts))


def _jsonable(value: object) -> object:
    """numpy scalars (and arrays) from the engine's counters; anything else as text."""
    item = getattr(value, "tolist", None)
    return item() if callable(item) else str(value)
