"""Helpers for the offline tests (imported by the other test_offline_* modules), and checks of the
helpers themselves.

- `workload(seed, ...)`: random multi-host lock traffic with many order-dependent cycles, as the
  (host, batch) pairs a service would apply, in its apply order;
- `service_run(records)`: what the service raises for them (an Engine fed record by record);
- `write_archive(...)`: a Parquet archive exactly in the service's layout
  (`archive/day=YYYY-MM-DD/part-<segment-seq>-<n>.parquet`, zstd, the columns of docs/contract.md section 2 with the host
  always filled, plus stream_id and seq, rows in apply order, parts cut anywhere);
- `write_data_dir(...)`: a service data dir: the log written with the service's own SegmentLog,
  its first segments compacted into the archive, the rest left in the log.
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eventgen import SCHEMA, Ev, events

DAY_NS = 86_400 * 10**9
T0 = 1_735_689_600 * 10**9          # 2025-01-01T00:00:00Z


@dataclass(frozen=True)
class Rec:
    """One batch as the service applied it: its stream's host, stream id and seq, and the batch."""

    host: str
    stream_id: str
    seq: int
    batch: pa.RecordBatch


def workload(seed: int, *, hosts: int = 3, threads: int = 3, locks: int = 7, batches: int = 24,
             rows: int = 40, relay_rows: bool = True, t0: int = T0, step_ns: int = 1000) -> list[Rec]:
    """Random nested locking on several hosts: acquisitions (some reads, trylocks, subclasses),
    releases mostly last-in first-out, sometimes out of order, sometimes of a lock not held.
    Small lock sets make many cycles that share edges, so the order of rows decides which cycle a
    closing dependency reports. Some batches carry a host column naming other hosts (a relay)."""
    rng = random.Random(seed)
    names = [f"L{i}" for i in range(locks)]
    held: dict[tuple[str, int], list[str]] = {}
    seq: dict[str, int] = {}
    ts = t0
    out = []
    for b in range(batches):
        host = f"h{rng.randrange(hosts)}"
        relay = relay_rows and rng.random() < 0.25
        evs = []
        for _ in range(rng.randint(1, rows)):
            row_host = f"h{rng.randrange(hosts)}" if relay and rng.random() < 0.7 else None
            tid = 100 + rng.randrange(threads)
            stack = held.setdefault((row_host or host, tid), [])
            ts += rng.randint(1, step_ns)
            r = rng.random()
            if stack and r < 0.42:
                name = stack.pop() if rng.random() < 0.85 else stack.pop(rng.randrange(len(stack)))
                evs.append(Ev(tid, 1, name, host=row_host, ts_ns=ts))
            elif r < 0.45:
                evs.append(Ev(tid, 1, rng.choice(names), host=row_host, ts_ns=ts))   # a bad unlock
            elif len(stack) < 5:
                name = rng.choice(names)
                op = 2 if rng.random() < 0.1 else 0
                mode = rng.choice((0, 0, 0, 1, 2))
                sub = 1 if rng.random() < 0.08 else 0
                stack.append(name)
                evs.append(Ev(tid, op, name, mode=mode, subclass=sub, host=row_host, ts_ns=ts,
                              site=f"f{rng.randrange(9)}+0x1/0x9", task=f"t{tid}"))
        seq[host] = seq.get(host, 0) + 1
        out.append(Rec(host, f"stream-{host}", seq[host], events(evs, host_column=relay, dictionary=b % 2 == 0)))
    return out


def service_run(records: list[Rec]):
    """The Engine fed as the gateway feeds it: one batch at a time, for the batch's host."""
    from lockfleet import Engine

    eng = Engine()
    for r in records:
        eng.ingest(r.batch, host=r.host)
    return eng


def archive_table(records: list[Rec]) -> pa.Table:
    """All rows in apply order, in the archive's columns: the host always filled, stream_id, seq."""
    tables = []
    for r in records:
        t = pa.Table.from_batches([r.batch])
        cols = {}
        for f in SCHEMA:
            if f.name in t.column_names:
                col = t.column(f.name).combine_chunks()
                cols[f.name] = col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
            elif pa.types.is_integer(f.type):
                cols[f.name] = pa.array([0] * t.num_rows, f.type)
            else:
                cols[f.name] = pa.nulls(t.num_rows, f.type)
        cols["host"] = pa.compute.fill_null(cols["host"].cast(pa.utf8()), r.host)
        cols["stream_id"] = pa.array([r.stream_id] * t.num_rows, pa.utf8())
        cols["seq"] = pa.array([r.seq] * t.num_rows, pa.uint64())
        tables.append(pa.table(cols))
    return pa.concat_tables(tables)


