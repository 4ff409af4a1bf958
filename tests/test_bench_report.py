"""benchmarks/report.py (RESULTS.md's generator) on a tiny synthetic pytest-benchmark JSON: it must
produce the targets table with the engine figure, the same-run baseline, the ratio and a verdict,
say "not run" for what the JSON lacks, and refuse an unreadable file with exit status 2. No
benchmark runs here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"


def _bench(name, group, median, cpu, **info):
    return {"name": name, "group": group, "stats": {"median": median, "min": median, "rounds": 3},
            "extra_info": dict(info, cpu_s=[cpu] * 3)}


def _doc():
    return {
        "commit_info": {"id": "0123456789abcdef0123", "branch": "main", "dirty": False},
        "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_implementation": "CPython"},
        "datetime": "2026-01-01T00:00:00",
        "lockfleet": {"quick": False, "nproc": 2, "loadavg_start": [3.0, 2.0, 1.0], "loadavg_end": [4.0, 3.0, 2.0],
                      "command": "make bench", "wall_s": 1.0, "cpu_s": 1.0},
        "benchmarks": [
            _bench("test_engine_new[W1c-new]", "W1c new edges", 0.01, 0.005, workload="W1c", case="new",
                   impl="lockfleet engine", units=30_000, unit="edges"),
            _bench("test_rustworkx_new[W1c-new]", "W1c new edges", 0.03, 0.02, workload="W1c", case="new",
                   impl="rustworkx check_cycle", units=30_000, unit="edges", refuses_cycle_edges=True, refused=10,
                   done=30_000, partial=False),
            _bench("test_engine_fleet[W2]", "W2", 4.0, 3.0, workload="W2", case="new", impl="lockfleet engine",
                   units=2_000_010, unit="edges"),
            _bench("test_engine_fleet[W2c]", "W2", 8.0, 4.0, workload="W2c", case="new", impl="lockfleet engine",
                   units=2_000_010, unit="edges", batch_median_s=0.05, batch_max_s=0.5, batch_cpu_median_s=0.04,
                   batch_cpu_max_s=0.3, batches=123,
                   stats={"core_bytes": 100 * 2_000_010 + 200 * 200_000, "edges": 2_000_010, "locks": 200_000,
                          "witnesses": 7}),
        ],
    }


def _run(tmp_path, doc, other=""):
    src = tmp_path / "run.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "RESULTS.md"
    oth = tmp_path / "other.md"
    oth.write_text(other)
    p = subprocess.run([sys.executable, str(REPORT), str(src), "-o", str(out), "--other", str(oth)],
                       capture_output=True, text=True, timeout=60)
    return p, out


def test_report_builds_targets_table(tmp_path):
    p, out = _run(tmp_path, _doc())
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    assert "`0123456789ab`" in md and "make bench" in md and "nproc 2" in md
    assert "at start 3.00 2.00 1.00, at end 4.00 3.00 2.00" in md
    assert "| target | engine | baseline (same run) | ratio | target | met? |" in md
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    w1c = rows["W1c new edges (back edges where they fall)"]
    assert "3M edges/s" in w1c and "rustworkx check_cycle" in w1c and "refuses cycle-closing edges" in w1c
    assert w1c.endswith("| 3.00x | >= 1.5M edges/s | yes |")
    w2c = rows["W2c all new edges vs W2 (same run)"]
    assert "| 2.00x (CPU 1.33x) |" in w2c and w2c.endswith("NO (yes on CPU time) |")
    assert rows["W2c slowest of 123 64k-row batches"].endswith("| max <= 20x median | yes |")
    assert rows["W2c core memory (witnesses included)"].endswith("| yes |")
    assert rows["W1 repeats, 64 threads interleaved"].endswith("| not run |")
    assert "### W1c new edges" in md and "test_rustworkx_new[W1c-new]" in md


def test_report_appends_hand_written_results_one_level_down(tmp_path):
    p, out = _run(tmp_path, _doc(), other="# Outside make bench\n\n## bench_x.py\n\n```\n# not a heading\n```\n")
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    assert "\n## Outside make bench\n" in md and "\n### bench_x.py\n" in md and "\n# not a heading\n" in md


def test_report_rejects_a_file_that_is_not_benchmark_json(tmp_path):
    p, out = _run(tmp_path, {"hello": 1})
    assert p.returncode == 2
    assert "not a pytest-benchmark JSON" in p.stderr and not out.exists()


def test_report_renders_the_scale_run(tmp_path):
    run = {"hosts": 10_000, "deps_per_host": 30, "pool": 1000, "classes": 2000, "nats_nodes": 3, "partitions": 16,
           "pusher_processes": 3, "streams_per_process": 16, "shipped_rows": 3_555_000, "push_seconds": 120.5,
           "authority_total_seconds": 200.0, "max_lag_rows": 900_000, "closing_to_published_median_s": 0.31,
           "closing_to_published_seconds": [0.3, 0.31, 0.4], "rss_mib": {"authority": 300.0, "gateway-1": 140.0,
                                                                         "gateway-2": 141.0},
           "authority_core_bytes": 40 << 20, "authority_core_bytes_per_host": 4194,
           "authority_core_bytes_by_table": {"chains": 36 << 20, "threads": 1 << 10, "edge_hosts": 30_000,
                                             "host_sketches": 128_000},
           "authority_edges": 1000, "authority_locks": 1200}
    mem = {"deps_per_host": 30, "pool": 1000, "baseline_commit": "bc20f79",
           "runs": [{"build": "this build", "hosts": 10_000, "core_bytes": 40 << 20, "core_bytes_per_host": 4194,
                     "rss_growth_bytes_per_host": 3600, "threads": 0, "chains": 727_000, "seconds": 28.0,
                     "core_bytes_by_table": {"edge_hosts": 30_000, "host_sketches": 128_000, "threads": 1024}},
                    {"build": "bc20f79", "hosts": 10_000, "core_bytes": 4600 << 20, "core_bytes_per_host": 484_733,
                     "rss_growth_bytes_per_host": 360_000, "threads": 1_477_650, "chains": 1_775_596, "seconds": 55.0,
                     "core_bytes_by_table": {"edge_hosts": 2_000_000, "threads": 4_600_000_000}}]}
    scale = tmp_path / "scale-x.json"
    scale.write_text(json.dumps({"commit": "abc", "cluster": [run], "memory": mem}))
    src = tmp_path / "run.json"
    src.write_text(json.dumps(_doc()))
    out = tmp_path / "RESULTS.md"
    p = subprocess.run([sys.executable, str(REPORT), str(src), "-o", str(out), "--other", "", "--scale", str(scale)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    md = out.read_text()
    assert "## The cluster at fleet scale" in md and "| figure | 10,000 hosts |" in md
    assert "0.31" in md and "4,194 B" in md and "900,000" in md
    assert "484,733 B" in md and "bc20f79" in md
    bad = tmp_path / "scale-bad.json"
    bad.write_text("{")
    p = subprocess.run([sys.executable, str(REPORT), str(src), "-o", str(out), "--scale", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot read" in p.stderr
