"""The service process: a gRPC server (Ingest, Query, health, reflection) in front of a Gateway
whose state lives in a data dir, plus its housekeeping threads (snapshots, the archive) and the
metrics endpoint. `Service` runs it in-process (the demo, tests); `serve_forever` is what
`lockfleet serve` runs until SIGTERM or SIGINT.

Data dir layout: `lock` (one service per dir), `log/` (the segment log), `snapshots/`,
`archive/day=YYYY-MM-DD/*.parquet`, `publish/` (the outbox of publications and each sink's cursor),
`alerts.jsonl` (every publication, one JSON a line), `suppressions.json`.

Start: the newest valid snapshot (if the engine can restore one), then the log after it. A snapshot
that is damaged or in a format this build does not read is skipped for the next older one; with
none usable the whole log is replayed, if it still reaches back to lsn 1; if segments were pruned
the service refuses to start rather than serve a partial graph (docs/RELIABILITY.md). Stop
(SIGTERM): health goes NOT_SERVING, new batches are refused with UNAVAILABLE, every admitted batch
is made durable and acked, then the calls end, a last snapshot is written and the log is closed.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
import time
from concurrent import futures
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..address import is_loopback, join_hostport, parse_hostport
from ..engine import Engine
from ..errors import OperationalError, UsageError
from ..findings.model import KINDS
from ..store import (
    Archiver,
    DataDirLocked,
    LogCorrupt,
    SegmentLog,
    load_newest,
    lock_data_dir,
    prune_snapshots,
    snapshot_files,
    write_snapshot,
)
from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .auth import TokenFileError, TokenInterceptor, load_tokens
from .config import ServeConfig
from .console import ConsoleServer, ConsoleViews
from .gateway import Gateway, decode
from .ingest import IngestServicer
from .metrics import DELAY_BUCKETS, MetricsServer, Registry
from .publishing import Publishing
from .query_service import QueryServicer

log = logging.getLogger(__name__)

SERVICES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("IngestService", "QueryService"))
SNAPSHOTS_KEPT = 2
MAX_METADATA_BYTES = 16 * 1024     # request headers (tokens, user agent): more is refused by the transport


class ServiceError(OperationalError, RuntimeError):
    """The service could not start (data dir in use, port taken, damaged log)."""


def tls_files(cfg: ServeConfig) -> tuple[bytes, bytes, bytes | None]:
    """--tls-key, --tls-cert (and --client-ca), checked: (key, cert, ca); raises UsageError naming
    a bad file."""

    def read(path: Path | None, what: str) -> bytes:
        assert path is not None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None
        if b"-----BEGIN" not in data:
            raise UsageError(f"{what} {path}: not a PEM file")
        return data

    key, cert = read(cfg.tls_key, "--tls-key"), read(cfg.tls_cert, "--tls-cert")
    ca = read(cfg.client_ca, "--client-ca") if cfg.client_ca else None
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise UsageError(f"--tls-cert {cfg.tls_cert}: holds no PEM certificate")
    if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca:
        raise UsageError(f"--client-ca {cfg.client_ca}: holds no PEM certificate")
    try:  # the same files through OpenSSL: a readable chain, a key that matches it
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"--tls-cert {cfg.tls_cert} / --tls-key {cfg.tls_key}: not a certificate and its "
                         f"private key ({exc})") from None
    return key, cert, ca


def load_tls(cfg: ServeConfig) -> grpc.ServerCredentials:
    """Fixed server credentials of --tls-cert/--tls-key (and --client-ca), for the cluster's roles;
    `Service` uses credentials that SIGHUP can replace."""
    key, cert, ca = tls_files(cfg)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


def bind(server: grpc.Server, where: str, credentials: grpc.ServerCredentials | None) -> int:
    """Listen on `where` (TLS with `credentials`, else plain); the port, or 0 when it cannot."""
    try:
        if credentials is not None:
            return int(server.add_secure_port(where, credentials))
        return int(server.add_insecure_port(where))
    except RuntimeError:
        return 0


class Service:
    """One lockfleet service: `start()` restores the data dir and listens; `stop()` drains and ends it."""

    def __init__(self, data_dir: str | os.PathLike[str], listen: str = "127.0.0.1:0",
                 config: ServeConfig | None = None, publish: bool = True, **settings: Any) -> None:
        """`publish=False`: no publisher thread (the sinks get nothing); a graph authority in a
        cluster publishes to the bus instead (`lockfleet.cluster.authority`)."""
        self._publish = publish
        cfg = config or ServeConfig(data_dir=Path(data_dir), listen=listen)
        self.config = cfg = replace(cfg, data_dir=Path(data_dir), listen=listen, **settings)
        try:
            self.host, port = parse_hostport(cfg.listen)
        except ValueError as exc:
            raise UsageError(f"--listen {exc}") from None
        if bool(cfg.tls_cert) != bool(cfg.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        if cfg.client_ca and not cfg.tls_cert:
            raise UsageError("--client-ca needs --tls-cert and --tls-key (client certificates need TLS)")
        self.tls = bool(cfg.tls_cert)
        self.mtls = bool(cfg.client_ca)
        if not self.tls and not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {cfg.listen}: without TLS lockfleet listens only on loopback "
                             "(127.0.0.1, ::1, localhost); give --tls-cert and --tls-key")
        if self.tls and not self.mtls and not cfg.token_file and not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {cfg.listen} with TLS but no client authentication: add "
                             "--client-ca (client certificates) and/or --token-file (bearer tokens)")
        self._credentials = self._load_tls() if self.tls else None
        try:
            self._tokens = load_tokens(cfg.token_file) if cfg.token_file else None
        except TokenFileError as exc:
            raise UsageError(str(exc)) from None
        try:
            self._publishing = Publishing(cfg)
        except ValueError as exc:   # a malformed --blessed file, an unusable secret file
            raise UsageError(str(exc)) from None
        self._requested_port = port
        self.data_dir = Path(cfg.data_dir)
        self.port = 0
        self.metrics_port = 0
        self._server: grpc.Server | None = None
        self._health: health.HealthServicer | None = None
        self._gateway: Gateway | None = None
        self._log: SegmentLog | None = None
        self._archiver: Archiver | None = None
        self._metrics: MetricsServer | None = None
        self._console: ConsoleServer | None = None
        self.http_port = 0
        self.http_host = ""
        if cfg.http_listen:
            try:
                self.http_host, self._http_port_requested = parse_hostport(cfg.http_listen)
            except ValueError as exc:
                raise UsageError(f"--http {exc}") from None
            if not self.tls and not is_loopback(self.http_host):
                raise UsageError(f"refusing to serve the console on {cfg.http_listen}: without TLS lockfleet listens "
                                 "only on loopback (127.0.0.1, ::1, localhost); give --tls-cert and --tls-key")
            if self.tls and not self.mtls and not cfg.token_file and not is_loopback(self.http_host):
                raise UsageError(f"refusing to serve the console on {cfg.http_listen} with TLS but no client "
                                 "authentication: add --token-file (bearer tokens) and/or --client-ca")
        self._housekeeper: threading.Thread | None = None
        self._stopping = threading.Event()
        self._snapshot_lock = threading.Lock()
        self._last_snapshot = (0, time.monotonic(), 0)   # lsn, when, bytes applied then
        self._lock_fd = -1
        self._interceptor: TokenInterceptor | None = None
        self.registry = Registry()
        self._define_metrics()

    @property
    def gateway(self) -> Gateway | None:
        """The gateway in front of the engine (None before start and after stop)."""
        return self._gateway

    @property
    def address(self) -> str:
        return join_hostport(self.host, self.port)

    # -- set-up -----------------------------------------------------------------------------

    def _load_tls(self) -> grpc.ServerCredentials:
        """Credentials whose certificate can be replaced while serving (`reload`): each new TLS
        handshake asks `_cert_config_update` whether there is a newer one."""
        self._cert_config = self._read_tls()
        self._cert_update: Any = None
        return grpc.dynamic_ssl_server_credentials(self._cert_config, self._cert_config_update,
                                                   require_client_authentication=bool(self.config.client_ca))

    def _cert_config_update(self) -> Any:
        update, self._cert_update = self._cert_update, None
        return update

    def _read_tls(self) -> Any:
        """The TLS files, checked, as a server certificate configuration; raises UsageError."""
        key, cert, ca = tls_files(self.config)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> list[str]:
        """Re-read the token file and the TLS certificate, key and client CA (SIGHUP): new calls
        and new connections use them, those open go on. A file that does not check out is not
        used (the old one stays) and named in the log. Returns what was reloaded."""
        done = []
        if self._tokens is not None and self._interceptor is not None and self.config.token_file:
            try:
                self._tokens = load_tokens(self.config.token_file)
                self._interceptor.set_tokens(self._tokens)
                done.append("tokens")
            except TokenFileError as exc:
                log.error("reload: keeping the current tokens: %s", exc)
        if self.tls:
            try:
                self._cert_update = self._read_tls()
                done.append("certificate")
            except UsageError as exc:
                log.error("reload: keeping the current certificate: %s", exc)
        log.info("reloaded %s", " and ".join(done) if done else "nothing")
        return done

    def _define_metrics(self) -> None:
        r = self.registry
        self.m_events = r.counter("lockfleet_events_total", "Events applied (acknowledged batches' rows).")
        self.m_batches = r.counter("lockfleet_batches_total", "Batches applied.")
        self.m_duplicates = r.counter("lockfleet_duplicate_batches_total", "Batches resent and acked again, not applied.")
        self.m_rejects = r.counter("lockfleet_rejected_batches_total", "Batches refused, by reason.", ("reason",))
        self.m_denied = r.counter("lockfleet_denied_calls_total", "Calls refused for want of a valid token.",
                                  ("reason",))
        self.m_ack = r.histogram("lockfleet_ack_latency_seconds", "From receiving a batch to sending its ack.")
        self.m_fsync = r.histogram("lockfleet_fsync_latency_seconds", "One fsync of the segment log.")

        def gw(key: str) -> Any:
            return lambda: self._gateway.ingest_stats()[key] if self._gateway else 0

        def engine(key: str) -> Any:
            return lambda: self._gateway.read(lambda e: e.stats()[key]) if self._gateway else 0

        r.gauge("lockfleet_edges", "Lock dependencies in the graph.", engine("edges"))
        r.gauge("lockfleet_lock_classes", "Lock classes in the graph.", engine("locks"))
        r.gauge("lockfleet_alerts", "Findings, deduplicated.", engine("alerts"))
        r.gauge("lockfleet_streams", "Streams (host, stream id) with a high-water mark.", gw("streams"))
        r.gauge("lockfleet_inflight_bytes", "Bytes held by batches not yet durable.", gw("inflight_bytes"))
        r.gauge("lockfleet_inflight_bytes_peak", "Most bytes ever held by batches not yet durable (<= the budget).",
                gw("inflight_bytes_peak"))
        r.gauge("lockfleet_stream_window_peak", "Most batches ever received and not yet acked on one stream.",
                gw("stream_window_peak"))
        r.gauge("lockfleet_log_bytes", "Bytes in the segment log.", gw("log_bytes"))
        r.gauge("lockfleet_log_segments", "Segments in the segment log.", gw("log_segments"))
        r.gauge("lockfleet_log_unavailable", "1 while the segment log cannot be written.",
                lambda: 1 if self._gateway and self._gateway.log_error else 0)
        r.gauge("lockfleet_archive_bytes", "Bytes of Parquet in the archive.",
                lambda: self._archiver.bytes if self._archiver else 0)
        r.gauge("lockfleet_snapshot_lsn", "Log position of the newest snapshot.", lambda: self._last_snapshot[0])
        self.m_published = r.counter("lockfleet_publications_total",
                                     "Publications appended to the outbox, by event (new, grew).", ("event",))
        self.m_deliveries = r.counter("lockfleet_sink_deliveries_total",
                                      "Attempts to deliver a publication to a sink, by sink and result (ok, failed).",
                                      ("sink", "result"))
        self.m_dead_letters = r.counter("lockfleet_sink_dead_letters_total",
                                        "Publications a sink refused for good (HTTP 4xx), dead-lettered, by sink.",
                                        ("sink",))
        r.gauge("lockfleet_outbox_seq", "Seq of the newest publication in the outbox.",
                lambda: self._publishing.outbox.last_seq)
        r.gauges("lockfleet_sink_pending", "Publications not yet acknowledged, by sink.", ("sink",),
                 lambda: self._publishing.publisher.pending() if self._publishing.publisher else {})
        r.gauges("lockfleet_findings", "Findings, deduplicated, by kind.", ("kind",), self._findings_by_kind)
        r.counters("lockfleet_host_events_total", "Events applied, by the host that sent them.", ("host",),
                   lambda: {h: d["events"] for h, d in self._gateway.hosts().items()} if self._gateway else {})
        r.counters("lockfleet_agent_dropped_events_total",
                   "Events agents reported dropping (their buffer was full), by host, since the service started.",
                   ("host",), lambda: {h: d["dropped_events"] for h, d in self._gateway.hosts().items()}
                   if self._gateway else {})
        self.m_apply = r.histogram("lockfleet_batch_apply_seconds",
                                   "Time the engine took to apply one batch (tracker, edges, cycle search).")
        self.m_publication_delay = r.histogram(
            "lockfleet_publication_delay_seconds",
            "From the batch that raised a finding being applied to the finding's first publication.", DELAY_BUCKETS)
        self._raised: dict[str, float] = {}   # finding id -> when its batch was applied (until published)

    def _findings_by_kind(self) -> dict[str, int]:
        if self._gateway is None:
            return {}
        kinds = self._gateway.read(lambda e: [a.kind for a in e.alerts()])
        return {k: kinds.count(k) for k in (*KINDS, *sorted(set(kinds) - set(KINDS)))}

    def _on_publish(self, rec: dict[str, Any]) -> None:
        self.m_published.inc(1, rec["event"])
        raised = self._raised.pop(rec["id"], None)
        if raised is not None and rec["event"] == "new":
            self.m_publication_delay.observe(max(0.0, rec["published_ns"] / 1e9 - raised))

    def _observe(self, what: str, value: Any) -> None:
        if what == "applied":
            self.m_batches.inc()
            self.m_events.inc(value)
        elif what == "duplicate":
            self.m_duplicates.inc()
        elif what == "refused":
            self.m_rejects.inc(1, value)
        elif what == "apply_seconds":
            self.m_apply.observe(value)
        elif what == "raised":
            now = time.time()
            for finding_id in value:
                if len(self._raised) < 10_000:
                    self._raised.setdefault(finding_id, now)

    # -- start ------------------------------------------------------------------------------

    def start(self) -> Service:
        cfg = self.config
        try:
            self._lock_fd = lock_data_dir(self.data_dir)
        except DataDirLocked as exc:
            raise ServiceError(str(exc)) from None
        except OSError as exc:
            raise ServiceError(f"cannot use data dir {self.data_dir}: {exc.strerror or exc}") from None
        try:
            return self._start(cfg)
        except BaseException:
            self._release()
            raise

    def _start(self, cfg: ServeConfig) -> Service:
        lim = cfg.limits
        self._log = SegmentLog(self.data_dir / "log", segment_bytes=cfg.segment_bytes,
                               segment_seconds=cfg.segment_seconds, fsync=cfg.fsync,
                               group_delay=cfg.group_commit_ms / 1000.0)
        self._log.on_fsync = self.m_fsync.observe
        self._gateway = Gateway(Engine(), self._log, lim, observe=self._observe)
        try:
            self._publishing.open()
        except (ValueError, OSError) as exc:
            raise ServiceError(f"cannot open the publishing state (outbox, cursors, suppressions) in {self.data_dir} "
                               f"for reading and appending: {exc}") from None
        workers = lim.max_streams + cfg.max_watchers + 16
        self._interceptor = TokenInterceptor(self._tokens, on_denied=lambda r: self.m_denied.inc(1, r)) \
            if self._tokens else None
        interceptors = [self._interceptor] if self._interceptor else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockfleet-rpc"),
            interceptors=interceptors, maximum_concurrent_rpcs=workers,
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", lim.grpc_message_bytes),
                     ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                     ("grpc.max_send_message_length", lim.grpc_message_bytes)])
        pb_grpc.add_IngestServiceServicer_to_server(
            IngestServicer(self._gateway, lim.max_inflight_per_stream, self.mtls, on_ack=self._on_ack,
                           ack_stall=lim.ack_stall_seconds), server)
        pb_grpc.add_QueryServiceServicer_to_server(QueryServicer(self._gateway, self._publishing, cfg.max_watchers), server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
        where = join_hostport(self.host, self._requested_port)
        self.port = bind(server, where, self._credentials)
        if not self.port:
            raise ServiceError(f"cannot listen on {where}: the address is in use or not available here")
        self._restore()
        self._archiver = Archiver(self.data_dir / "archive", self._log, cfg.archive_retention_days,
                                  decode=lambda ipc: decode(ipc, 1 << 62), interval=cfg.archive_interval)
        self._archiver.on_archived = self._prune_log
        self._log.on_seal = self._archiver.wake
        self._archiver.start()
        if self._publish:
            self._publishing.start(self._gateway, on_publish=self._on_publish,
                                   on_delivery=lambda sink, ok: self.m_deliveries.inc(1, sink, "ok" if ok else "failed"),
                                   on_dead_letter=lambda sink: self.m_dead_letters.inc(1, sink))
        if cfg.metrics_listen:
            try:
                mhost, mport = parse_hostport(cfg.metrics_listen)
                self._metrics = MetricsServer(mhost, mport, self.registry)
            except (ValueError, OSError) as exc:
                raise UsageError(f"--metrics-listen {cfg.metrics_listen}: {exc}") from None
            self._metrics.start()
            self.metrics_port = self._metrics.port
        if cfg.http_listen:
            self._start_console(cfg)
        server.start()
        self._server = server
        for name in ("", *SERVICES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="lockfleet-snapshots", daemon=True)
        self._housekeeper.start()
        security = ("mTLS (client certificates required)" if self.mtls else "TLS" if self.tls
                    else "no TLS: loopback only")
        log.info("listening on %s (data dir %s, %s%s, fsync %s%s)", self.address, self.data_dir, security,
                 ", bearer tokens" if self._tokens else "", cfg.fsync,
                 f", metrics on {parse_hostport(cfg.metrics_listen)[0]}:{self.metrics_port}" if self._metrics else "")
        return self

    def _start_console(self, cfg: ServeConfig) -> None:
        assert self._gateway is not None
        context = None
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
            if cfg.client_ca:
                context.load_verify_locations(str(cfg.client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
        try:
            self._console = ConsoleServer(self.http_host, self._http_port_requested,
                                          ConsoleViews(self._gateway, self._publishing), self._tokens, context,
                                          max_streams=cfg.max_watchers)
        except OSError as exc:
            raise ServiceError(f"cannot serve the console on {cfg.http_listen}: {exc.strerror or exc}") from None
        self._console.start()
        self.http_port = self._console.port
        log.info("web console on %s://%s", "https" if self.tls else "http",
                 join_hostport(self.http_host, self.http_port))

    @property
    def http_address(self) -> str:
        return join_hostport(self.http_host, self.http_port) if self.http_port else ""

    def _restore(self) -> None:
        gw, snapdir = self._gateway, self.data_dir / "snapshots"
        assert gw is not None
        lsn, _, problems = load_newest(snapdir, gw.restore)
        if not lsn:
            self._check_log_reaches_back(problems)
        try:
            report = gw.replay(lsn)
        except (LogCorrupt, OSError) as exc:
            raise ServiceError(f"cannot replay the segment log in {self.data_dir / 'log'}: {exc}") from None
        self._last_snapshot = (lsn, time.monotonic(), gw.counters.bytes)
        log.info("restored %s, then replayed %d batches (%d events) from the log in %.2fs; %d streams%s%s",
                 f"the snapshot at lsn {lsn}" if lsn else "nothing from a snapshot", report.batches, report.events,
                 report.seconds, report.streams,
                 f"; cut a torn tail of {report.torn_bytes} bytes" if report.torn_bytes else "",
                 f"; skipped {report.skipped} unreadable batches" if report.skipped else "")

    def _check_log_reaches_back(self, problems: list[str]) -> None:
        """With no snapshot restored, the state is the whole log's: refuse when it no longer holds
        the start (segments pruned after archiving), rather than serve a partial graph."""
        assert self._log is not None
        try:
            first = self._log.first_lsn()
        except (LogCorrupt, OSError) as exc:
            raise ServiceError(f"cannot read the segment log in {self.data_dir / 'log'}: {exc}") from None
        had_snapshots = bool(snapshot_files(self.data_dir / "snapshots"))
        why = "; ".join(problems) or "there is none"
        if first > 1 or (had_snapshots and first == 0):
            held = f"starts at lsn {first}" if first else "is empty"
            raise ServiceError(
                f"cannot restore {self.data_dir}: no snapshot is usable ({why}) and the log {held} (older "
                "segments were pruned after archiving), so replaying it would give a partial graph; refusing to "
                "start. Run the lockfleet version that wrote the snapshot, or move the data dir aside")
        if problems:
            log.warning("no usable snapshot (%s): rebuilding the state by replaying the whole log from lsn 1", why)

    def _on_ack(self, seconds: float, ok: bool) -> None:
        self.m_ack.observe(seconds)

    # -- housekeeping -----------------------------------------------------------------------

    def _housekeeping(self) -> None:
        cfg = self.config
        while not self._stopping.wait(0.5):
            lsn, when, applied = self._last_snapshot
            gw, lg = self._gateway, self._log
            if gw is None or lg is None:
                return
            due = (cfg.snapshot_seconds > 0 and time.monotonic() - when >= cfg.snapshot_seconds) or \
                  (cfg.snapshot_log_bytes > 0 and gw.counters.bytes - applied >= cfg.snapshot_log_bytes)
            if due and lg.appended_lsn > lsn:
                self.snapshot()

    def snapshot(self, timeout: float = 60.0) -> int:
        """Write a snapshot of the current state; returns its LSN (0 when none was written)."""
        gw, lg = self._gateway, self._log
        if gw is None or lg is None:
            return 0
        with self._snapshot_lock:
            t0 = time.monotonic()
            try:
                lsn, sections = gw.capture()
                if lsn <= self._last_snapshot[0]:
                    self._last_snapshot = (self._last_snapshot[0], time.monotonic(), self._last_snapshot[2])
                    return 0
                if not lg.wait_durable(lsn, timeout):
                    log.warning("snapshot skipped: the log did not reach lsn %d in %.0fs", lsn, timeout)
                    return 0
                path = write_snapshot(self.data_dir / "snapshots", lsn, sections)
            except Exception as exc:  # disk full, or an engine that cannot snapshot: keep serving
                log.error("snapshot failed: %s", exc)
                self._last_snapshot = (self._last_snapshot[0], time.monotonic(), self._last_snapshot[2])
                return 0
            self._last_snapshot = (lsn, time.monotonic(), gw.counters.bytes)
            size = path.stat().st_size
            kept = prune_snapshots(self.data_dir / "snapshots", SNAPSHOTS_KEPT)
            log.info("snapshot at lsn %d: %s, %d bytes, in %.2fs", lsn, path.name, size, time.monotonic() - t0)
        self._prune_log(kept_lsn=min(k.lsn for k in kept) if len(kept) >= SNAPSHOTS_KEPT else 0)
        return lsn

    def _prune_log(self, kept_lsn: int | None = None) -> None:
        """Drop sealed segments that are archived and covered by every kept snapshot."""
        lg, arch = self._log, self._archiver
        if lg is None or arch is None:
            return
        if kept_lsn is None:
            kept = snapshot_files(self.data_dir / "snapshots")[:SNAPSHOTS_KEPT]
            kept_lsn = min(k.lsn for k in kept) if len(kept) >= SNAPSHOTS_KEPT else 0
        for part in lg.sealed():
            if part.seq > arch.archived_through or part.last_lsn > kept_lsn:
                break
            lg.drop(part)

    # -- stop -------------------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Drain and stop: refuse new batches, ack every admitted one, snapshot, close."""
        grace = self.config.grace_seconds if grace is None else grace
        self._stopping.set()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._gateway is not None and self._log is not None:
            self._gateway.begin_shutdown()
            try:
                self._log.wait_durable(self._log.appended_lsn, grace)
            except Exception as exc:
                log.error("shutting down with batches not durable: %s", exc)
        self._publishing.close_watchers()
        if self._console is not None:
            self._console.stop()
            self._console = None
        if self._server is not None:
            self._server.stop(min(grace, 5.0)).wait()
            self._server = None
        if self._housekeeper is not None:
            self._housekeeper.join(5)
            self._housekeeper = None
        if self._gateway is not None and self._log is not None:
            self._publishing.stop(flush_seconds=min(grace, 2.0))
        if self._gateway is not None and self._log is not None and not self._log.error:
            self.snapshot(timeout=grace)
        self._release()
        log.info("stopped")

    def _release(self) -> None:
        self._publishing.stop(flush_seconds=0)
        if self._archiver is not None:
            self._archiver.stop()
            self._archiver = None
        if self._log is not None:
            self._log.close(timeout=self.config.grace_seconds)
            self._log = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if self._console is not None:
            self._console.stop()
            self._console = None
        self._gateway = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(config: ServeConfig) -> None:
    """Run until SIGTERM or SIGINT (SIGHUP: reload tokens and certificate); raises UsageError or
    ServiceError when it cannot start."""
    service = Service(config.data_dir, config.listen, config=config).start()
    done = threading.Event()
    hup = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, draining and shutting down", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _s, _f: hup.set())
    try:
        while not done.wait(0.2):
            if hup.is_set():
                hup.clear()
                service.reload()
    finally:
        service.stop()
