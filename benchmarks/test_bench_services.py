"""pytest-benchmark wrappers for the standalone benches, so that one `make bench` run (one commit,
one JSON) covers them too: `bench_ingest.py` (gRPC ingest into `lockfleet serve`, per --fsync mode),
`bench_analyze.py` (`lockfleet analyze` on a generated archive, next to a plain polars scan),
`bench_edge_mode.py` (bytes on the wire per million events, raw vs edge mode) and
`bench_instrument.py` (tracing overhead per lock pair, Agent throughput), `bench_push.py`
(`lockfleet push` of one 16M-event file into `serve` next to a bare decoding server).

Each runs as its own subprocess, unchanged, at modest sizes (quick: smaller still); the timed
figure is the whole script's wall time (generation included: not a rate), and its own figures go
into extra_info (`figures`: the script's --json document, or `stdout` where it has none;
`cpu_s` is the script's own CPU time, as a child process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import benchkit as bk

HERE = Path(__file__).resolve().parent

FULL = {
    "ingest": ["--streams", "2", "--batches", "16", "--rows", "65536"],
    "analyze": ["--events", "4000000"],
    "edge_mode": ["--repeats", "500000"],
    "instrument": ["--pairs", "200000", "--repeats", "3", "--events", "500000"],
    "push": ["--events", "16000000", "--rounds", "3"],
}
QUICK = {
    "ingest": ["--quick"],
    "analyze": ["--events", "300000", "--hosts", "4", "--days", "2"],
    "edge_mode": ["--repeats", "50000", "--distinct", "6000"],
    "instrument": ["--quick"],
    "push": ["--quick"],
}
HAS_JSON = {"ingest", "analyze", "instrument", "push"}


def _script(benchmark, name: str) -> None:
    args = (QUICK if bk.quick_mode() else FULL)[name]
    with tempfile.TemporaryDirectory(prefix="lockfleet-bench-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *args]
        if name in HAS_JSON:
            cmd += ["--json", str(out)]
        procs, child_cpu = [], []

        def run():
            t0 = os.times()
            procs.append(subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=str(HERE)))
            t1 = os.times()
            child_cpu.append((t1.children_user + t1.children_system) - (t0.children_user + t0.children_system))

        bk.measure(benchmark, run, rounds=1, workload=name, case="script", impl=f"bench_{name}.py",
                   command=" ".join(["benchmarks/" + Path(cmd[1]).name, *args]))
        p = procs[-1]
        if p.returncode != 0:
            pytest.fail(f"bench_{name}.py exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        benchmark.extra_info["cpu_s"] = child_cpu          # the script's CPU time, not the wrapper's
        benchmark.extra_info["cpu_s_median"] = child_cpu[-1]
        benchmark.extra_info["stdout"] = p.stdout.strip().splitlines()[-40:]
        if name in HAS_JSON:
            benchmark.extra_info["figures"] = json.loads(out.read_text())


@pytest.mark.parametrize("name", ["ingest", "analyze", "edge_mode", "instrument", "push"])
def test_script(benchmark, name):
    benchmark.group = "standalone benches"
    _script(benchmark, name)
