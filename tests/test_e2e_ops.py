"""Operating `lockfleet serve`: Prometheus metrics, the Parquet archive it compacts sealed segments
into, structured (JSON) logs, and back-pressure: with a tiny memory bound and window, many
concurrent streams still get every batch applied exactly once (acks slow down, nothing fails)."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import free_port

from lockfleet.agent import Stream, fetch_stats, push_streams, to_ipc
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_archive_and_json_logs(serve_factory, scenario_files, lockfleet_cli):
    mport = free_port()
    server = serve_factory("--metrics-listen", f"127.0.0.1:{mport}", "--segment-bytes", "65536",
                           "--segment-seconds", "0", "--archive-retention-days", "0", "--log-format", "json")
    rows = 0
    for host, path in scenario_files.items():
        assert lockfleet_cli("push", path, "--host", host, "--target", server.target).returncode == 0
        rows += pq.read_metadata(path).num_rows if path.suffix == ".parquet" else \
            (pa.ipc.open_file(path) if path.suffix == ".arrow" else pa.ipc.open_stream(path)).read_all().num_rows
    import grpc

    with grpc.insecure_channel(server.target) as ch:
        acks = list(pb_grpc.IngestServiceStub(ch).Push(iter([pb.PushRequest(host="x", stream_id="s", seq=3, arrow_ipc=b"")]),
                                                timeout=30))
    assert acks[0].reason == "seq_gap"
    m = _metrics(mport)
    assert m["lockfleet_events_total"] == rows
    assert m["lockfleet_batches_total"] >= len(scenario_files)
    assert m['lockfleet_rejected_batches_total{reason="seq_gap"}'] == 1
    assert m["lockfleet_ack_latency_seconds_count"] >= m["lockfleet_batches_total"]
    assert m['lockfleet_ack_latency_seconds_bucket{le="+Inf"}'] == m["lockfleet_ack_latency_seconds_count"]
    assert m["lockfleet_fsync_latency_seconds_count"] >= 1
    assert m["lockfleet_alerts"] == 1 and m["lockfleet_edges"] >= 5 and m["lockfleet_lock_classes"] >= 5
    assert m["lockfleet_log_bytes"] > 0 and m["lockfleet_log_unavailable"] == 0

    # the archive: sealed segments become Parquet, partitioned by day
    archive = server.data_dir / "archive"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _metrics(mport)["lockfleet_archive_bytes"] == 0:
        time.sleep(0.1)
    assert _metrics(mport)["lockfleet_archive_bytes"] > 0
    files = sorted(archive.glob("day=*/part-*.parquet"))
    assert files and all(re.fullmatch(r"day=\d{4}-\d\d-\d\d", f.parent.name) for f in files)
    assert all(re.fullmatch(r"part-\d{8}-\d+\.parquet", f.name) for f in files)
    t = pa.concat_tables([pq.read_table(f) for f in files])
    assert 0 < t.num_rows <= rows
    assert {"ts_ns", "tid", "op", "lock", "host", "stream_id", "seq"} <= set(t.schema.names)
    assert t.column("host").null_count == 0 and set(t.column("host").to_pylist()) <= set(scenario_files)
    assert server.stop() == 0
    lines = [ln for ln in server.log().splitlines() if ln.startswith("{")]
    docs = [json.loads(ln) for ln in lines]
    assert any(d["msg"].startswith("listening on") for d in docs)
    assert all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)


def test_back_pressure_keeps_its_bounds_slows_acks_and_loses_nothing(serve_factory):
    budget, window = 1 << 20, 2
    server = serve_factory("--max-inflight-bytes", str(budget), "--max-inflight-per-stream", str(window),
                           "--group-commit-ms", "5")
    n = 20_000
    batch = pa.record_batch({"ts_ns": pa.array(range(n), pa.int64()), "tid": pa.array([1] * n, pa.int64()),
                             "op": pa.array([0, 1] * (n // 2), pa.uint8()),
                             "lock": pa.array([f"L{i % 50}" for i in range(n)], pa.utf8()),
                             "site": pa.array(["some_function+0x10/0x80\n" * 3] * n, pa.utf8())})
    payload = to_ipc(batch)
    assert len(payload) > (1 << 20) // 4     # a few batches fill the memory bound
    errors: list[BaseException] = []

    def agent(i: int) -> None:
        try:
            push_streams(server.target, f"h{i}", [Stream("s", [payload] * 12)], window=8)
        except BaseException as exc:
            errors.append(exc)

    small = to_ipc(batch.slice(0, 400))     # small batches: only the per-stream window holds these back

    def small_agent(i: int) -> None:
        try:
            push_streams(server.target, f"s{i}", [Stream("s", [small] * 40)], window=8)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=small_agent, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    assert not errors, errors
    stats = fetch_stats(server.target)
    assert stats["events"] == 6 * 12 * n + 3 * 40 * 400
    ing = stats["ingest"]
    assert ing["refused"] == 0 and ing["inflight_bytes"] == 0
    # the bounds held: never more bytes in flight than the budget, never more batches received and
    # not yet acked on one stream than its window (the agents' own window was 8) ...
    assert ing["inflight_bytes_limit"] == budget and ing["stream_window_limit"] == window
    assert 0 < ing["inflight_bytes_peak"] <= budget, ing
    assert ing["stream_window_peak"] <= window, ing
    # ... and they were reached: batches waited for room, a stream filled its window
    assert ing["inflight_waits"] > 0 and ing["inflight_bytes_peak"] > budget // 2, ing
    assert ing["stream_window_peak"] == window, ing
    print(f"in flight: peak {ing['inflight_bytes_peak']} bytes of a {budget}-byte budget, "
          f"{ing['inflight_waits']} waits; per-stream window peak {ing['stream_window_peak']} of {window}")
