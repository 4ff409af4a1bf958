#!/usr/bin/env python3
"""`lockfleet push` of one large event file into one `lockfleet serve`, side by side with the same
push into a bare gRPC server that only decodes the batches (the ceiling of any Ingest.Push
servicer on this machine's Python and pyarrow). Nothing is asserted; it prints a table of
events/s and the ratio serve / bare for each case (--json writes one document).

    .venv/bin/python benchmarks/bench_push.py                      # 16M events, 1 and 2 streams, raw and lz4
    .venv/bin/python benchmarks/bench_push.py --events 2000000 --cases 1:none,1:lz4,1:zstd,2:none
    .venv/bin/python benchmarks/bench_push.py --profile serve.prof # py-spy profile of the serve process (1 case)

Each case is `--streams N` and `--compression C` of `lockfleet push` (the real command, as a
subprocess; its time includes reading and checking the file, as a user sees it). The bare server
advertises the same codecs as `serve`, so the client does the same work against both. `serve`
runs with a fresh data dir per case and `--fsync group` (acks after fsync). Both servers run as
subprocesses and are timed in the same run, one after the other, on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from bench_ingest import make_batch
from serving import free_port, lockfleet, wait_healthy

HERE = Path(__file__).resolve().parent

BARE = r'''
import sys, time
from concurrent import futures
import grpc, pyarrow as pa
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lockfleet.v1 import lockfleet_pb2 as pb, lockfleet_pb2_grpc as pb_grpc
from lockfleet.wire import CODECS_METADATA, available_codecs

class Bare(pb_grpc.IngestServicer):
    def Push(self, requests, context):
        context.send_initial_metadata(((CODECS_METADATA, ",".join(available_codecs())),))
        for msg in requests:
            n = pa.ipc.open_stream(pa.py_buffer(msg.arrow_ipc)).read_all().num_rows
            yield pb.PushAck(seq=msg.seq, ok=True, events=n)

server = grpc.server(futures.ThreadPoolExecutor(16), options=[("grpc.max_receive_message_length", 256 << 20)])
pb_grpc.add_IngestServicer_to_server(Bare(), server)
h = health.HealthServicer(); h.set("", health_pb2.HealthCheckResponse.SERVING)
health_pb2_grpc.add_HealthServicer_to_server(h, server)
server.add_insecure_port(sys.argv[1]); server.start(); server.wait_for_termination()
'''


def write_file(path: Path, events: int, rows: int = 65536) -> int:
    """An Arrow IPC file of about `events` events (the bench_ingest workload, batches repeated)."""
    base = [make_batch(rows, seed) for seed in range(4)]
    total = 0
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, base[0].schema) as w:
        i = 0
        while total < events:
            b = base[i % 4]
            # a running ts: the file is one host's stream over time
            ts = pa.array(b.column("ts_ns").to_numpy() + total * 100)
            w.write_batch(pa.record_batch([ts, *b.columns[1:]], schema=b.schema))
            total += b.num_rows
            i += 1
    return total


def start(cmd: list[str], target: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    wait_healthy(target, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time (user + system) of a server process so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_push(proc: subprocess.Popen, *args) -> tuple[float, float, float]:
    """(wall seconds of the push command, of its send phase, CPU seconds the server spent)."""
    cpu0 = cpu_seconds(proc)
    wall, send = push(*args)
    return wall, send, cpu_seconds(proc) - cpu0


def push(target: str, path: Path, streams: int, codec: str, host: str) -> tuple[float, float]:
    """(the command's wall seconds, its send phase's: first batch sent to last ack, as it prints)."""
    cmd = [*lockfleet(), "push", str(path), "--host", host, "--target", target]
    if streams != 1:
        cmd += ["--streams", str(streams)]
    if codec != "auto":
        cmd += ["--compression", codec]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"push failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    m = re.search(r" in ([0-9.]+) s \(", p.stdout)
    return seconds, float(m.group(1)) if m else seconds


def run_case(tmp: Path, path: Path, events: int, streams: int, codec: str, profile: str = "",
             rounds: int = 1) -> dict:
    """Bare and serve alternately, `rounds` times each; the median round of each (by send phase)."""
    runs = [one_round(tmp, path, events, streams, codec, profile if i == 0 else "") for i in range(rounds)]
    out = {"streams": streams, "compression": codec, "events": events, "rounds": rounds}
    for side in ("bare", "serve"):
        best = sorted(runs, key=lambda r: r[f"{side}_seconds"])[len(runs) // 2]
        for k in ("seconds", "command_s", "cpu_s"):
            out[f"{side}_{k}"] = best[f"{side}_{k}"]
    out["log_mb"] = runs[0]["log_mb"]
    out["bare_events_per_s"] = round(events / out["bare_seconds"])
    out["serve_events_per_s"] = round(events / out["serve_seconds"])
    out["ratio"] = round(out["bare_seconds"] / out["serve_seconds"], 3)
    out["command_ratio"] = round(out["bare_command_s"] / out["serve_command_s"], 3)
    out["cpu_ratio"] = round(out["bare_cpu_s"] / out["serve_cpu_s"], 3) if out["serve_cpu_s"] else None
    out["round_ratios"] = [round(r["bare_seconds"] / r["serve_seconds"], 3) for r in runs]
    return out


def one_round(tmp: Path, path: Path, events: int, streams: int, codec: str, profile: str = "") -> dict:
    out: dict = {}
    # the bare decoder
    target = f"127.0.0.1:{free_port()}"
    proc = start([sys.executable, "-c", BARE, target], target, tmp / "bare.log")
    try:
        wall, send, cpu = timed_push(proc, target, path, streams, codec, "bench")
        out["bare_command_s"], out["bare_seconds"], out["bare_cpu_s"] = round(wall, 3), round(send, 3), round(cpu, 3)
    finally:
        stop(proc)
    # lockfleet serve
    target = f"127.0.0.1:{free_port()}"
    data = tmp / f"data-{streams}-{codec}"
    cmd = [*lockfleet(), "serve", "--listen", target, "--data-dir", str(data), "--fsync", "group",
           "--snapshot-seconds", "0", "--snapshot-bytes", "0"]
    if profile:   # py-spy samples every thread (the ingest path runs on gRPC's threads)
        spy = Path(sys.executable).with_name("py-spy")
        cmd = [str(spy), "record", "-r", "250", "-f", "raw", "-o", profile, "--", sys.executable, "-m",
               "lockfleet.cli", *cmd[1:]]
    proc = start(cmd, target, tmp / "serve.log")
    try:
        # the server under py-spy: its CPU is the child's (not counted then)
        wall, send, cpu = timed_push(proc, target, path, streams, codec, "bench")
        out["serve_command_s"], out["serve_seconds"], out["serve_cpu_s"] = round(wall, 3), round(send, 3), round(cpu, 3)
    finally:
        if profile:
            proc.send_signal(2)     # py-spy writes its profile and stops the server
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        stop(proc)
        log_bytes = sum(p.stat().st_size for p in (data / "log").glob("seg-*.log"))
        shutil.rmtree(data, ignore_errors=True)
    out["log_mb"] = round(log_bytes / 1e6, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=16_000_000)
    ap.add_argument("--cases", default="1:none,1:lz4,1:zstd,2:none,2:lz4",
                    help="comma-separated STREAMS:CODEC cases (codec none, lz4 or zstd)")
    ap.add_argument("--rounds", type=int, default=3, help="bare and serve alternately, this many times each")
    ap.add_argument("--quick", action="store_true", help="2M events, 1:none and 2:lz4, 1 round")
    ap.add_argument("--profile", metavar="FILE", help="write a py-spy profile (raw, folded stacks) of the serve process (first case only)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.quick:
        args.events, args.cases, args.rounds = 2_000_000, "1:none,2:lz4", 1
    cases = [(int(s), c) for s, c in (x.split(":") for x in args.cases.split(","))]
    tmp = Path(tempfile.mkdtemp(prefix="lockfleet-bench-push-"))
    try:
        path = tmp / "events.arrow"
        events = write_file(path, args.events)
        results = [run_case(tmp, path, events, s, c, args.profile if i == 0 and args.profile else "", args.rounds)
                   for i, (s, c) in enumerate(cases)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'streams':>8}{'codec':>7}{'events':>12}{'bare ev/s':>14}{'serve ev/s':>14}{'ratio':>8}"
          f"{'cmd ratio':>10}{'CPU ratio':>10}{'log MB':>8}")
    for r in results:
        print(f"{r['streams']:>8}{r['compression']:>7}{r['events']:>12}{r['bare_events_per_s']:>14,}"
              f"{r['serve_events_per_s']:>14,}{r['ratio']:>8.2f}{r['command_ratio']:>10.2f}"
              f"{r['cpu_ratio'] or 0:>10.2f}{r['log_mb']:>8}")
    print(f"({os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; `lockfleet push` of one file, same run; "
          "ratio = serve events/s / bare-decoder events/s over the send phase "
          "(first batch sent to last ack, as push prints it); cmd ratio: the whole command's wall time, file "
          "reading and checking included; "
          f"CPU ratio = the bare server's CPU seconds / serve's, for the same push; median of {args.rounds} "
          "alternating rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
