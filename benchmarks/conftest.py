"""pytest hooks for the benchmark suites in benchmarks/ (helpers live in benchkit.py).

Not part of `make test`: pytest's testpaths is `tests/`, and `--benchmark-disable` is in its
addopts; `make bench` passes `--benchmark-enable` and this folder explicitly.

The JSON that `--benchmark-json` writes gets a `lockfleet` section: load average at start and
end (the machine is shared), nproc, the command, quick or full, the session's wall and CPU time;
`report.py` turns that JSON into RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import quick_mode

_SESSION: dict = {}


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true", default=False,
                     help="lockfleet: small workload sizes (also BENCH_QUICK=1)")


def pytest_configure(config):
    if config.getoption("--bench-quick"):
        os.environ["BENCH_QUICK"] = "1"


def pytest_sessionstart(session):
    _SESSION["loadavg_start"] = list(os.getloadavg())
    _SESSION["t0"] = time.time()
    _SESSION["cpu0"] = os.times()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    t = os.times()
    c0 = _SESSION.get("cpu0")
    output_json["lockfleet"] = {
        "quick": quick_mode(),
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_start": _SESSION.get("loadavg_start"),
        "loadavg_end": list(os.getloadavg()),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(_SESSION.get("t0", time.time()))),
        "wall_s": round(time.time() - _SESSION.get("t0", time.time()), 1),
        "cpu_s": round((t.user + t.system + t.children_user + t.children_system)
                       - ((c0.user + c0.system + c0.children_user + c0.children_system) if c0 else 0), 1),
        "command": os.environ.get("BENCH_COMMAND") or " ".join([Path(sys.executable).name, "-m", "pytest",
                                                                 *sys.argv[1:]]),
        "mem_total_kib": _meminfo_total(),
    }


def _meminfo_total() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None
