#!/usr/bin/env python3
"""The scale run of the cluster at fleet scale, one command (`make bench-scale`, not part of `make test`):

    .venv/bin/python benchmarks/bench_scale.py --out benchmarks/results/scale-<commit>.json

1. `bench_cluster.py` at each of `--hosts` (default 1,000 and 10,000): NATS JetStream (3 nodes,
   R3), two gateways, two workers, an authority; the fleet's edge-mode shipments pushed through
   both gateways; the authority's lag, memory and the closing-dependency-to-alert time.
2. `bench_fleet_memory.py` at the same sizes: the authority's engine memory per host in this
   build and in `--baseline` (before the host sketch and bounded tables), in-process.

Both write JSON; this merges them into `--out`, which `report.py --scale` renders into RESULTS.md.
About 10 minutes on 2 shared cores. Exit status: 0 written, 1 a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--closings", type=int, default=5)
    ap.add_argument("--baseline", default="bc20f79", help="commit before the host sketch ('' to skip)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    doc: dict = {"started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cluster": [],
                 "nproc": os.cpu_count(), "loadavg_start": os.getloadavg(),
                 "commit": subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short=12", "HEAD"],
                                          capture_output=True, text=True).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.hosts:
            path = Path(tmp) / f"cluster-{n}.json"
            print(f"bench_scale: cluster, {n} hosts ...", file=sys.stderr, flush=True)
            rc = subprocess.run([sys.executable, str(HERE / "bench_cluster.py"), "--hosts", str(n), "--nodes",
                                 str(args.nodes), "--closings", str(args.closings), "--json", str(path)]).returncode
            if rc != 0 or not path.exists():
                print(f"bench_scale: the {n}-host cluster run failed (exit {rc})", file=sys.stderr)
                return 1
            doc["cluster"].append(json.loads(path.read_text()))
        path = Path(tmp) / "memory.json"
        print("bench_scale: engine memory per host ...", file=sys.stderr, flush=True)
        rc = subprocess.run([sys.executable, str(HERE / "bench_fleet_memory.py"), "--hosts",
                             *map(str, args.hosts), "--baseline", args.baseline, "--json", str(path)],
                            stdout=subprocess.DEVNULL).returncode
        if rc != 0 or not path.exists():
            print(f"bench_scale: the memory run failed (exit {rc})", file=sys.stderr)
            return 1
        doc["memory"] = json.loads(path.read_text())
    doc["loadavg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"bench_scale: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
