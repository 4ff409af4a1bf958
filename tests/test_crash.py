"""Crashes against a real `lockfleet serve`: SIGKILL at random points while a pusher streams a few
hundred thousand events (and snapshots, segment rolls and archiving go on), restart, and in the end
every acknowledged event is counted exactly once and the alerts equal an in-memory Engine fed the
same events; a resend of acked batches changes nothing; SIGTERM drains; a full disk stops acks with
a clear status and the service recovers by itself when space returns."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import mount_tmpfs, require, umount
from lockfleet import Engine
from lockfleet.agent import Connection, Refused, Stream, fetch_alerts, fetch_stats, push_streams, to_ipc
from lockfleet.server.query_service import _jsonable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HOSTS = ("web-0", "web-1", "db-2", "batch-3")
LOCKS = [f"lock_{i:02d}" for i in range(24)]


def fleet_batches(rows_per_batch: int, batches_per_host: int, seed: int = 7) -> dict[str, list[pa.RecordBatch]]:
    """Per host, batches of sessions that take 1..3 locks in that host's own order of the LOCKS
    (so the hosts disagree and cycles appear across hosts), sometimes in hard-irq context."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[pa.RecordBatch]] = {}
    ts = 1_700_000_000_000_000_000
    for h, host in enumerate(HOSTS):
        order = list(rng.permutation(len(LOCKS)))
        batches = []
        for _ in range(batches_per_host):
            tid, op, lock, irq = [], [], [], []
            while len(op) < rows_per_batch:
                t = int(rng.integers(1, 64))
                k = int(rng.integers(1, 4))
                start = int(rng.integers(0, len(LOCKS) - k))
                chosen = [order[i] for i in sorted(rng.choice(range(start, min(len(LOCKS), start + 6)), k, replace=False))]
                flag = 5 if rng.random() < 0.02 else 0
                for c in chosen:
                    tid.append(t), op.append(0), lock.append(c), irq.append(flag)
                for c in reversed(chosen):
                    tid.append(t), op.append(1), lock.append(c), irq.append(flag)
            n = len(op)
            batches.append(pa.record_batch({
                "ts_ns": pa.array(np.arange(ts, ts + n, dtype=np.int64)),
                "tid": pa.array(np.array(tid, dtype=np.int64) + 1000 * h),
                "op": pa.array(np.array(op, dtype=np.uint8)),
                "lock": pa.array([LOCKS[i] for i in lock], pa.utf8()),
                "irq": pa.array(np.array(irq, dtype=np.uint8)),
                "task": pa.array([f"task/{t}" for t in tid], pa.utf8()).dictionary_encode(),
            }))
            ts += n * 1000
        out[host] = batches
    return out


def _alerts_json(alerts) -> list[dict]:
    return [json.loads(json.dumps(a.to_dict(), default=_jsonable)) for a in alerts]


def _reference(fleet: dict[str, list[pa.RecordBatch]]) -> tuple[int, list[dict]]:
    eng = Engine()
    for host in HOSTS:
        for b in fleet[host]:
            eng.ingest(b, host=host)
    return eng.stats()["events"], _alerts_json(eng.alerts())


def test_sigkill_at_random_points_loses_no_acknowledged_event(tmp_path, serve_factory):
    fleet = fleet_batches(rows_per_batch=1500, batches_per_host=60)   # 360,000 events
    ipcs = {h: [to_ipc(b) for b in bs] for h, bs in fleet.items()}
    total_batches = sum(len(v) for v in ipcs.values())
    expected_events, expected_alerts = _reference(fleet)
    assert expected_events >= 300_000 and len(expected_alerts) >= 3

    server = serve_factory("--snapshot-seconds", "0.5", "--segment-bytes", str(256 << 10), "--segment-seconds", "0",
                           "--group-commit-ms", "1", "--archive-retention-days", "0")
    acked: set[tuple[str, int]] = set()
    acked_events = 0
    lock = threading.Lock()
    failures: list[BaseException] = []

    def on_ack(stream_id: str, seq: int, ack) -> None:
        nonlocal acked_events
        with lock:
            key = (stream_id, seq)
            assert key not in acked
            acked.add(key)
            acked_events += fleet[stream_id][seq - 1].num_rows
        time.sleep(0.01)   # an agent that reads its acks slowly: the kills land mid-stream

    def pusher() -> None:
        try:
            for host in HOSTS:   # one host after another: the log's order is the reference's order
                push_streams(server.target, host, [Stream(host, ipcs[host])], retry_for=90, on_ack=on_ack)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    rng = random.Random(1234)
    kill_at = sorted(rng.sample(range(5, total_batches - 5), 5))
    thread = threading.Thread(target=pusher)
    thread.start()
    kills = 0
    for threshold in kill_at:
        while thread.is_alive():
            with lock:
                if len(acked) >= threshold:
                    break
            time.sleep(0.001)
        if not thread.is_alive():
            break
        time.sleep(rng.random() * 0.05)
        server.kill()
        kills += 1
        server.start()
    thread.join(timeout=180)
    assert not thread.is_alive(), "the pusher did not finish"
    assert not failures, failures
    assert kills >= 3
    assert len(acked) == total_batches and acked_events == expected_events

    server.kill()        # once more, after everything is acked
    server.start()
    stats = fetch_stats(server.target)
    assert stats["events"] == acked_events == expected_events
    assert stats["ingest"]["events"] == expected_events and stats["ingest"]["batches"] == total_batches
    assert _sorted(fetch_alerts(server.target)) == _sorted_dicts(expected_alerts)
    log = server.log()
    assert "restored the snapshot at lsn" in log          # restarts used snapshots...
    assert log.count("listening on") == kills + 2

    # a resend of acked batches changes nothing
    before = fetch_stats(server.target)
    result = push_streams(server.target, "db-2", [Stream("db-2", ipcs["db-2"][:20])])
    assert result.duplicates == 20 and result.events == 0
    after = fetch_stats(server.target)
    assert after["events"] == before["events"] and after["edges"] == before["edges"]
    assert after["ingest"]["duplicates"] == before["ingest"]["duplicates"] + 20
    assert _sorted(fetch_alerts(server.target)) == _sorted_dicts(expected_alerts)
    server.stop()

    # the archive (sealed segments) holds each batch at most once, whatever was killed mid-way
    parts = list((server.data_dir / "archive").rglob("*.parquet"))
    assert parts
    t = pa.concat_tables([pq.read_table(p, columns=["stream_id", "seq"]) for p in parts])
    keys = t.group_by(["stream_id", "seq"]).aggregate([([], "count_all")])
    sizes = {(s, q): n for s, q, n in zip(*(keys.column(c).to_pylist() for c in ("stream_id", "seq", "count_all")))}
    assert all(n == fleet[s][q - 1].num_rows for (s, q), n in sizes.items())


