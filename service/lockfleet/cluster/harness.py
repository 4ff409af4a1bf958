"""A whole cluster on loopback, each role a real process: a NATS JetStream cluster (`natsd`),
gateways (`lockfleet serve --bus`), workers, authorities, an archiver; health waits, kills, and
reads of the bus. The cluster demo, the tests and the scale benchmark use it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import OperationalError
from . import bus
from .natsd import NatsCluster, _free_port


class HarnessError(OperationalError, RuntimeError):
    pass


class Role:
    """One `lockfleet ...` process; stderr to `<workdir>/<name>.log`, stdout to `<name>.out`."""

    def __init__(self, name: str, args: list[str], workdir: Path, port: int = 0) -> None:
        self.name, self.args, self.workdir, self.port = name, args, workdir, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Role:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as err, open(self.workdir / f"{self.name}.out", "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "lockfleet.cli", *self.args], stdout=out, stderr=err,
                                         env=env)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def wait_healthy(self, timeout: float = 60.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if not self.alive():
                    raise HarnessError(f"{self.name} exited:\n{self.log()[-3000:]}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise HarnessError(f"{self.name} did not become healthy in {timeout:.0f}s:\n{self.log()[-3000:]}")

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if not self.alive():
                raise HarnessError(f"{self.name} exited:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise HarnessError(f"{self.name}: no {text!r} in its log in {timeout:.0f}s:\n{self.log()[-3000:]}")


class Cluster:
    def __init__(self, workdir: Path, nodes: int = 3, partitions: int = 8, lease: float = 2.0) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nats = NatsCluster(self.workdir / "nats", nodes)
        self.partitions = partitions
        self.replicas = min(3, nodes)
        self.lease = lease
        self.roles: dict[str, Role] = {}

    def bus_args(self) -> list[str]:
        return ["--bus", self.nats.url, "--partitions", str(self.partitions), "--replicas", str(self.replicas),
                "--lease", str(self.lease)]

    def bus_config(self) -> bus.BusConfig:
        return bus.BusConfig(servers=tuple(self.nats.urls), partitions=self.partitions, replicas=self.replicas,
                             lease=self.lease)

    def start_nats(self) -> None:
        self.nats.workdir.mkdir(parents=True, exist_ok=True)
        self.nats.start()

    def gateway(self, name: str) -> Role:
        port = _free_port()
        role = Role(name, ["serve", "--listen", f"127.0.0.1:{port}", *self.bus_args()], self.workdir, port)
        self.roles[name] = role.start()
        return role

    def worker(self, name: str) -> Role:
        role = Role(name, ["worker", "--id", name, *self.bus_args()], self.workdir)
        self.roles[name] = role.start()
        return role

    def authority(self, name: str) -> Role:
        port = _free_port()
        role = Role(name, ["authority", "--name", name, "--data-dir", str(self.workdir / name), "--listen",
                           f"127.0.0.1:{port}", "--print", *self.bus_args()], self.workdir, port)
        self.roles[name] = role.start()
        return role

    def archiver(self, name: str = "archiver") -> Role:
        role = Role(name, ["bus-archive", "--data-dir", str(self.workdir / name), "--interval", "0.5",
                           *self.bus_args()], self.workdir)
        self.roles[name] = role.start()
        return role

    def stop(self) -> None:
        for role in self.roles.values():
            role.stop()
        self.nats.stop()

    # -- reading the bus ---------------------------------------------------------------------

    def read_stream(self, stream: str, subject: str) -> list[tuple[dict[str, str], bytes]]:
        """Every message of a stream (headers, data), in stream order."""
        return asyncio.run(_read_stream(self.bus_config(), stream, subject))

    def published_alerts(self) -> list[dict[str, Any]]:
        return [json.loads(data) for _h, data in self.read_stream(bus.ALERTS, "lf.alert.>")]


async def _read_stream(cfg: bus.BusConfig, stream: str, subject: str) -> list[tuple[dict[str, str], bytes]]:
    """By direct gets, one sequence number after another (no consumer to place: works while a
    node of the cluster is down), retrying while the stream elects a leader."""
    from nats.js.errors import NotFoundError

    nc = await bus.connect(cfg, "lockfleet-reader")
    try:
        js = nc.jetstream(timeout=5.0)
        for _attempt in range(20):
            try:
                info = await js.stream_info(stream)
                break
            except NotFoundError:
                return []
            except Exception:
                await asyncio.sleep(0.5)
        else:
            raise HarnessError(f"cannot read stream {stream}")
        out: list[tuple[dict[str, str], bytes]] = []
        if not info.state.messages:
            return out
        seq = max(1, info.state.first_seq)
        failures = 0
        while seq <= info.state.last_seq:
            try:
                msg = await js.get_msg(stream, seq)
            except NotFoundError:
                seq += 1
                continue
            except Exception as exc:
                failures += 1
                if failures > 40:
                    raise HarnessError(f"cannot read {stream} seq {seq}: {exc!r}") from None
                await asyncio.sleep(0.5)
                continue
            if _matches(msg.subject, subject):
                out.append((dict(msg.headers or {}), msg.data))
            seq += 1
        return out
    finally:
        await nc.close()


def _matches(subject: str, pattern: str) -> bool:
    a, b = subject.split("."), pattern.split(".")
    for i, tok in enumerate(b):
        if tok == ">":
            return len(a) > i
        if i >= len(a) or (tok != "*" and tok != a[i]):
            return False
    return len(a) == len(b)
