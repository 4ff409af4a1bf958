"""The store behind the service, in-process: the segment log (LSNs, group commit, rolls, torn tails,
damage, a disk that fails and recovers), snapshots (atomic, checksummed, newest valid wins), the
Parquet archive (layout, columns, days, retention, idempotence), and the gateway's handling of a
log that cannot be written."""

from __future__ import annotations

import errno
import json
import threading
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lockfleet import Engine
from lockfleet.agent import to_ipc
from lockfleet.server.config import Limits
from lockfleet.server.gateway import Gateway
from lockfleet.store import (Archiver, LogCorrupt, LogUnavailable, Record, SegmentLog, load_newest, prune_snapshots,
                             read_snapshot, snapshot_files, write_snapshot)
from lockfleet.store import segment_log as seglog_module

pytestmark = pytest.mark.timeout(60)
DAY = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9 - (1_700_000_000 * 10**9) % DAY   # a midnight, UTC


def _events(n: int, ts0: int = T0, tid: int = 1, locks: tuple[str, str] = ("A", "B"), host: str | None = None) -> bytes:
    """n events (n even) of one thread taking locks[0] then locks[1] and releasing them."""
    rows = [(0, locks[0]), (0, locks[1]), (1, locks[1]), (1, locks[0])]
    ops = [rows[i % 4][0] for i in range(n)]
    names = [rows[i % 4][1] for i in range(n)]
    cols = {"ts_ns": pa.array([ts0 + i for i in range(n)], pa.int64()), "tid": pa.array([tid] * n, pa.int64()),
            "op": pa.array(ops, pa.uint8()), "lock": pa.array(names, pa.utf8())}
    if host is not None:
        cols["host"] = pa.array([host] * n, pa.utf8())
    return to_ipc(pa.record_batch(cols))


def _open(path: Path, **kw) -> tuple[SegmentLog, list[Record]]:
    log = SegmentLog(path, **kw)
    records = list(log.replay())
    log.start()
    return log, records


def test_append_replay_roll_and_replay_after_an_lsn(tmp_path):
    log, old = _open(tmp_path, segment_bytes=2000, segment_seconds=0)
    assert old == []
    lsns = [log.append(Record("h", "s", i, b"x" * 300)) for i in range(1, 31)]
    assert lsns == list(range(1, 31))
    assert log.wait_durable(30, timeout=10)
    sealed = log.sealed()
    assert len(sealed) >= 4 and sealed[0].first_lsn == 1
    assert all(a.last_lsn + 1 == b.first_lsn for a, b in zip(sealed, sealed[1:]))
    assert [r.seq for r in log.read(sealed[0])] == list(range(1, sealed[0].last_lsn + 1))
    log.close()

    again = SegmentLog(tmp_path, segment_bytes=2000)
    tail = list(again.replay(after_lsn=12))
    assert [r.lsn for r in tail] == list(range(13, 31)) and [r.seq for r in tail] == list(range(13, 31))
    again.start()
    assert again.append(Record("h", "s", 31, b"y")) == 31
    again.close()
    assert [r.lsn for r in SegmentLog(tmp_path).replay()] == list(range(1, 32))


def test_group_commit_shares_fsyncs(tmp_path):
    log, _ = _open(tmp_path, fsync="group", group_delay=0.2)
    for i in range(1, 101):
        log.append(Record("h", "s", i, b"z" * 100))
    assert log.wait_durable(100, timeout=10)
    stats = log.stats()
    assert stats["log_records"] == 100
    assert stats["log_fsyncs"] <= 10          # 100 batches, a handful of fsyncs
    log.close()

    always, _ = _open(tmp_path / "always", fsync="always")
    for i in range(1, 11):
        always.append(Record("h", "s", i, b"z"))
    assert always.wait_durable(10, timeout=10)
    assert always.stats()["log_fsyncs"] == 10
    always.close()


