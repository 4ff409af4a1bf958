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
from ..server.config import Limits, ServeConfig
from . import bus

log = logging.getLogger("lockfleet.cluster")


class UsageError(ValueError):
    pass


def _until_signal(stop: Callable[[], None]) -> threading.Event:
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, stopping", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return done


class GatewayServer:
    """gRPC Ingest + health on `listen`, publishing to the bus."""

    def __init__(self, cfg: bus.BusConfig, listen: str, limits: Limits | None = None) -> None:
        self.cfg = cfg
        self.limits = limits or Limits()
        try:
            self.host, self._port = parse_hostport(listen)
        except ValueError as exc:
            raise UsageError(f"--listen {exc}") from None
        if not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {listen}: a bus gateway listens on loopback only (put it "
                             "behind a TLS-terminating load balancer, or run `lockfleet serve` for TLS)")
        self.port = 0
        self.gateway: Any = None
        self._server: Any = None
        self._health: Any = None

    @property
    def address(self) -> str:
        return join_hostport(self.host, self.port)

    def start(self) -> "GatewayServer":
        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        from ..server.ingest import IngestServicer
        from ..v1 import lockfleet_pb2_grpc as pb_grpc
        from .gateway import BusGateway

        self.gateway = BusGateway(self.cfg, self.limits).start()
        lim = self.limits
        workers = lim.max_streams + 8
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lockfleet-gw"),
                             maximum_concurrent_rpcs=workers,
                             options=[("grpc.so_reuseport", 0),
                                      ("grpc.max_receive_message_length", lim.grpc_message_bytes)])
        pb_grpc.add_IngestServicer_to_server(IngestServicer(self.gateway, lim.max_inflight_per_stream), server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        where = join_hostport(self.host, self._port)
        try:
            self.port = server.add_insecure_port(where)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.gateway.stop()
            raise UsageError(f"cannot listen on {where}: the address is in use or not available here")
        server.start()
        self._server = server
        for name in ("", "lockfleet.v1.Ingest"):
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


def run_gateway(cfg: bus.BusConfig, listen: str, limits: Limits) -> None:
    server = GatewayServer(cfg, listen, limits).start()
    done = _until_signal(server.stop)
    try:
        while not done.wait(0.2):
            pass
    finally:
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


def run_worker(cfg: bus.BusConfig, worker_id: str = "") -> None:
    from .worker import Worker

    _run_async(lambda: Worker(cfg, worker_id))


def run_authority(cfg: bus.BusConfig, serve: ServeConfig, name: str,
                  on_publish: Callable[[Any], None] | None = None) -> None:
    from ..server import Service
    from .authority import Authority

    service = Service(serve.data_dir, serve.listen, config=serve, publish=False).start()
    try:
        _run_async(lambda: Authority(cfg, service, name, on_publish))
    finally:
        service.stop()


def run_archiver(cfg: bus.BusConfig, data_dir: Any, interval: float) -> None:
    from .archive import BusArchiver

    _run_async(lambda: BusArchiver(cfg, data_dir, interval))
