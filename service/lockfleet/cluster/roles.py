"""The cluster's processes, each run until SIGTERM or SIGINT: a gateway (gRPC Ingest and health in
front of `BusGateway`), a derivation worker, a graph authority (a `server.Service` fed from the
bus, see `authority`), and the archiver (see `archive`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from ..address import is_loopback, join_hostport, parse_hostport
from ..errors import UsageError
from ..server.config import Limits, ServeConfig
from . import bus

log = logging.getLogger(__name__)


def _until_signal(stop: Callable[[], None]) -> threading.Event:
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done


class HealthServer:
    """A plain gRPC server with the health service alone (`--health-listen`), for probes that
    cannot speak TLS (Kubernetes' grpc probes): it says SERVING while `ok()` holds."""

    def __init__(self, listen: str, ok: Callable[[], bool]) -> None:
        self.listen, self.ok = listen, ok
        self._server: Any = None
        self._health: Any = None
        self._stop = threading.Event()

    def start(self) -> HealthServer:
        import grpc
        from grpc_health.v1 import health, health_pb2_grpc

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lockfleet-health"))
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        try:
            host, port = parse_hostport(self.listen)
            if not self._server.add_insecure_port(join_hostport(host, port)):
                raise ValueError("address in use")
        except (ValueError, RuntimeError) as exc:
            raise UsageError(f"--health-listen {self.listen}: {exc}") from None
        self._server.start()
        threading.Thread(target=self._watch, name="lockfleet-health", daemon=True).start()
        return self

    def _watch(self) -> None:
        from grpc_health.v1 import health_pb2

        while not self._stop.wait(0.5):
            status = health_pb2.HealthCheckResponse.SERVING if self.ok() else health_pb2.HealthCheckResponse.NOT_SERVING
            self._health.set("", status)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stop(1)


class GatewayServer:
    """gRPC Ingest + health on `listen`, publishing to the bus. `serve` carries the TLS and token
    settings (as `lockfleet serve` has them: without TLS, loopback only)."""

    def __init__(self, cfg: bus.BusConfig, listen: str, limits: Limits | None = None,
                 serve: ServeConfig | None = None) -> None:
        self.cfg = cfg
        self.limits = limits or Limits()
        self.serve = serve
        try:
            self.host, self._port = parse_hostport(listen)
        except ValueError as exc:
            raise UsageError(f"--listen {exc}") from None
        tls = bool(serve and serve.tls_cert)
        if serve and bool(serve.tls_cert) != bool(serve.tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        if not tls and not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {listen}: without TLS a gateway listens only on loopback; "
                             "give --tls-cert and --tls-key")
        if tls and serve and not serve.client_ca and not serve.token_file and not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {listen} with TLS but no client authentication: add "
                             "--client-ca and/or --token-file")
        self._credentials = None
        self._tokens = None
        if serve is not None:
            from ..server.app import UsageError as ServeUsage
            from ..server.app import load_tls
            from ..server.auth import TokenFileError, load_tokens

            try:
                self._credentials = load_tls(serve) if tls else None
                self._tokens = load_tokens(serve.token_file) if serve.token_file else None
            except (ServeUsage, TokenFileError) as exc:
                raise UsageError(str(exc)) from None
        self.mtls = bool(serve and serve.client_ca)
        self.port = 0
        self.gateway: Any = None
        self._server: Any = None
        self._health: Any = None

    @property
    def address(self) -> str:
        return join_hostport(self.host, self.port)

    def start(self) -> GatewayServer:
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        from ..server.auth import TokenInterceptor
        from ..server.ingest import IngestServicer
        from ..v1 import lockfleet_pb2_grpc as pb_grpc
        from .gateway import BusGateway

        self.gateway = BusGateway(self.cfg, self.limits).start()
        lim = self.limits
        workers = lim.max_streams + 8
        interceptors = [TokenInterceptor(self._tokens)] if self._tokens else []
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockfleet-gw"),
                             maximum_concurrent_rpcs=workers, interceptors=interceptors,
                             options=[("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", lim.grpc_message_bytes)])
        pb_grpc.add_IngestServiceServicer_to_server(IngestServicer(self.gateway, lim.max_inflight_per_stream, self.mtls),
                                             server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        where = join_hostport(self.host, self._port)
        from ..server.app import bind
        self.port = bind(server, where, self._credentials)
        if not self.port:
            self.gateway.stop()
            raise UsageError(f"cannot listen on {where}: the address is in use or not available here")
        server.start()
        self._server = server
        for name in ("", "lockfleet.v1.IngestService"):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("gateway on %s publishing to %s (%d partitions)", self.address, ", ".join(self.cfg.servers),
                 self.cfg.partitions)
        return self

    def stop(self) -> None:
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self.gateway is not None:
            self.gateway.begin_shutdown()
        if self._server is not None:
            self._server.stop(5).wait()
        if self.gateway is not None:
            self.gateway.stop()


def run_gateway(cfg: bus.BusConfig, listen: str, limits: Limits, serve: ServeConfig | None = None,
                health_listen: str = "") -> None:
    server = GatewayServer(cfg, listen, limits, serve).start()
    probe = HealthServer(health_listen, lambda: not server.gateway._closing).start() if health_listen else None
    done = _until_signal(server.stop)
    try:
        while not done.wait(0.2):
            pass
    finally:
        if probe is not None:
            probe.stop()
        server.stop()


def _run_async(make: Callable[[], Any]) -> None:
    """Run `make()`'s `run()` until a signal sets its `stopping` event."""

    async def main() -> None:
        role = make()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, role.stopping.set)
        await role.run()

    asyncio.run(main())


def _probed(health_listen: str, make: Callable[[], Any]) -> None:
    probe = HealthServer(health_listen, lambda: True).start() if health_listen else None
    try:
        _run_async(make)
    finally:
        if probe is not None:
            probe.stop()


def run_worker(cfg: bus.BusConfig, worker_id: str = "", health_listen: str = "") -> None:
    from .worker import Worker

    _probed(health_listen, lambda: Worker(cfg, worker_id))


def run_authority(cfg: bus.BusConfig, serve: ServeConfig, name: str,
                  on_publish: Callable[[Any], None] | None = None, health_listen: str = "") -> None:
    from ..server import Service
    from .authority import Authority

    service = Service(serve.data_dir, serve.listen, config=serve, publish=False).start()
    probe = HealthServer(health_listen, lambda: service.gateway is not None).start() if health_listen else None
    try:
        _run_async(lambda: Authority(cfg, service, name, on_publish))
    finally:
        if probe is not None:
            probe.stop()
        service.stop()


def run_archiver(cfg: bus.BusConfig, data_dir: Any, interval: float, health_listen: str = "") -> None:
    from .archive import BusArchiver

    _probed(health_listen, lambda: BusArchiver(cfg, data_dir, interval))