def test_torn_tail_is_cut_and_never_read(tmp_path):
    log, _ = _open(tmp_path)
    for i in range(1, 6):
        log.append(Record("h", "s", i, f"batch {i}".encode()))
    assert log.wait_durable(5, timeout=10)
    log.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    data = seg.read_bytes()
    whole = len(data)
    # a crash mid-write: the last record's frame is there, its payload only half
    frame = seglog_module.encode(Record("h", "s", 6, b"the sixth batch, never acknowledged"), 6)
    seg.write_bytes(data + frame[: len(frame) // 2])
    again = SegmentLog(tmp_path)
    assert [r.seq for r in again.replay()] == [1, 2, 3, 4, 5]
    assert again.torn_bytes == len(frame) // 2 and seg.stat().st_size == whole
    again.start()
    assert again.append(Record("h", "s", 6, b"resent")) == 6
    again.close()

    # a whole frame whose checksum does not match is cut too (bits that never reached the disk)
    data = seg.read_bytes()
    bad = bytearray(seglog_module.encode(Record("h", "s", 7, b"flipped"), 7))
    bad[-1] ^= 0xFF
    seg.write_bytes(data + bytes(bad))
    assert [r.seq for r in SegmentLog(tmp_path).replay()] == [1, 2, 3, 4, 5, 6]


def test_damage_in_a_sealed_segment_is_refused(tmp_path):
    log, _ = _open(tmp_path, segment_bytes=500, segment_seconds=0)
    for i in range(1, 11):
        log.append(Record("h", "s", i, b"x" * 200))
    assert log.wait_durable(10, timeout=10)
    log.close()
    first = sorted(tmp_path.glob("seg-*.log"))[0]
    data = bytearray(first.read_bytes())
    data[40] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="sealed segment"):
        list(SegmentLog(tmp_path).replay())


def test_replay_needs_the_log_after_the_snapshot(tmp_path):
    log, _ = _open(tmp_path, segment_bytes=500, segment_seconds=0)
    for i in range(1, 11):
        log.append(Record("h", "s", i, b"x" * 200))
    assert log.wait_durable(10, timeout=10)
    first = log.sealed()[0]
    log.drop(first)
    log.close()
    with pytest.raises(LogCorrupt, match="no snapshot covers it"):
        list(SegmentLog(tmp_path).replay(after_lsn=0))
    assert [r.lsn for r in SegmentLog(tmp_path).replay(after_lsn=first.last_lsn)][0] == first.last_lsn + 1


def _eventually_durable(log: SegmentLog, lsn: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if log.wait_durable(lsn, timeout=1.0):
                return
        except LogUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class FailingDisk:
    """Stands in for the segment log's write (or fsync): fails with `err` while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC, what: str = "_write_all") -> None:
        self.full = threading.Event()
        self.calls = 0
        real = getattr(seglog_module, what)

        def fake(fd, *args):
            self.calls += 1
            if self.full.is_set():
                data = b"".join(args[0]) if args and isinstance(args[0], list) else args[0] if args else b""
                if what == "_write_all" and len(data) > 8:
                    real(fd, bytes(data)[: len(data) // 2])   # a partial write, then the error
                raise OSError(err, "No space left on device" if err == errno.ENOSPC else "Input/output error")
            return real(fd, *args)

        monkeypatch.setattr(seglog_module, what, fake)


@pytest.mark.parametrize("what,err", [("_write_all", errno.ENOSPC), ("_fsync", errno.EIO)])
def test_a_failing_disk_stops_acks_keeps_records_and_recovers(tmp_path, monkeypatch, what, err):
    disk = FailingDisk(monkeypatch, err, what)
    log, _ = _open(tmp_path, retry_interval=0.05)
    log.append(Record("h", "s", 1, b"one"))
    assert log.wait_durable(1, timeout=10)
    disk.full.set()
    log.append(Record("h", "s", 2, b"two" * 100))
    log.append(Record("h", "s", 3, b"three" * 100))
    with pytest.raises(LogUnavailable, match="cannot be written"):
        log.wait_durable(3, timeout=10)
    assert log.error and log.durable_lsn == 1
    disk.full.clear()                           # space returns: the writer retries by itself
    _eventually_durable(log, 3)
    assert not log.error
    log.close()
    # no partial record was left behind, nothing is there twice
    assert [(r.lsn, r.seq) for r in SegmentLog(tmp_path).replay()] == [(1, 1), (2, 2), (3, 3)]


def test_gateway_refuses_while_the_disk_is_full_and_recovers(tmp_path, monkeypatch):
    disk = FailingDisk(monkeypatch)
    log = SegmentLog(tmp_path / "log", retry_interval=0.05)
    gw = Gateway(Engine(), log, Limits())
    gw.replay()
    ok = gw.complete(gw.admit("h", "s", 1, _events(8)))
    assert ok.ok and ok.events == 8
    disk.full.set()
    applied = gw.admit("h", "s", 2, _events(8, tid=2))
    out = gw.complete(applied)
    assert not out.ok and out.code == "UNAVAILABLE" and "No space left" in out.error
    refused = gw.complete(gw.admit("h", "s", 3, _events(8, tid=3)))
    assert (refused.code, refused.reason) == ("UNAVAILABLE", "log_unavailable")
    assert "not applied" in refused.error
    disk.full.clear()
    _eventually_durable(log, 2)
    again = gw.complete(gw.admit("h", "s", 2, _events(8, tid=2)))   # the resend of the unacked batch
    assert again.ok and again.duplicate
    assert gw.complete(gw.admit("h", "s", 3, _events(8, tid=3))).ok
    assert gw.read(lambda e: e.stats()["events"]) == 24
    log.close()
    replayed = Gateway(Engine(), SegmentLog(tmp_path / "log"))
    assert replayed.replay().events == 24


def test_snapshots_are_atomic_checksummed_and_the_newest_valid_wins(tmp_path):
    write_snapshot(tmp_path, 10, {"a": b"ten", "b": b""})
    write_snapshot(tmp_path, 20, {"a": b"twenty" * 1000})
    assert read_snapshot(tmp_path / f"snap-{20:020d}.lfsnap") == {"a": b"twenty" * 1000}
    lsn, got, problems = load_newest(tmp_path, lambda lsn, s: s["a"])
    assert (lsn, got, problems) == (20, b"twenty" * 1000, [])
    newest = tmp_path / f"snap-{20:020d}.lfsnap"
    newest.write_bytes(newest.read_bytes()[:-100])          # cut short
    lsn, got, problems = load_newest(tmp_path, lambda lsn, s: s["a"])
    assert (lsn, got) == (10, b"ten") and "checksum" in problems[0]
    (tmp_path / "snap-00000000000000000030.lfsnap.tmp").write_bytes(b"half written")
    write_snapshot(tmp_path, 30, {"a": b"thirty"})
    kept = prune_snapshots(tmp_path, keep=2)
    assert [k.lsn for k in kept] == [30, 20] and [s.lsn for s in snapshot_files(tmp_path)] == [30, 20]
    assert load_newest(tmp_path, lambda lsn, s: 1 / 0)[0] == 0   # restore fails for all: none


def test_archive_layout_columns_days_retention(tmp_path):
    log, _ = _open(tmp_path / "log", segment_bytes=1, segment_seconds=0)
    log.append(Record("web-1", "s1", 1, _events(8)))
    log.append(Record("relay", "s2", 1, _events(4, ts0=T0 + DAY - 2, host="db-7")))   # spans midnight
    log.append(Record("web-1", "s1", 2, _events(4, ts0=T0 - 40 * DAY)))
    log.append(Record("web-1", "s1", 3, _events(4)))   # stays in the active segment
    assert log.wait_durable(4, timeout=10)
    arch = Archiver(tmp_path / "archive", log, retention_days=0)
    assert arch.run_once() == 3
    day0 = str(date.fromtimestamp(T0 // 10**9))
    files = sorted(str(p.relative_to(tmp_path / "archive")) for p in (tmp_path / "archive").rglob("*.parquet"))
    assert f"day={day0}/part-00000001-0.parquet" in files and len(files) == 4
    t = pq.read_table(tmp_path / "archive" / f"day={day0}" / "part-00000001-0.parquet")
    assert t.schema.names == ["ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site",
                              "task", "host", "stream_id", "seq", "lsn", "row"]
    assert t.schema.field("seq").type == pa.uint64() and t.schema.field("host").type == pa.string()
    assert t.column("lsn").to_pylist() == [1] * 8 and t.column("row").to_pylist() == list(range(8))
    assert t.num_rows == 8 and set(t.column("host").to_pylist()) == {"web-1"}
    assert t.column("mode").to_pylist() == [0] * 8 and t.column("instance").null_count == 8
    assert pq.ParquetFile(tmp_path / "archive" / f"day={day0}" / "part-00000001-0.parquet") \
        .metadata.row_group(0).column(0).compression == "ZSTD"
    relay = pa.concat_tables([pq.read_table(tmp_path / "archive" / f / "part-00000002-0.parquet")
                              for f in (f"day={day0}", f"day={date.fromordinal(date.fromisoformat(day0).toordinal() + 1)}")])
    assert relay.num_rows == 4 and set(relay.column("host").to_pylist()) == {"db-7"}
    assert relay.column("stream_id").to_pylist() == ["s2"] * 4
    # the batch that spans midnight is split over two days; (lsn, row) put it back in log order
    assert sorted(zip(relay.column("lsn").to_pylist(), relay.column("row").to_pylist())) == [(2, r) for r in range(4)]
    assert json.loads((tmp_path / "archive" / "_state.json").read_text()) == {"archived_through_segment": 3}
    before = arch.bytes
    assert arch.run_once() == 0 and arch.bytes == before    # idempotent
    # retention: 30 days drops the partition 40 days back
    arch.retention_days = 30
    arch.run_once(today=date.fromisoformat(day0))
    days = sorted(p.name for p in (tmp_path / "archive").glob("day=*"))
    assert len(days) == 2 and all(d >= f"day={day0}" for d in days)
    log.close()
