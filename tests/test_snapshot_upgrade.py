"""Snapshot formats across versions, and damaged snapshots: a data dir written by the previous
version (tests/fixtures/datadir-previous, made by tests/fixtures/make_datadir.py) starts with its
whole state; a snapshot in a format this build does not read falls back to replaying the log, or,
when the log was pruned, the service refuses to start (never a silent empty or partial graph); a
corrupted newest snapshot is detected and the previous one used.

The state expected is independent of the service: a fresh Engine fed the fixture's log records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from conftest import run_lockfleet
from lockfleet import Engine
from lockfleet.agent import Stream, fetch_alerts, fetch_stats, push_streams, to_ipc
from lockfleet.agent.client.fetch import fetch_hosts
from lockfleet.server.gateway import SNAPSHOT_VERSION
from lockfleet.store import SegmentLog, read_snapshot, snapshot_files, write_snapshot
from lockfleet.store.snapshot import section_format
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc
from receivers import events, nest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "datadir-previous"
MANIFEST = json.loads((FIXTURE / "MANIFEST.json").read_text())


def copy_fixture(to: Path) -> Path:
    shutil.copytree(FIXTURE, to)
    (to / "MANIFEST.json").unlink()
    return to


def from_the_log(data: Path) -> tuple[int, dict[str, dict], dict[str, bytes]]:
    """(events, alert id -> to_dict()) of a fresh Engine fed every record of the data dir's log,
    and each stream's first batch ("host/stream" -> Arrow IPC)."""
    scratch = data.parent / (data.name + "-oracle")
    shutil.copytree(data / "log", scratch)
    eng, n, firsts = Engine(), 0, {}
    seglog = SegmentLog(scratch, fsync="never")
    try:
        for rec in seglog.replay():
            table = pa.ipc.open_stream(pa.py_buffer(rec.ipc)).read_all()
            eng.ingest(table, host=rec.host)
            n += table.num_rows
            firsts.setdefault(f"{rec.host}/{rec.stream_id}", rec.ipc)
    finally:
        seglog.close()
    return n, {a.id: a.to_dict() for a in eng.alerts()}, firsts


def resend(target: str, host: str, stream: str, seq: int, ipc: bytes = b"") -> pb.PushAck:
    ipc = ipc or to_ipc(events(nest(1, "resend_a", "resend_b")).to_batches()[0])
    with grpc.insecure_channel(target) as ch:
        (ack,) = list(pb_grpc.IngestStub(ch).Push(iter([pb.PushBatch(host=host, stream_id=stream, seq=seq,
                                                                       arrow_ipc=ipc)]), timeout=30))
    return ack


def assert_whole_state(server, data: Path) -> int:  # noqa: ANN001
    """Checks the service holds the fixture's whole state; then applies one more batch (returns its rows)."""
    events_in_log, alerts, firsts = from_the_log(data)
    assert events_in_log == MANIFEST["events"]
    stats = fetch_stats(server.target)
    assert stats["events"] == MANIFEST["events"], "the graph came back partial or empty"
    got = {a.data["id"]: a.data for a in fetch_alerts(server.target)}
    assert set(got) == set(alerts) and alerts, (sorted(got), sorted(alerts))
    for i, a in alerts.items():
        assert (got[i]["kind"], list(got[i]["locks"]), list(got[i]["hosts"])) == (a["kind"], a["locks"], a["hosts"])
    assert set(MANIFEST["hosts"]) <= {h["host"] for h in fetch_hosts(server.target)}
    # every stream's high-water mark came back: its last seq again is a duplicate, the next one applies
    for key, high in MANIFEST["streams"].items():
        host, stream = key.split("/")
        again = resend(server.target, host, stream, high)
        assert again.ok and again.duplicate, (key, again)
    nxt = resend(server.target, "boot-0", "s", MANIFEST["streams"]["boot-0/s"] + 1, firsts["boot-0/s"])
    assert nxt.ok and not nxt.duplicate and nxt.events > 0, nxt        # same schema kept for the stream
    return nxt.events