def _day(ts_ns: int) -> str:
    import time

    return time.strftime("%Y-%m-%d", time.gmtime(ts_ns // 10**9))


def write_parts(archive: Path, table: pa.Table, segment: int, cuts: list[int], day: str | None = None) -> list[Path]:
    """One segment's rows as part files cut at `cuts` (row offsets), n = 0, 1, ...; the day
    partition is the day of the segment's first row unless given."""
    bounds = [0, *sorted(c for c in cuts if 0 < c < table.num_rows), table.num_rows]
    out = []
    for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
        part = table.slice(a, b - a)
        d = day or _day(table.column("ts_ns")[0].as_py() if table.num_rows else T0)
        path = archive / f"day={d}" / f"part-{segment}-{n}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, compression="zstd", row_group_size=max(1, min(16, part.num_rows)))
        out.append(path)
    return out


def write_archive(root: Path, records: list[Rec], *, segments: int = 4, seed: int = 0,
                  days: int = 3) -> Path:
    """The records as an archive under root/archive: `segments` segments (seq 1, 2, ... so that
    9, 10, 11 sort wrongly as text when there are many), each cut into a few parts at random rows,
    spread over `days` day partitions."""
    rng = random.Random(seed)
    table = archive_table(records)
    archive = root / "archive"
    n = table.num_rows
    seg_bounds = [0, *sorted(rng.sample(range(1, n), min(segments - 1, max(0, n - 1)))), n]
    for s, (a, b) in enumerate(zip(seg_bounds, seg_bounds[1:]), start=1):
        seg = table.slice(a, b - a)
        cuts = sorted(rng.sample(range(1, seg.num_rows), min(2, max(0, seg.num_rows - 1)))) if seg.num_rows > 1 else []
        day = _day(T0 + (s * days // (segments + 1)) * DAY_NS)
        write_parts(archive, seg, s + 8 if segments > 3 else s, cuts, day)
    return archive


def ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def write_log(log_dir: Path, records: list[Rec], segment_bytes: int = 4096) -> None:
    """The records through the service's own SegmentLog (small segments, so that there are many)."""
    from lockfleet.store import Record, SegmentLog

    log = SegmentLog(log_dir, segment_bytes=segment_bytes, fsync="never")
    for _ in log.replay():
        pass
    log.start()
    try:
        last = 0
        for r in records:
            last = log.append(Record(host=r.host, stream_id=r.stream_id, seq=r.seq, ipc=ipc(r.batch)))
        assert log.wait_durable(last, timeout=30)
    finally:
        log.close()


def compact(data_dir: Path, upto_segment: int, *, drop: bool = False, seed: int = 0) -> int:
    """Archive log segments 1..upto_segment as the compactor would (one segment -> its parts,
    rows in log order), optionally dropping them from the log; returns the rows archived."""
    from lockfleet.offline.scan import read_log_segment

    rng = random.Random(seed)
    rows = 0
    for seg_path in sorted((data_dir / "log").glob("seg-*.log")):
        seg = int(seg_path.stem.split("-")[1])
        if seg > upto_segment:
            continue
        recs = []
        for rec in read_log_segment(seg_path):
            with pa.ipc.open_stream(pa.py_buffer(rec.ipc)) as rd:
                for b in rd:
                    recs.append(Rec(rec.host, rec.stream_id, rec.seq, b))
        table = archive_table(recs)
        if table.num_rows:
            cuts = (sorted(rng.sample(range(1, table.num_rows), min(2, table.num_rows - 1)))
                    if table.num_rows > 1 else [])
            write_parts(data_dir / "archive", table, seg, cuts)
            rows += table.num_rows
        if drop:
            seg_path.unlink()
    return rows


def alert_ids(eng) -> list[str]:
    return [a.id for a in eng.alerts()]


# ----------------------------------------------------------------------------------------------- checks

def test_workload_is_order_sensitive_and_has_cycles():
    recs = workload(3)
    eng = service_run(recs)
    kinds = {a.kind for a in eng.alerts()}
    assert "circular" in kinds and "bad_unlock" in kinds
    assert len({r.host for r in recs}) > 1


def test_archive_layout(tmp_path):
    recs = workload(5)
    archive = write_archive(tmp_path, recs, segments=5)
    parts = sorted(archive.glob("day=*/part-*-*.parquet"))
    assert parts and all(p.parent.name.startswith("day=2025-01-0") for p in parts)
    t = pq.read_table(parts[0])
    assert {"stream_id", "seq", "host"} <= set(t.column_names)
    assert t.column("host").null_count == 0
    total = sum(pq.read_metadata(p).num_rows for p in parts)
    assert total == sum(r.batch.num_rows for r in recs)


def compact_by_day(data_dir: Path, *, order_columns: bool) -> int:
    """Archive every log segment but the last the way the service's archiver does (each record's
    rows split by the UTC day of ts_ns, per-day part numbers, 8-digit segment seq,
    archive/_state.json), optionally with the order columns lsn and row; returns segments done."""
    import json

    from lockfleet.offline.scan import read_log_segment

    segs = sorted((data_dir / "log").glob("seg-*.log"))[:-1]
    for seg_path in segs:
        seg = int(seg_path.stem.split("-")[1])
        by_day: dict[str, list[pa.Table]] = {}
        for rec in read_log_segment(seg_path):
            with pa.ipc.open_stream(pa.py_buffer(rec.ipc)) as rd:
                batches = list(rd)
            t = archive_table([Rec(rec.host, rec.stream_id, rec.seq, b) for b in batches])
            if order_columns:
                t = t.append_column("lsn", pa.array([rec.lsn] * t.num_rows, pa.uint64()))
                t = t.append_column("row", pa.array(range(t.num_rows), pa.uint32()))
            days = [_day(x) for x in t.column("ts_ns").to_pylist()]
            for d in sorted(set(days)):
                by_day.setdefault(d, []).append(t.filter(pa.array([x == d for x in days])))
        for d, tables in by_day.items():
            folder = data_dir / "archive" / f"day={d}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.concat_tables(tables), folder / f"part-{seg:08d}-0.parquet", compression="zstd")
        (data_dir / "archive").mkdir(parents=True, exist_ok=True)
        (data_dir / "archive" / "_state.json").write_text(json.dumps({"archived_through_segment": seg}))
    return len(segs)
