"""Shared fixtures: the `lockfleet` command as a subprocess, a real `lockfleet serve` on a free
loopback port with a temporary data dir (started, health-checked, torn down), and the demo's
seed scenario written to event files.

Real components (openssl, Graphviz, chromium, Alertmanager, a tmpfs mount, the shared corpus,
networkx) are asked for through `require`: where one is missing the test is skipped with the
reason, except under CI=true, where it fails (and so does any other skip, see
`pytest_runtest_makereport`): a CI run cannot pass by leaving things out. Hypothesis runs with a
fixed seed (reproducible) except under CI=true, where the seed rotates and is printed (see
`pytest_configure`); LOCKFLEET_HYPOTHESIS_SEED=N replays one."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CLI_TIMEOUT = 120.0
START_TIMEOUT = 60.0
IN_CI = os.environ.get("CI") == "true"
SHARED_DIR = Path(os.environ.get("LOCKFLEET_SHARED") or Path(__file__).resolve().parents[2] / "shared")


def require(present: object, why: str) -> None:
    """Skip the test saying `why` when `present` is falsy; under CI=true fail instead."""
    if present:
        return
    if IN_CI:
        pytest.fail(f"{why}, and CI=true: it must be there (.ci/install-deps installs what tests need)",
                    pytrace=False)
    pytest.skip(why)


def require_program(name: str, package: str) -> str:
    """The path of program `name` (Debian package `package`), or skip/fail as `require` does."""
    found = shutil.which(name)
    require(found, f"{name} is not on PATH (Debian: apt-get install {package})")
    return str(found)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared folder (corpus of real lockdep reports, the seed report)."""
    require(SHARED_DIR.is_dir(), f"no shared folder at {SHARED_DIR} (set LOCKFLEET_SHARED)")
    return SHARED_DIR


needs_shared = pytest.mark.usefixtures("shared_dir")


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis' seed: fixed (0) by default, a fresh one under CI=true or
    HYPOTHESIS_PROFILE=thorough, printed either way; LOCKFLEET_HYPOTHESIS_SEED=N (or pytest
    --hypothesis-seed=N) chooses it."""
    import random

    chosen = config.getoption("hypothesis_seed", None)
    given = os.environ.get("LOCKFLEET_HYPOTHESIS_SEED")
    if chosen is not None:
        seed = int(chosen)
    elif given:
        seed = int(given)
    elif IN_CI or os.environ.get("HYPOTHESIS_PROFILE") == "thorough":
        seed = random.SystemRandom().randrange(1 << 32)
    else:
        seed = 0
    config.option.hypothesis_seed = seed
    config._lockfleet_hypothesis_seed = seed  # type: ignore[attr-defined]
    try:
        from hypothesis import core

        core.global_force_seed = seed   # whichever of this hook and hypothesis' own runs first
    except ImportError:
        pass


def pytest_report_header(config: pytest.Config) -> list[str]:
    seed = getattr(config, "_lockfleet_hypothesis_seed", None)
    lines = [f"CI={'true: a skipped test fails' if IN_CI else 'unset: tests missing a component skip, saying why'}"]
    if seed is not None:
        lines.append(f"hypothesis seed {seed} (replay: LOCKFLEET_HYPOTHESIS_SEED={seed})")
    return lines


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CI=true a skip (any: require, importorskip, skipif) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    seed = getattr(config, "_lockfleet_hypothesis_seed", None)
    skipped = len(terminalreporter.stats.get("skipped", []))
    if skipped:
        terminalreporter.write_line(f"{skipped} test(s) skipped: the reasons are listed above (SKIPPED lines); "
                                    "under CI=true they would fail")
    if seed is not None:
        terminalreporter.write_line(f"hypothesis seed {seed} (replay: LOCKFLEET_HYPOTHESIS_SEED={seed})")


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
    """`lockfleet serve` as a subprocess on a loopback port; stderr goes to `log_path`.

    `args` are extra `serve` options; `credentials` (grpc.ChannelCredentials) are what the health
    check connects with when the server speaks TLS. The port is chosen once and kept across
    restarts, so that a client's target stays valid."""

    def __init__(self, data_dir: Path, log_path: Path, args: tuple[str, ...] | list[str] = (),
                 credentials: object = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.args = tuple(str(a) for a in args)
        self.credentials = credentials
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*lockfleet_command(), "serve", "--listen", self.target, "--data-dir", str(self.data_dir), *self.args],
                stdout=subprocess.DEVNULL, stderr=log)
        self._wait_serving()

    def channel(self):  # -> grpc.Channel
        import grpc

        if self.credentials is not None:
            return grpc.secure_channel(self.target, self.credentials)
        return grpc.insecure_channel(self.target)

    def _wait_serving(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        with self.channel() as channel:
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
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: no drain, no last snapshot, whatever it was doing."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait(timeout=20)

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


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """`serve_factory(*args, credentials=None, name="serve", start=True, data_dir=None)`: a (started)
    `lockfleet serve` with extra options and its own data dir (under tmp_path unless given); every
    one made is stopped at the end, whatever happened."""
    made: list[ServeProcess] = []

    def make(*args: str | os.PathLike[str], credentials: object = None, name: str = "serve",
             start: bool = True, data_dir: Path | None = None) -> ServeProcess:
        server = ServeProcess(data_dir or tmp_path / f"{name}-data", tmp_path / f"{name}.log",
                              [str(a) for a in args], credentials)
        made.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


@dataclass(frozen=True)
class Certs:
    """PEM files made for the tests (openssl): a CA, the server's certificate (CN=localhost, SANs
    localhost and 127.0.0.1), agents' certificates for hosts h1 and h2, a relay's
    (OU=lockfleet-relay), and a certificate for h1 signed by another CA."""

    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()

    def client(self, who: str | None = None):  # -> grpc.ChannelCredentials
        import grpc

        if who is None:
            return grpc.ssl_channel_credentials(self.read("ca.pem"))
        return grpc.ssl_channel_credentials(self.read("ca.pem"), self.read(f"{who}.key"), self.read(f"{who}.pem"))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    require_program("openssl", "openssl")
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                 "-subj", f"/CN=lockfleet test {ca}", cwd=d)
    leaves = {"server": ("/CN=localhost", "DNS:localhost,IP:127.0.0.1", "ca"),
              "h1": ("/CN=h1", "DNS:h1", "ca"),
              "h2": ("/CN=h2", "DNS:h2", "ca"),
              "relay": ("/O=lockfleet/OU=lockfleet-relay/CN=relay-1", "DNS:relay-1", "ca"),
              "stranger": ("/CN=h1", "DNS:h1", "other-ca")}
    for name, (subject, san, ca) in leaves.items():
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return Certs(d)


def mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of `size` at `path` (root only); False when this machine does not allow it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, timeout=30)
    return proc.returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