def _sorted(views) -> list[dict]:
    return sorted((v.data for v in views), key=lambda d: d["id"])


def _sorted_dicts(dicts: list[dict]) -> list[dict]:
    return sorted(dicts, key=lambda d: d["id"])


def test_sigterm_drains_every_admitted_batch(serve_factory):
    fleet = fleet_batches(rows_per_batch=2000, batches_per_host=40)
    ipcs = [to_ipc(b) for b in fleet["web-0"]]
    server = serve_factory("--group-commit-ms", "5")
    acked: list[int] = []
    outcome: list[BaseException] = []

    def pusher() -> None:
        try:
            push_streams(server.target, "web-0", [Stream("s", ipcs)], on_ack=lambda _s, seq, _a: acked.append(seq))
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    thread = threading.Thread(target=pusher)
    thread.start()
    while len(acked) < 5 and thread.is_alive():
        time.sleep(0.001)
    assert server.stop() == 0            # SIGTERM mid-stream: a clean exit
    thread.join(timeout=60)
    assert "draining" in server.log()
    server.start()
    events = fetch_stats(server.target)["events"]
    acked_events = sum(fleet["web-0"][s - 1].num_rows for s in acked)
    assert events >= acked_events        # every acked batch is there (and those applied but not yet acked)
    if outcome:
        assert isinstance(outcome[0], Exception)
    # the rest can be pushed again: nothing twice
    push_streams(server.target, "web-0", [Stream("s", ipcs)], retry_for=30)
    assert fetch_stats(server.target)["events"] == sum(b.num_rows for b in fleet["web-0"])
    assert "snapshot at lsn" in server.log()
    server.stop()


def test_disk_full_stops_acks_with_a_clear_status_and_recovers(tmp_path, serve_factory):
    data = tmp_path / "disk"
    require(mount_tmpfs(data, "12m"), "cannot mount a tmpfs here (needs root); the same path is covered in-process "
            "by test_segment_log.py::test_gateway_refuses_while_the_disk_is_full_and_recovers")
    server = None
    try:
        fleet = fleet_batches(rows_per_batch=4000, batches_per_host=30)
        ipcs = [to_ipc(b) for b in fleet["web-1"]]
        server = serve_factory("--segment-bytes", str(1 << 20), "--snapshot-seconds", "0", "--snapshot-bytes", "0",
                               data_dir=data / "data")
        filler = data / "filler"
        free = _free_bytes(data)
        filler.write_bytes(b"\0" * max(0, free - (1 << 20)))   # leave about 1 MiB
        acked: list[int] = []
        with pytest.raises(Refused) as refusal:
            push_streams(server.target, "web-1", [Stream("s", ipcs)],
                         on_ack=lambda _s, seq, _a: acked.append(seq))
        assert refusal.value.code == "UNAVAILABLE"
        assert "No space left on device" in str(refusal.value)
        assert len(acked) < len(ipcs)
        stats = fetch_stats(server.target)     # queries still work
        assert stats["ingest"]["log_write_errors"] >= 1
        filler.unlink()                        # space returns
        result = push_streams(server.target, "web-1", [Stream("s", ipcs)], retry_for=60)
        assert result.batches == len(ipcs)
        total = sum(b.num_rows for b in fleet["web-1"])
        assert fetch_stats(server.target)["events"] == total
        server.kill()
        server.start()
        assert fetch_stats(server.target)["events"] == total
        assert "cannot be written: No space left on device" in server.log()
        assert "writable again" in server.log()
    finally:
        if server is not None:
            server.stop()
        umount(data)


def _free_bytes(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_push_cli_resumes_after_a_restart(tmp_path, lockfleet_cli, serve_factory):
    """`lockfleet push --retry-for` rides over a restart and applies nothing twice."""
    fleet = fleet_batches(rows_per_batch=70000, batches_per_host=1)
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_batches(fleet["web-0"]), path)
    server = serve_factory()
    assert lockfleet_cli("push", path, "--host", "web-0", "--target", server.target).returncode == 0
    server.kill()
    server.start()
    proc = lockfleet_cli("push", path, "--host", "web-0", "--target", server.target, "--retry-for", "30")
    assert proc.returncode == 0 and "already there" in proc.stdout
    assert fetch_stats(Connection(server.target))["events"] == 70000
