"""How long a new finding takes to show in the web console: from the ack of the batch that raised
it to its row in a headless Chromium's page (server-sent events, then the page's fetch and
render), over N findings each raised by a two-host lock-order inversion; with the service's own
figure beside it (lockfleet_publication_delay_seconds: batch applied -> publication).

    .venv/bin/python benchmarks/bench_console.py [--findings 20] [--publish-interval 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import Browser  # noqa: E402  (the tests' DevTools-protocol driver)
from serving import free_port, lockfleet, wait_healthy  # noqa: E402

from lockfleet.agent import Connection  # noqa: E402
from lockfleet.agent.client.push import push_batches  # noqa: E402


def nest(outer: str, inner: str, t0: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "ts_ns": pa.array([t0 + i for i in range(4)], pa.int64()), "tid": pa.array([1] * 4, pa.int64()),
        "op": pa.array([0, 0, 1, 1], pa.uint8()), "lock": [outer, inner, inner, outer]})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=int, default=20)
    ap.add_argument("--publish-interval", type=float, default=0.2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lockfleet-bench-console-"))
    port, hport, mport = free_port(), free_port(), free_port()
    proc = subprocess.Popen([*lockfleet(), "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(work / "data"),
                             "--http", f"127.0.0.1:{hport}", "--metrics-listen", f"127.0.0.1:{mport}",
                             "--publish-interval", str(args.publish_interval)],
                            stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "wb"))
    lat: list[float] = []
    try:
        wait_healthy(f"127.0.0.1:{port}", proc)
        conn = Connection(f"127.0.0.1:{port}")
        with Browser.launch(work) as b:
            b.goto(f"http://127.0.0.1:{hport}/")
            b.wait_for("window.lockfleetConsole.connected && document.querySelector('#findings-empty')")
            for i in range(args.findings):
                push_batches(conn, f"a-{i}", "s", [nest(f"x{i}", f"y{i}", 1000 * i)])
                acked: list[float] = []
                res = push_batches(conn, f"b-{i}", "s", [nest(f"y{i}", f"x{i}", 1000 * i + 10)],
                                   on_ack=lambda *_: acked.append(time.monotonic()))
                (fid,) = res.new_alerts
                seen = b.wait_for(f"document.querySelector('#findings tr[data-id=\"{fid}\"]') !== null",
                                  timeout=30, interval=0.002)
                lat.append(seen - acked[-1])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    pub = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in metrics.splitlines()
           if ln.startswith("lockfleet_publication_delay_seconds_") and "bucket" not in ln}
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else lat * 19
    print(f"findings: {len(lat)}; publish interval {args.publish_interval}s")
    print(f"ack -> row in the page: median {statistics.median(lat) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms, "
          f"max {max(lat) * 1000:.0f} ms")
    count = pub.get("lockfleet_publication_delay_seconds_count", 0)
    if count:
        print(f"service: applied -> published, mean {pub['lockfleet_publication_delay_seconds_sum'] / count * 1000:.0f} ms "
              f"over {int(count)} findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
