"""Shared fixtures: the `lockfleet` command as a subprocess, a real `lockfleet serve` on a free
loopback port with a temporary data dir (started, health-checked, torn down), and the demo's
seed scenario written to event files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CLI_TIMEOUT = 120.0
START_TIMEOUT = 60.0


def lockfleet_command() -> list[str]:
    """The console script next to this Python, else the same entry point through -c."""
    script = Path(sys.executable).with_name("lockfleet")
    if script.exists():
        return [str(script)]
    found = shutil.which("lockfleet")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from lockfleet.cli import main; sys.exit(main())"]


def run_lockfleet(*args: str | os.PathLike[str], timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*lockfleet_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lockfleet_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `lockfleet ARGS...`; returns the CompletedProcess (text stdout/stderr)."""
    return run_lockfleet


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def unused_target() -> str:
    """A loopback HOST:PORT where nothing listens (as far as anyone can tell)."""
    return f"127.0.0.1:{free_port()}"


class ServeProcess:
    """`lockfleet serve` as a subprocess on a loopback port; stderr goes to `log_path`."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*lockfleet_command(), "serve", "--listen", self.target, "--data-dir", str(self.data_dir)],
                stdout=subprocess.DEVNULL, stderr=log)
        self._wait_serving()

    def _wait_serving(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"lockfleet serve exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        self.stop()
        pytest.fail(f"lockfleet serve did not become healthy in {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
        return proc.returncode

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def lockfleet_server(tmp_path: Path) -> Iterator[ServeProcess]:
    """A running `lockfleet serve` with a fresh data dir; `.target`, `.restart()`, `.stop()`."""
    server = ServeProcess(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def scenario_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """host -> an event file of its part of the seed scenario (Parquet for some hosts, Arrow IPC
    file or stream format for the others), in the order the hosts should be pushed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lockfleet.demo import seed_scenario

    out = tmp_path_factory.mktemp("scenario")
    files: dict[str, Path] = {}
    for i, (host, table) in enumerate(seed_scenario().items()):
        if i % 3 == 0:
            path = out / f"{host}.parquet"
            pq.write_table(table, path)
        elif i % 3 == 1:
            path = out / f"{host}.arrow"
            with pa.ipc.new_file(path, table.schema) as writer:
                writer.write_table(table)
        else:
            path = out / f"{host}.arrows"
            with pa.ipc.new_stream(path, table.schema) as writer:
                writer.write_table(table)
        files[host] = path
    return files
