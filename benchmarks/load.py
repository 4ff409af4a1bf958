"""Load: many concurrent agent streams against one `lockfleet serve` over loopback.

    .venv/bin/python benchmarks/load.py [--streams 1000] [--procs 4] [--seconds 20] [--interval 1.0]
                                        [--rows 64] [--max-inflight-bytes 67108864] [--json OUT]

Starts `lockfleet serve` (its own temporary data dir, `--max-streams` sized for the streams), then
`--procs` client processes, each running its share of the streams as asyncio gRPC (grpc.aio)
Push calls, all open at once: every stream sends one batch of `--rows` events every `--interval`
seconds for `--seconds`, with its own host and seq, and times each batch from its write to its
ack. Meanwhile the server's resident memory is sampled from /proc. At the end: ack latency
quantiles (p50, p90, p99, max) over the whole run and over its steady state (batches sent once
every stream had sent its first, so that opening the calls is left out), batches and events sent and acked, errors, the server's event
count (nothing lost: it must equal what was acked), its in-flight-bytes peak against the bound,
and its memory (baseline before the load, peak during it). Exit status 1 when anything was lost,
refused or failed, or the in-flight peak passed the bound.

tests/test_load.py runs a small version of this (100 streams, a few seconds) and checks the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import free_port, lockfleet, wait_healthy

# -- one client process -----------------------------------------------------------------------

def _batch(rows: int, tid: int) -> bytes:
    import pyarrow as pa

    from lockfleet.agent import to_ipc

    ops = [0, 0, 1, 1] * (rows // 4)
    locks = ["load_outer", "load_inner", "load_inner", "load_outer"] * (rows // 4)
    return to_ipc(pa.record_batch({"ts_ns": pa.array(range(len(ops)), pa.int64()),
                                   "tid": pa.array([tid] * len(ops), pa.int64()),
                                   "op": pa.array(ops, pa.uint8()), "lock": pa.array(locks, pa.utf8())}))


async def _stream(target_channel, host: str, ipc: bytes, rows: int, until: float, interval: float,
                  start_at: float, out: dict) -> None:
    from lockfleet.v1 import lockfleet_pb2 as pb
    from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

    stub = pb_grpc.IngestServiceStub(target_channel)
    call = stub.Push()
    sent: dict[int, float] = {}
    lat = out["latencies"]

    async def reader() -> None:
        async for ack in call:
            t = sent.pop(ack.seq, None)
            if ack.ok and not ack.duplicate and t is not None:
                lat.append((round(t - out["t0"], 4), time.monotonic() - t))
                out["acked"] += 1
                out["events"] += ack.events
            else:
                out["errors"].append(f"{host} seq {ack.seq}: {ack.code} {ack.reason} {ack.error}"[:200])

    task = asyncio.create_task(reader())
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    seq = 0
    try:
        next_at = time.monotonic()
        while time.monotonic() < until:
            seq += 1
            sent[seq] = time.monotonic()
            await call.write(pb.PushRequest(host=host, stream_id="load", seq=seq, arrow_ipc=ipc))
            out["sent"] += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await call.done_writing()
        await asyncio.wait_for(task, timeout=120)
    except Exception as exc:
        out["errors"].append(f"{host}: {type(exc).__name__}: {exc}"[:300])
    if sent:
        out["errors"].append(f"{host}: {len(sent)} batch(es) never acked")


async def _client(target: str, proc: int, streams: int, seconds: float, interval: float, rows: int) -> dict:
    import grpc

    out = {"latencies": [], "sent": 0, "acked": 0, "events": 0, "errors": [], "t0": 0.0}
    ipc = _batch(rows, proc + 1)
    # a few channels (connections) per process, the streams spread over them
    channels = [grpc.aio.insecure_channel(target) for _ in range(4)]
    t0 = time.monotonic()
    out["t0"] = t0
    until = t0 + seconds
    tasks = [_stream(channels[i % len(channels)], f"load-{proc}-{i}", ipc, rows, until, interval,
                     t0 + interval * i / max(1, streams), out) for i in range(streams)]
    await asyncio.gather(*tasks)
    for ch in channels:
        await ch.close()
    return out


def client_main(argv: list[str]) -> int:
    target, proc, streams, seconds, interval, rows = argv[0], int(argv[1]), int(argv[2]), float(argv[3]), \
        float(argv[4]), int(argv[5])
    out = asyncio.run(_client(target, proc, streams, seconds, interval, rows))
    json.dump(out, sys.stdout)
    return 0


# -- the run ----------------------------------------------------------------------------------

def rss_kib(pid: int, field: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(streams: int = 1000, procs: int = 4, seconds: float = 20.0, interval: float = 1.0, rows: int = 64,
        max_inflight_bytes: int = 64 << 20, progress: bool = True) -> dict:
    from lockfleet.agent import fetch_stats

    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        target = f"127.0.0.1:{port}"
        log = open(Path(tmp) / "serve.log", "wb")
        server = subprocess.Popen([*lockfleet(), "serve", "--listen", target, "--data-dir", str(Path(tmp) / "data"),
                                   "--max-streams", str(streams + 64), "--max-inflight-bytes", str(max_inflight_bytes),
                                   "--snapshot-seconds", "0"], stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_healthy(target, server)
            time.sleep(0.5)
            baseline = rss_kib(server.pid)
            say(f"serve pid {server.pid} up, {baseline / 1024:.0f} MiB resident; {streams} streams in {procs} "
                f"processes for {seconds:.0f}s, a batch of {rows} events per stream every {interval}s")
            peak = [baseline]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.1):
                    peak[0] = max(peak[0], rss_kib(server.pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            shares = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
            t0 = time.monotonic()
            clients = [subprocess.Popen([sys.executable, __file__, "--client", target, str(i), str(n), str(seconds),
                                         str(interval), str(rows)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True) for i, n in enumerate(shares)]
            results = []
            for c in clients:
                out, err = c.communicate(timeout=seconds + 300)
                if c.returncode != 0:
                    raise SystemExit(f"a client process failed ({c.returncode}): {err[-2000:]}")
                results.append(json.loads(out))
            wall = time.monotonic() - t0
            stop.set()
            sampler.join(2)
            stats = fetch_stats(target)
            hwm = rss_kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    samples = [x for r in results for x in r["latencies"]]
    lat = [x[1] for x in samples]
    # steady state: batches sent once every stream is open and has sent its first batch
    steady = [x[1] for x in samples if x[0] >= interval + 1.0]
    errors = [e for r in results for e in r["errors"]]
    sent, acked = sum(r["sent"] for r in results), sum(r["acked"] for r in results)
    events = sum(r["events"] for r in results)
    ing = stats["ingest"]
    return {
        "streams": streams, "procs": procs, "seconds": seconds, "interval": interval, "rows": rows,
        "wall_seconds": round(wall, 2), "batches_sent": sent, "batches_acked": acked, "events_acked": events,
        "server_events": stats["events"], "errors": len(errors), "error_samples": errors[:5],
        "batches_per_second": round(acked / wall, 1), "events_per_second": round(events / wall, 1),
        "ack_ms": {"p50": round(quantile(lat, 0.50) * 1e3, 2), "p90": round(quantile(lat, 0.90) * 1e3, 2),
                   "p99": round(quantile(lat, 0.99) * 1e3, 2), "max": round(max(lat, default=0) * 1e3, 2),
                   "mean": round(statistics.fmean(lat) * 1e3, 2) if lat else None},
        "ack_ms_steady": {"batches": len(steady), "p50": round(quantile(steady, 0.50) * 1e3, 2),
                          "p90": round(quantile(steady, 0.90) * 1e3, 2), "p99": round(quantile(steady, 0.99) * 1e3, 2),
                          "max": round(max(steady, default=0) * 1e3, 2)},
        "inflight_bytes_peak": ing["inflight_bytes_peak"], "inflight_bytes_limit": ing["inflight_bytes_limit"],
        "stream_window_peak": ing["stream_window_peak"],
        "rss_mib": {"baseline": round(baseline / 1024, 1), "peak": round(max(peak[0], hwm) / 1024, 1)},
        "lost": events - stats["events"],
    }


def ok(r: dict) -> bool:
    return (r["errors"] == 0 and r["batches_sent"] == r["batches_acked"] and r["lost"] == 0
            and r["server_events"] == r["events_acked"] and r["inflight_bytes_peak"] <= r["inflight_bytes_limit"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--client":
        return client_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between one stream's batches")
    ap.add_argument("--rows", type=int, default=64, help="events per batch (a multiple of 4)")
    ap.add_argument("--max-inflight-bytes", type=int, default=64 << 20)
    ap.add_argument("--json", metavar="OUT", help="also write the result here")
    a = ap.parse_args(argv)
    if a.streams < 1 or a.procs < 1 or a.rows < 4 or a.rows % 4:
        print("load.py: --streams and --procs at least 1, --rows a positive multiple of 4", file=sys.stderr)
        return 2
    r = run(a.streams, a.procs, a.seconds, a.interval, a.rows, a.max_inflight_bytes)
    text = json.dumps(r, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0 if ok(r) else 1


if __name__ == "__main__":
    sys.exit(main())
