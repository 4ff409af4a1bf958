"""Real `nats-server` processes on loopback: one node, or a JetStream cluster of several, for the
cluster demo, the tests and the benchmarks. Each node gets free ports, its own store dir and log
file; `kill(i)` is a SIGKILL, `start(i)` brings a node back with the same config and store."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from ..errors import OperationalError

MAX_PAYLOAD = 8 << 20


class NatsUnavailable(OperationalError, RuntimeError):
    """No nats-server on PATH, or it does not start."""


def nats_server() -> str:
    for name in ("nats-server", "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        found = shutil.which(name)
        if found:
            return found
    raise NatsUnavailable("nats-server is not installed (Debian: apt-get install nats-server; "
                          "`.ci/install-deps` does it)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsCluster:
    def __init__(self, workdir: Path, nodes: int = 3, name: str = "lockfleet") -> None:
        self.binary = nats_server()
        self.workdir = Path(workdir)
        self.n = nodes
        self.name = name
        self.ports = [_free_port() for _ in range(nodes)]
        self.cluster_ports = [_free_port() for _ in range(nodes)] if nodes > 1 else []
        self.http_ports = [_free_port() for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports]

    @property
    def url(self) -> str:
        """Every node, comma-separated (what `--bus` takes)."""
        return ",".join(self.urls)

    def _config(self, i: int) -> Path:
        store = self.workdir / f"n{i}"
        store.mkdir(parents=True, exist_ok=True)
        lines = [f"server_name: n{i}", f"listen: 127.0.0.1:{self.ports[i]}", f"http: 127.0.0.1:{self.http_ports[i]}",
                 f"max_payload: {MAX_PAYLOAD}",
                 "jetstream {", f"  store_dir: {json.dumps(str(store))}", "  max_memory_store: 268435456",
                 "  max_file_store: 4294967296", "}"]
        if self.n > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for j, p in enumerate(self.cluster_ports) if j != i)
            lines += ["cluster {", f"  name: {self.name}", f"  listen: 127.0.0.1:{self.cluster_ports[i]}",
                      f"  routes: [{routes}]", "}"]
        path = self.workdir / f"n{i}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, i: int | None = None, timeout: float = 30.0) -> NatsCluster:
        which = range(self.n) if i is None else [i]
        for j in which:
            conf = self._config(j)
            with open(self.workdir / f"n{j}.log", "ab") as log:
                self.procs[j] = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        for j in which:
            self._wait(j, deadline)
        return self

    def _wait(self, i: int, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.http_ports[i]}/healthz"
        while time.monotonic() < deadline:
            proc = self.procs[i]
            if proc is None or proc.poll() is not None:
                log = (self.workdir / f"n{i}.log").read_text(errors="replace")[-2000:]
                raise NatsUnavailable(f"nats-server n{i} exited:\n{log}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise NatsUnavailable(f"nats-server n{i} did not become healthy")

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait(10)
            self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                self.procs[i] = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
