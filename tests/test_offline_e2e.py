"""End to end: a workload pushed to a real `lockfleet serve` (several hosts, order-dependent cycles,
the seed scenario), then `lockfleet analyze` over its data dir (the Parquet archive plus the log
segments not yet compacted) gives exactly the service's alert ids, in the same order: while the
service runs, and after SIGTERM. The service must have archived: an empty archive fails the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import run_lockfleet  # noqa: E402
from test_offline_fixtures import workload  # noqa: E402

from lockfleet.demo import HOSTS  # noqa: E402
from lockfleet.offline import analyze  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
COMPACTION_WAIT = 60.0
T_SCENARIO_DAY = 1_551_380_000 * 10**9     # 2019-02-28 19:53 UTC: the seed scenario's day


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def analyze_cli(*args: str) -> subprocess.CompletedProcess:
    """`lockfleet analyze ...`."""
    return run_lockfleet("analyze", *args)


def _plain(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return t.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                             for f in t.schema]))


def _rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.read_metadata(path).num_rows
    if path.suffix == ".arrow":
        return pa.ipc.open_file(path).read_all().num_rows
    return pa.ipc.open_stream(path).read_all().num_rows


def _archive_parts(data: Path) -> list[Path]:
    return sorted((data / "archive").rglob("part-*.parquet")) if (data / "archive").is_dir() else []


def _archived_through(data: Path) -> int:
    try:
        return int(json.loads((data / "archive" / "_state.json").read_text())["archived_through_segment"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_for_compaction(data: Path, timeout: float) -> None:
    """Until every sealed log segment (all but the newest) is archived; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        segs = sorted(int(p.stem.split("-")[1]) for p in (data / "log").glob("seg-*.log"))
        if segs and _archived_through(data) >= segs[-1] - 1:
            return
        time.sleep(0.2)
    pytest.fail(f"the service did not archive its sealed log segments within {timeout}s: "
                f"{len(_archive_parts(data))} archive part(s), archived through segment {_archived_through(data)}")


def test_analyze_of_the_data_dir_gives_the_service_alert_ids(serve_factory, scenario_files, tmp_path):
    # small segments, sealed often and so archived while the test runs; the events are from 2019:
    # no retention, or the archiver would delete their day partitions at once
    server = serve_factory("--segment-bytes", "8192", "--archive-retention-days", "0")
    # the seed scenario, bpf-3 last (it closes the five-lock cycle) ...
    for host in HOSTS:
        _ok(run_lockfleet("push", scenario_files[host], "--host", host, "--target", server.target))
    # ... then random traffic from three hosts (on the scenario's day), one file per push,
    # interleaved: many cycles that share dependencies, so which cycle a closing dependency
    # reports depends on the order
    recs = workload(13, hosts=3, threads=3, batches=8, rows=120, t0=T_SCENARIO_DAY)
    for i, r in enumerate(recs):
        path = tmp_path / f"push-{i}.parquet"
        pq.write_table(_plain(r.batch), path)
        _ok(run_lockfleet("push", path, "--host", r.host, "--target", server.target))
    service = json.loads(_ok(run_lockfleet("alerts", "--json", "--target", server.target)))["alerts"]
    ids = [a["id"] for a in service]
    assert len(ids) >= 3 and {a["kind"] for a in service} >= {"circular"}
    pushed = sum(r.batch.num_rows for r in recs) + sum(_rows(p) for p in scenario_files.values())

    data = server.data_dir
    _wait_for_compaction(data, COMPACTION_WAIT)
    # the service's data dir, read while it runs (read-only: nothing is locked or cut)
    live = analyze([data], aggregates=False)
    assert [a.id for a in live.alerts] == ids
    assert live.events == pushed
    assert server.stop() == 0

    doc = json.loads(_ok(analyze_cli(str(data), "--json", "--alerts-only")))
    assert [a["id"] for a in doc["alerts"]] == ids
    assert [a["locks"] for a in doc["alerts"]] == [a["locks"] for a in service]
    assert [a["hosts"] for a in doc["alerts"]] == [a["hosts"] for a in service]
    assert doc["summary"]["events"] == pushed
    res = analyze([data], aggregates=True)
    assert [a.id for a in res.alerts] == ids
    assert res.aggregates is not None and set(HOSTS) <= set(res.aggregates.hosts["host"].to_list())
    kinds = [s.kind for s in res.plan.sources]
    parts = _archive_parts(data)
    assert len(parts) >= 2, f"the service archived {len(parts)} part(s)"
    assert kinds.count("parquet") == len(parts) and not res.plan.unordered_segments
    archived = sum(pq.read_metadata(p).num_rows for p in parts)
    assert 0 < archived <= pushed
    print(f"analyzed {res.events} events from {kinds.count('parquet')} archive part(s) and "
          f"{kinds.count('log')} log segment(s) ({res.plan.skipped_segments} already archived)")
