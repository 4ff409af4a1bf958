"""Metrics through prometheus_client: the exposition of a real `lockfleet serve` after the seed
scenario passes `promtool check metrics` (Debian's `prometheus`), carries the same names as before
plus per-host, per-kind and per-sink series, the process and platform collectors and the
histograms of ack latency, batch apply time and publication delay; and the Grafana dashboard in
deploy/ asks only for metrics the service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "lockfleet-dashboard.json"
PROMQL_WORDS = {
    # functions and aggregations
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group",
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "abs", "ceil", "floor", "round",
    "clamp_min", "clamp_max", "label_replace", "label_join", "vector", "scalar", "time", "absent", "changes",
    "resets", "sort", "sort_desc", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "predict_linear", "timestamp",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def exported_names(text: str) -> set[str]:
    """Every series name in an exposition: those with samples, and those declared by a TYPE line
    (a labelled counter nothing has counted yet has no sample), histograms' series included."""
    names = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)  # type: ignore[union-attr]
             for line in text.splitlines() if line and not line.startswith("#")}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names |= {name} if kind != "histogram" else {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in {...} or by/without (...)), durations ([...]) or strings."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    names = set(re.findall(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", e))
    return {n for n in names if n not in PROMQL_WORDS}


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += _panels(p)   # rows hold panels of their own
    return out


def test_promql_metric_extraction():
    assert promql_metrics('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x"}[5m])))') == {"a_bucket"}
    assert promql_metrics("sum by (host) (rate(b_total[$__rate_interval])) / on (host) c") == {"b_total", "c"}
    assert promql_metrics("max(lockfleet_edges) + 1") == {"lockfleet_edges"}


def test_metrics_pass_promtool_and_dashboard_names_exported_metrics(serve_factory, scenario_files, lockfleet_cli):
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not on PATH under CI=true: .ci/install-deps installs Debian's prometheus")
        pytest.skip("promtool is not on PATH (Debian's `prometheus`; .ci/install-deps installs it)")
    mport = free_port()
    server = serve_factory("--metrics-listen", f"127.0.0.1:{mport}")
    rows = {}
    for host, path in scenario_files.items():
        assert lockfleet_cli("push", path, "--host", host, "--target", server.target).returncode == 0
        rows[host] = pq.read_metadata(path).num_rows if path.suffix == ".parquet" else \
            (pa.ipc.open_file(path) if path.suffix == ".arrow" else pa.ipc.open_stream(path)).read_all().num_rows
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _samples(_scrape(mport)).get(
            "lockfleet_publication_delay_seconds_count", 0) < 1:
        time.sleep(0.05)
    text = _scrape(mport)
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    m = _samples(text)

    # the names of the hand-written exposition, still there
    for name in ("lockfleet_events_total", "lockfleet_batches_total", "lockfleet_ack_latency_seconds_count",
                 "lockfleet_fsync_latency_seconds_count", "lockfleet_edges", "lockfleet_lock_classes", "lockfleet_alerts",
                 "lockfleet_streams", "lockfleet_log_bytes", "lockfleet_outbox_seq", 'lockfleet_publications_total{event="new"}'):
        assert name in m, name
    assert m["lockfleet_events_total"] == sum(rows.values())
    # per host, per kind, per sink
    for host, n in rows.items():
        assert m[f'lockfleet_host_events_total{{host="{host}"}}'] == n
    assert m['lockfleet_findings{kind="circular"}'] == 1 and m['lockfleet_findings{kind="recursive"}'] == 0
    assert m['lockfleet_sink_pending{sink="jsonl:alerts.jsonl"}'] == 0
    # the new histograms
    assert m["lockfleet_batch_apply_seconds_count"] == m["lockfleet_batches_total"]
    assert m["lockfleet_publication_delay_seconds_count"] == 1
    assert 0 <= m["lockfleet_publication_delay_seconds_sum"] < 30
    assert m['lockfleet_ack_latency_seconds_bucket{le="+Inf"}'] == m["lockfleet_ack_latency_seconds_count"]
    # process and platform collectors
    assert m["process_resident_memory_bytes"] > 0 and "process_cpu_seconds_total" in m
    assert any(k.startswith("python_info") for k in m)
    assert not any(k.endswith("_created") for k in m)

    # the dashboard: every panel's every query names only exported metrics
    exported = exported_names(text)
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in _panels(dash) if p.get("type") != "row"]
    assert len(panels) >= 6
    asked = set()
    for p in panels:
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            names = promql_metrics(t["expr"])
            assert names, f"panel {p['title']!r}: no metric in {t['expr']!r}"
            missing = names - exported
            assert not missing, f"panel {p['title']!r} asks for {sorted(missing)}, which the service does not export"
            asked |= names
    # what the issue asks the dashboard to show
    assert {"lockfleet_host_events_total", "lockfleet_ack_latency_seconds_bucket", "lockfleet_findings",
            "lockfleet_sink_pending", "lockfleet_edges", "lockfleet_lock_classes"} <= asked
