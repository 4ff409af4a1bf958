#!/usr/bin/env python3
"""The cluster at fleet scale: many simulated edge-mode hosts through two gateways.

    .venv/bin/python benchmarks/bench_cluster.py                       # 10,000 hosts, 3 NATS nodes
    .venv/bin/python benchmarks/bench_cluster.py --hosts 1000 --nodes 1

Every role is a real process (`lockfleet.cluster.harness`): a NATS JetStream cluster (`--nodes`,
R3 when 3), two gateways, two workers, one authority. Hosts run edge mode: each host ships what
an EdgeAgent's `export_new` sends for `--deps` dependencies drawn from the fleet's common lock
order (`--pool` dependencies between `--classes` classes, shared by the hosts as a kernel's are;
generated directly by bench_fleet_memory.shipment: the same columns and synthetic threads), on
the host's own stream. The shipments are made before the clock starts, by `--procs` pusher
processes, each multiplexing its share of the hosts on one asyncio loop over `--streams`
concurrent gRPC Push calls (grpc.aio), alternating the two gateways.

Measured: pushing time and shipments/s through the gateways; the authority's lag (rows shipped
minus rows it applied, sampled every 0.5 s from the first push; at the end of the push every row
is acked, so the lag then is acked-not-applied) and the time it needs to catch up; its peak RSS; the RSS of the
authority, each worker and each gateway at the end, and the authority's core memory by table
(its Stats: `core_bytes_*`), per host; and, once the fleet is in, the time from a
host pushing a dependency that closes a cycle to the finding being published on LF_ALERTS
(`--closings` times, median and max).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa


def _pusher(index: int, procs: int, args: argparse.Namespace, targets: list[str], ready, go, out) -> None:
    """One pusher process: its share of the hosts (every procs-th), multiplexed on one asyncio
    loop over `--streams` concurrent Push calls (grpc.aio), alternating the gateways."""
    import asyncio

    from bench_fleet_memory import fleet_order, shipment

    from lockfleet.cluster.derive import ipc_bytes

    order = fleet_order(args.pool, args.classes, args.seed)
    mine = list(range(index, args.hosts, procs))
    ships = {}
    rows = 0
    for h in mine:
        table = shipment(h, args.deps, order, args.seed)
        rows += table.num_rows
        ships[h] = ipc_bytes(table.combine_chunks().to_batches()[0])
    ready.put((index, rows, sum(len(s) for s in ships.values())))
    go.wait()
    out.put((index, *asyncio.run(_push_all(ships, targets, args.streams))))


async def _push_all(ships: dict[int, bytes], targets: list[str], streams: int) -> tuple[float, int]:
    import grpc

    from lockfleet.v1 import lockfleet_pb2 as pb
    from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

    channels = [grpc.aio.insecure_channel(t) for t in targets]
    stubs = [pb_grpc.IngestServiceStub(c) for c in channels]
    todo = list(ships)
    failures = 0

    async def one_stream() -> None:
        nonlocal failures
        while todo:
            h = todo.pop()
            msg = pb.PushRequest(host=f"host-{h}", stream_id="edge", seq=1, arrow_ipc=ships[h])
            for attempt in range(20):
                try:
                    acks = [a async for a in stubs[(h + attempt) % len(stubs)].Push(iter([msg]), timeout=120)]
                    if acks and acks[0].ok:
                        break
                except grpc.RpcError:
                    pass
                await asyncio.sleep(0.2)
            else:
                failures += 1

    import asyncio

    t0 = time.monotonic()
    await asyncio.gather(*(one_stream() for _ in range(streams)))
    seconds = time.monotonic() - t0
    for c in channels:
        await c.close()
    return seconds, failures


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--deps", type=int, default=30, help="dependencies per host")
    ap.add_argument("--pool", type=int, default=1000,
                    help="dependencies of the fleet's common order, each host taking --deps of them")
    ap.add_argument("--classes", type=int, default=2000, help="lock classes of the common order")
    ap.add_argument("--nodes", type=int, default=3, help="NATS nodes (3: R3 streams)")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--procs", type=int, default=3, help="pusher processes (asyncio, one loop each)")
    ap.add_argument("--streams", type=int, default=16, help="concurrent Push calls per pusher process")
    ap.add_argument("--closings", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this long")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--json", default="", help="write the figures here too")
    args = ap.parse_args()

    import signal

    from lockfleet.agent import fetch_stats
    from lockfleet.cluster.harness import Cluster

    def stop(_sig: int, _frame: object) -> None:   # so that `finally` stops every process started
        raise SystemExit(1)

    signal.signal(signal.SIGTERM, stop)
    import faulthandler
    faulthandler.register(signal.SIGUSR1)   # kill -USR1 PID: where it is

    def note(key: str, value: object) -> None:
        figures[key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)

    figures: dict[str, object] = {}
    root = Path(args.workdir or tempfile.mkdtemp(prefix="lockfleet-bench-cluster-"))
    cluster = Cluster(root, nodes=args.nodes, partitions=args.partitions, lease=3.0)
    figures.update({"hosts": args.hosts, "deps_per_host": args.deps, "pool": args.pool,
                    "classes": args.classes, "nats_nodes": args.nodes, "partitions": args.partitions,
                    "pusher_processes": args.procs, "streams_per_process": args.streams,
                    "command": " ".join(["benchmarks/bench_cluster.py", *sys.argv[1:]]),
                    "loadavg_start": os.getloadavg()})
    try:
        cluster.start_nats()
        authority = cluster.authority("authority")
        authority.wait_healthy()
        authority.wait_log("holds the lease: leader")
        gws = [cluster.gateway("gateway-1"), cluster.gateway("gateway-2")]
        workers = [cluster.worker("worker-1"), cluster.worker("worker-2")]
        for g in gws:
            g.wait_healthy()
        ctx = mp.get_context("spawn")
        ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_pusher, args=(i, args.procs, args, [g.target for g in gws], ready, go, out))
                 for i in range(args.procs)]
        for p in procs:
            p.start()
        prepared = [ready.get(timeout=args.timeout) for _ in procs]
        rows = sum(r for _i, r, _b in prepared)
        figures["shipped_rows"] = rows
        figures["shipped_bytes"] = sum(b for _i, _r, b in prepared)
        print(f"{args.hosts} hosts prepared: {rows} synthetic rows, {figures['shipped_bytes']} bytes", flush=True)
        base = fetch_stats(authority.target)["events"]
        # sampled every 0.5 s from the first push: rows the authority applied, its RSS
        samples: list[tuple[float, int, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    applied = fetch_stats(authority.target)["events"] - base
                    samples.append((round(time.monotonic() - t0, 2), applied, _rss_mib(authority.proc.pid)))
                except Exception:
                    pass
                if samples and samples[-1][1] >= rows:
                    return
                done.wait(0.5)

        t0 = time.monotonic()
        go.set()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        finished = [out.get(timeout=args.timeout) for _ in procs]
        push_s = time.monotonic() - t0
        note("push_seconds", round(push_s, 2))
        note("push_failures", sum(f for _i, _s, f in finished))
        note("shipments_per_second", round(args.hosts / push_s, 1))
        note("rows_per_second_through_gateways", round(rows / push_s, 1))
        applied_at_push_end = fetch_stats(authority.target)["events"] - base
        sampler.join(args.timeout)
        done.set()
        caught = t0 + samples[-1][0] if samples and samples[-1][1] >= rows else time.monotonic()
        note("authority_caught_up_seconds_after_push", round(caught - t0 - push_s, 2))
        note("authority_total_seconds", round(caught - t0, 2))
        note("authority_rows_per_second", round(rows / (caught - t0), 1))
        # every row is acked when the push ends: the lag then (acked, not yet applied) is the largest
        note("max_lag_rows", rows - applied_at_push_end)
        note("lag_samples", [(t, rows - a) for t, a, _r in samples[:: max(1, len(samples) // 20)]])
        note("authority_peak_rss_mib", round(max((r for _t, _a, r in samples), default=0.0), 1))
        note("rss_mib", {r.name: round(_rss_mib(r.proc.pid), 1) for r in (authority, *gws, *workers)
                              if r.proc is not None})
        st = fetch_stats(authority.target)
        figures["authority_edges"], figures["authority_locks"] = st["edges"], st["locks"]
        for k in ("threads", "chains", "chain_flushes", "threads_dropped", "host_sketches", "core_bytes"):
            figures[f"authority_{k}"] = st.get(k)
        note("authority_core_bytes_by_table", {k[len("core_bytes_"):]: v for k, v in st.items()
                                               if k.startswith("core_bytes_")})
        note("authority_core_bytes_per_host", round(st["core_bytes"] / args.hosts))
        note("authority_rss_bytes_per_host", round(_rss_mib(authority.proc.pid) * 2**20 / args.hosts))
        # closing dependencies: a host takes b before a for an edge a -> b the fleet has
        from bench_fleet_memory import fleet_order

        from lockfleet.agent import Stream, push_streams
        order = fleet_order(args.pool, args.classes, args.seed)
        latencies = []
        for k in range(args.closings):
            before = len(cluster.published_alerts())
            a, b = order[k * 7 % len(order)]     # the fleet has a -> b: taking b then a closes a cycle
            rows_t = pa.table({"ts_ns": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
                               "tid": pa.array([1] * 8, pa.int64()), "op": pa.array([0, 0, 1, 1] * 2, pa.uint8()),
                               "lock": [f"class_{a}", f"class_{b}", f"class_{b}", f"class_{a}",
                                        f"class_{b}", f"class_{a}", f"class_{a}", f"class_{b}"]})
            t1 = time.monotonic()
            push_streams(gws[k % 2].target, f"closer-{k}", [Stream("s", rows_t.to_batches())])
            while time.monotonic() - t1 < 60:
                if len(cluster.published_alerts()) > before:
                    latencies.append(time.monotonic() - t1)
                    break
                time.sleep(0.05)
        note("closing_to_published_seconds", [round(x, 3) for x in latencies])
        if latencies:
            note("closing_to_published_median_s", round(statistics.median(latencies), 3))
        for p in procs:
            p.join(10)
    finally:
        cluster.stop()
    figures["loadavg_end"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
