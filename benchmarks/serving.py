"""Starting `lockfleet serve` for the benchmarks that time it over loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lockfleet() -> list[str]:
    script = Path(sys.executable).with_name("lockfleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lockfleet.cli"]


def wait_healthy(target: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"lockfleet serve exited with {proc.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                time.sleep(0.05)
    raise SystemExit("lockfleet serve did not become healthy")
