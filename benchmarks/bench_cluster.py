#!/usr/bin/env python3
"""The cluster at fleet scale: many simulated edge-mode hosts through two gateways.

    .venv/bin/python benchmarks/bench_cluster.py                       # 10,000 hosts, 3 NATS nodes
    .venv/bin/python benchmarks/bench_cluster.py --hosts 1000 --nodes 1

Every role is a real process (`lockfleet.cluster.harness`): a NATS JetStream cluster (`--nodes`,
R3 when 3), two gateways, two workers, one authority. Hosts run edge mode: each host's events (a
kernel-like lock order shared by the fleet, `--deps` dependencies per host drawn from a common
DAG of `--classes` classes, 4 events each) go through a local Engine and `export_new`, and the
shipment (what an EdgeAgent sends) is pushed on the host's own stream. The shipments are made
before the clock starts, by `--procs` pusher processes, each pushing its share of the hosts over
`--streams` concurrent gRPC Push calls, alternating the two gateways.

Measured: pushing time and shipments/s through the gateways; the authority's lag (events pushed
minus events it applied, sampled every 0.5 s) and the time it needs to catch up; the RSS of the
authority, each worker and each gateway at the end; and, once the fleet is in, the time from a
host pushing a dependency that closes a cycle to the finding being published on LF_ALERTS
(`--closings` times, median and max).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa


def _shipment(host_index: int, deps: int, classes: int, seed: int) -> bytes:
    from lockfleet import Engine
    from lockfleet.agent.edgemode import ExportState, export_new
    from lockfleet.cluster.derive import ipc_bytes

    rng = random.Random(f"{seed}/{host_index}")
    ts, tid, op, lock = [], [], [], []
    t = 1_700_000_000_000_000_000
    for _ in range(deps):
        a = rng.randrange(classes - 1)
        b = rng.randrange(a + 1, classes)         # a common order: lower class first
        for o, x in ((0, a), (0, b), (1, b), (1, a)):
            t += 1000
            ts.append(t), tid.append(1), op.append(o), lock.append(f"class_{x}")
    table = pa.table({"ts_ns": pa.array(ts, pa.int64()), "tid": pa.array(tid, pa.int64()),
                      "op": pa.array(op, pa.uint8()), "lock": pa.array(lock, pa.string())})
    eng = Engine()
    eng.ingest(table, host=f"host-{host_index}")
    batch = export_new(eng, ExportState())
    assert batch is not None
    return ipc_bytes(batch)


def _pusher(index: int, procs: int, args: argparse.Namespace, targets: list[str], ready, go, out) -> None:
    import grpc

    from lockfleet.v1 import lockfleet_pb2 as pb
    from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

    mine = list(range(index, args.hosts, procs))
    ships = {h: _shipment(h, args.deps, args.classes, args.seed) for h in mine}
    rows = sum(pa.ipc.open_stream(s).read_all().num_rows for s in ships.values())
    ready.put((index, rows, sum(len(s) for s in ships.values())))
    go.wait()
    channels = [grpc.insecure_channel(t) for t in targets]
    stubs = [pb_grpc.IngestStub(c) for c in channels]
    todo = list(mine)
    lock = threading.Lock()
    failures = 0

    def run() -> None:
        nonlocal failures
        while True:
            with lock:
                if not todo:
                    return
                h = todo.pop()
            host = f"host-{h}"
            msg = pb.PushBatch(host=host, stream_id="edge", seq=1, arrow_ipc=ships[h])
            for attempt in range(20):
                try:
                    acks = list(stubs[(h + attempt) % len(stubs)].Push(iter([msg]), timeout=60))
                    if acks and acks[0].ok:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
            else:
                with lock:
                    failures += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=run) for _ in range(args.streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((index, time.monotonic() - t0, failures))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--deps", type=int, default=30, help="dependencies per host")
    ap.add_argument("--classes", type=int, default=2000, help="lock classes of the common order")
    ap.add_argument("--nodes", type=int, default=3, help="NATS nodes (3: R3 streams)")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--procs", type=int, default=3, help="pusher processes")
    ap.add_argument("--streams", type=int, default=8, help="concurrent Push calls per pusher process")
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
    figures.update({"hosts": args.hosts, "deps_per_host": args.deps, "nats_nodes": args.nodes,
                    "partitions": args.partitions})
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
        lag: list[tuple[float, int]] = []
        t0 = time.monotonic()
        go.set()
        pushed_at = None
        finished = [out.get(timeout=args.timeout) for _ in procs]
        push_s = time.monotonic() - t0
        note("push_seconds", round(push_s, 2))
        note("push_failures", sum(f for _i, _s, f in finished))
        note("shipments_per_second", round(args.hosts / push_s, 1))
        note("rows_per_second_through_gateways", round(rows / push_s, 1))
        pushed_at = time.monotonic()
        while time.monotonic() - t0 < args.timeout:
            applied = fetch_stats(authority.target)["events"] - base
            lag.append((round(time.monotonic() - t0, 2), rows - applied))
            if applied >= rows:
                break
            time.sleep(0.5)
        caught = time.monotonic()
        note("authority_caught_up_seconds_after_push", round(caught - pushed_at, 2))
        note("authority_total_seconds", round(caught - t0, 2))
        note("authority_rows_per_second", round(rows / (caught - t0), 1))
        note("max_lag_rows", max((x for _t, x in lag), default=0))
        note("lag_samples", lag[:: max(1, len(lag) // 20)])
        note("rss_mib", {r.name: round(_rss_mib(r.proc.pid), 1) for r in (authority, *gws, *workers)
                              if r.proc is not None})
        st = fetch_stats(authority.target)
        figures["authority_edges"], figures["authority_locks"] = st["edges"], st["locks"]
        # closing dependencies: a host takes b before a for an edge a -> b the fleet has
        from lockfleet.agent import Stream, push_streams
        latencies = []
        for k in range(args.closings):
            before = len(cluster.published_alerts())
            a, b = 2 * k, args.classes - 1 - k
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
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