def bump_engine_format(data: Path, magic: bytes = b"LFENG000") -> None:
    """Rewrite the snapshot (whole, valid checksum) as if its engine section came from a format
    this build does not read."""
    (snap,) = snapshot_files(data / "snapshots")
    sections = read_snapshot(snap.path)
    sections["engine"] = magic + sections["engine"][8:]
    write_snapshot(data / "snapshots", snap.lsn, sections)


def test_the_fixture_is_a_previous_versions_data_dir():
    assert len(MANIFEST["log_segments"]) >= 2 and (FIXTURE / "log" / "seg-00000001.log").is_file()
    (snap,) = snapshot_files(FIXTURE / "snapshots")
    assert snap.lsn == MANIFEST["snapshot"]["lsn"]
    assert section_format(read_snapshot(snap.path)["engine"]) == MANIFEST["snapshot"]["engine"]


def test_the_previous_versions_data_dir_starts_with_its_whole_state(tmp_path, serve_factory):
    data = copy_fixture(tmp_path / "data")
    server = serve_factory(data_dir=data)
    same = MANIFEST["snapshot"]["gateway"] == SNAPSHOT_VERSION and \
        MANIFEST["snapshot"]["engine"] == section_format(Engine().snapshot())
    if same:     # this build reads the fixture's snapshot as it is
        assert f"restored the snapshot at lsn {MANIFEST['snapshot']['lsn']}" in server.log()
    else:        # a newer format: the log, which still starts at lsn 1, rebuilds the state
        assert "rebuilding the state by replaying the whole log" in server.log()
    more = assert_whole_state(server, data)
    # and it goes on: a restart now uses this build's own snapshot
    server.restart()
    assert "restored the snapshot at lsn" in server.log().rsplit("listening on", 2)[-2]
    assert fetch_stats(server.target)["events"] == MANIFEST["events"] + more


def test_a_snapshot_format_this_build_does_not_read_falls_back_to_the_log(tmp_path, serve_factory):
    data = copy_fixture(tmp_path / "data")
    bump_engine_format(data)
    server = serve_factory(data_dir=data)
    log = server.log()
    assert "engine section LFENG000 is not a format this build restores" in log
    assert "rebuilding the state by replaying the whole log from lsn 1" in log
    assert "nothing from a snapshot" in log
    assert_whole_state(server, data)


def test_with_no_usable_snapshot_and_a_pruned_log_the_service_refuses_to_start(tmp_path):
    data = copy_fixture(tmp_path / "data")
    bump_engine_format(data)
    (data / "log" / "seg-00000001.log").unlink()        # pruned after archiving, as a long-running service does
    proc = run_lockfleet("serve", "--listen", "127.0.0.1:0", "--data-dir", data, timeout=60)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "no snapshot is usable" in last and "partial graph" in last and "refusing to start" in last
    assert "LFENG000" in last


def test_a_corrupted_newest_snapshot_is_detected_and_the_previous_one_used(tmp_path, serve_factory):
    server = serve_factory("--snapshot-seconds", "0")      # snapshots at shutdown only
    first = [to_ipc(events(nest(1, "snap_a", "snap_b")).to_batches()[0])]
    push_streams(server.target, "c1", [Stream("s", first)])
    server.restart()                                       # snapshot 1
    push_streams(server.target, "c2", [Stream("s", [to_ipc(events(nest(1, "snap_b", "snap_a")).to_batches()[0])])])
    want = {a.data["id"] for a in fetch_alerts(server.target)}
    assert len(want) == 1
    server.stop()                                          # snapshot 2
    newest, older = snapshot_files(server.data_dir / "snapshots")[:2]
    raw = bytearray(newest.path.read_bytes())
    raw[len(raw) // 2] ^= 0x40                             # one flipped bit in the middle
    newest.path.write_bytes(bytes(raw))
    server.start()
    log = server.log().rsplit("listening on", 1)[0]
    assert f"skipping snapshot {newest.path}" in log and "checksum mismatch" in log
    assert f"restored the snapshot at lsn {older.lsn}" in log.rsplit("skipping snapshot", 1)[1]
    assert fetch_stats(server.target)["events"] == 8
    assert {a.data["id"] for a in fetch_alerts(server.target)} == want
    assert resend(server.target, "c2", "s", 1).duplicate          # the newer stream came back from the log
