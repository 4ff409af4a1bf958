"""The service process: a gRPC server (Ingest, Query, health, reflection) in front of a Gateway
whose state lives in a data dir. `Service` runs it in-process (the demo, tests); `serve_forever`
is what `lockfleet serve` runs until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..engine import Engine
from ..store import DataDirLocked, LogCorrupt, SegmentLog, lock_data_dir
from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .address import is_loopback, join_hostport, parse_hostport
from .gateway import Gateway
from .ingest import IngestServicer
from .query import QueryServicer

log = logging.getLogger("lockfleet.server")

MAX_MESSAGE_BYTES = 256 << 20
SERVICES = tuple(pb.DESCRIPTOR.services_by_name[name].full_name for name in ("Ingest", "Query"))


class UsageError(ValueError):
    """The service was asked for something it will not do (bad or non-loopback address)."""


class ServiceError(RuntimeError):
    """The service could not start (data dir in use, port taken, damaged log)."""


class Service:
    """One lockfleet service: `start()` replays the data dir and listens; `stop()` ends it."""

    def __init__(self, data_dir: str | os.PathLike[str], listen: str = "127.0.0.1:0", max_workers: int = 32) -> None:
        try:
            self.host, port = parse_hostport(listen)
        except ValueError as exc:
            raise UsageError(f"--listen {exc}") from None
        if not is_loopback(self.host):
            raise UsageError(f"refusing to listen on {listen}: without TLS lockfleet listens only on loopback "
                             "(127.0.0.1, ::1, localhost)")
        self._requested_port = port
        self.data_dir = Path(data_dir)
        self.port = 0
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._health: health.HealthServicer | None = None
        self._gateway: Gateway | None = None
        self._lock_fd = -1

    @property
    def address(self) -> str:
        return join_hostport(self.host, self.port)

    def start(self) -> Service:
        try:
            self._lock_fd = lock_data_dir(self.data_dir)
        except DataDirLocked as exc:
            raise ServiceError(str(exc)) from None
        except OSError as exc:
            raise ServiceError(f"cannot use data dir {self.data_dir}: {exc.strerror or exc}") from None
        self._gateway = Gateway(Engine(), SegmentLog(self.data_dir / "log"))
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="lockfleet-rpc"),
            options=[("grpc.so_reuseport", 0),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
        pb_grpc.add_IngestServicer_to_server(IngestServicer(self._gateway), server)
        pb_grpc.add_QueryServicer_to_server(QueryServicer(self._gateway), server)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
        try:
            self.port = server.add_insecure_port(join_hostport(self.host, self._requested_port))
        except RuntimeError:
            self.port = 0
        if not self.port:
            self._release()
            raise ServiceError(f"cannot listen on {join_hostport(self.host, self._requested_port)}: "
                               "the address is in use or not available here")
        try:
            report = self._gateway.replay()
        except (LogCorrupt, OSError) as exc:
            self._release()
            raise ServiceError(f"cannot replay the segment log in {self.data_dir / 'log'}: {exc}") from None
        log.info("replayed %d batches (%d events, %d streams) from %s in %.2fs%s%s",
                 report.batches, report.events, report.streams, self.data_dir, report.seconds,
                 f"; cut a torn tail of {report.torn_bytes} bytes" if report.torn_bytes else "",
                 f"; skipped {report.skipped} unreadable batches" if report.skipped else "")
        server.start()
        self._server = server
        for name in ("", *SERVICES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("listening on %s (data dir %s, no TLS: loopback only)", self.address, self.data_dir)
        return self

    def stop(self, grace: float = 2.0) -> None:
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
            log.info("stopped")
        self._release()

    def _release(self) -> None:
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(listen: str, data_dir: str) -> None:
    """Run until SIGTERM or SIGINT; raises UsageError or ServiceError when it cannot start."""
    service = Service(data_dir, listen).start()
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("got %s, shutting down", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not done.wait(1.0):
            pass
    finally:
        service.stop()
