"""Real receivers for the publishing tests: Debian's Prometheus Alertmanager started on loopback,
and a webhook receiver (an HTTP server in this process) that records what it accepted and can be
told to fail. Also small event-table builders for findings made on purpose."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")
AM_CONFIG = """\
route:
  receiver: blackhole
  group_wait: 1h
receivers:
  - name: blackhole
"""


def find_alertmanager() -> str | None:
    for name in ALERTMANAGER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_alertmanager() -> str:
    """The Alertmanager binary; skips the test where it is missing, fails under CI=true."""
    exe = find_alertmanager()
    if exe is None:
        why = ("Prometheus Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager; "
               ".ci/install-deps does it)")
        if os.environ.get("CI") == "true":
            pytest.fail(why + " and CI=true: it must be there")
        pytest.skip(why)
    return exe


def _get(url: str, timeout: float = 5.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        return resp.read()


def wait_for(predicate, timeout: float = 30.0, what: str = "the condition", every: float = 0.05):
    """Poll until predicate() is truthy; returns its value, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Alertmanager:
    """`prometheus-alertmanager` on 127.0.0.1 with a temporary storage path and no clustering;
    the port is kept across restarts (an outage is stop() then start())."""

    def __init__(self, exe: str, workdir: Path, port: int) -> None:
        self.exe = exe
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(AM_CONFIG)
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        storage = self.workdir / f"storage-{self.starts}"
        storage.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "alertmanager.log", "ab")
        self.proc = subprocess.Popen(
            [self.exe, f"--config.file={self.config}", f"--storage.path={storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=warn"], stdout=log, stderr=log)
        log.close()

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"alertmanager exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                return _get(self.url + "/-/ready", 1.0) is not None
            except OSError:
                return False

        wait_for(ready, 60, "alertmanager to be ready")

    def log(self) -> str:
        path = self.workdir / "alertmanager.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts it holds (active, silenced, inhibited, unprocessed)."""
        return json.loads(_get(self.url + "/api/v2/alerts"))

    def received(self) -> int:
        """alertmanager_alerts_received_total{version="v2"}, firing and resolved: every alert POSTed to it."""
        text = _get(self.url + "/metrics").decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("alertmanager_alerts_received_total{") and 'version="v2"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every POST it accepts (2xx); while `failing`, it
    answers 503 and records the attempt in `refused` instead."""

    secret: bytes | None = None
    accepted: list[Delivery] = field(default_factory=list)
    refused: int = 0
    failing: bool = False
    bad_signatures: int = 0
    delay: float = 0.0        # seconds between recording a delivery and answering it (a window for kills)
    refuse_if: Any = None     # body -> an HTTP status to answer instead of accepting (0: accept)
    refusals: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if owner.failing:
                    owner.refused += 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"down for maintenance")
                    return
                status = owner.refuse_if(body) if owner.refuse_if is not None else 0
                if status:
                    owner.refusals.append(status)
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"refused for good")
                    return
                if owner.secret is not None:
                    want = "sha256=" + hmac.new(owner.secret, body, hashlib.sha256).hexdigest()
                    if not hmac.compare_digest(want, self.headers.get("X-Lockfleet-Signature", "")):
                        owner.bad_signatures += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                owner.accepted.append(Delivery(dict(self.headers.items()), body))
                if owner.delay:
                    time.sleep(owner.delay)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lockfleet"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- events made on purpose ----------------------------------------------------------------------------


def events(rows: list[tuple], start_ns: int = 1_700_000_000_000_000_000):
    """A table of events from (tid, op, lock[, mode]) rows, with sites `lock@fn` and tasks `t/<tid>`."""
    import pyarrow as pa

    ts, tid, op, lock, mode, site, task = [], [], [], [], [], [], []
    for i, row in enumerate(rows):
        t, o, name = row[:3]
        ts.append(start_ns + 1000 * i)
        tid.append(t)
        op.append(o)
        lock.append(name)
        mode.append(row[3] if len(row) > 3 else 0)
        site.append(f"{re.sub(r'[^a-z0-9_]', '_', name.lower())}_fn+0x1{i % 10}/0x80" if o != 1 else "")
        task.append(f"t/{t}")
    return pa.table({"ts_ns": pa.array(ts, pa.int64()), "tid": pa.array(tid, pa.int64()),
                     "op": pa.array(op, pa.uint8()), "lock": pa.array(lock, pa.utf8()),
                     "mode": pa.array(mode, pa.uint8()), "site": pa.array(site, pa.utf8()),
                     "task": pa.array(task, pa.utf8())})


def nest(tid: int, outer: str, inner: str, mode: int = 0) -> list[tuple]:
    """A task taking `outer` (in `mode`), then `inner`, then dropping both."""
    return [(tid, 0, outer, mode), (tid, 0, inner), (tid, 1, inner), (tid, 1, outer)]


def write(table, path: Path) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return path


def background_table(seed: int, n: int):
    """Ordinary traffic (the demo's background: always one lock order, no findings) for one host."""
    import random

    from lockfleet.demo.background import background
    from lockfleet.demo.data import _table

    rng = random.Random(f"bg/{seed}")
    rows = [r for session in background(rng, n) for r in session]
    return _table(rows, 1_700_000_000_000_000_000 + seed * 10**12, rng)
