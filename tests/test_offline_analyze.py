"""`lockfleet analyze`: the same findings, with the same ids, as the service raised for the same
events; from an archive, a data dir (archive + log segments not yet compacted), or event files;
with the selection options; with clean --json and a progress bar only on a terminal."""

from __future__ import annotations

import io
import json
import os
import sys
from contextlib import redirect_stdout

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_offline_fixtures import (T0, Rec, alert_ids, compact, compact_by_day, ipc,  # noqa: E402
                                   service_run, workload, write_archive, write_log)

from lockfleet import Engine  # noqa: E402
from lockfleet.cli import main  # noqa: E402
from lockfleet.offline import ScanError, Selection, analyze  # noqa: E402
from lockfleet.offline.progress import Progress  # noqa: E402
from lockfleet.offline.scan import parse_time, plan  # noqa: E402

SEEDS = range(6)


def _dicts(eng) -> list[dict]:
    return [a.to_dict() for a in eng.alerts()]


@pytest.mark.parametrize("seed", SEEDS)
def test_archive_gives_the_service_alerts(tmp_path, seed):
    recs = workload(seed)
    expected = service_run(recs)
    archive = write_archive(tmp_path, recs, segments=5, seed=seed)
    for chunk_rows in (7, 65536):          # chunk boundaries do not matter, only row order does
        got = analyze([archive], aggregates=False, chunk_rows=chunk_rows)
        assert alert_ids(got.engine) == alert_ids(expected)
        assert [a["locks"] for a in _dicts(got.engine)] == [a["locks"] for a in _dicts(expected)]
        assert [a["hosts"] for a in _dicts(got.engine)] == [a["hosts"] for a in _dicts(expected)]
        assert got.events == sum(r.batch.num_rows for r in recs)
        assert got.engine.edges() == expected.edges()


def test_order_matters_and_per_host_order_would_differ(tmp_path):
    """The reason analyze follows the log order: for some workload, applying the same rows host by
    host raises other cycles (or other ids) than the service did."""
    differs = False
    for seed in range(30):
        recs = workload(seed)
        eng = Engine()
        for host in sorted({r.host for r in recs}):
            for r in recs:
                if r.host == host:
                    eng.ingest(r.batch, host=r.host)
        if alert_ids(eng) != alert_ids(service_run(recs)):
            differs = True
            break
    assert differs


def test_part_files_sort_by_segment_number_not_text(tmp_path):
    recs = workload(11, batches=40)
    archive = write_archive(tmp_path, recs, segments=12, seed=1)   # segments 9..20
    names = [s.path.name for s in plan([archive]).sources]
    segs = [(int(n.split("-")[1]), int(n.split("-")[2].split(".")[0])) for n in names]
    assert segs == sorted(segs) and names != sorted(names)
    assert alert_ids(analyze([archive], aggregates=False).engine) == alert_ids(service_run(recs))


@pytest.mark.parametrize("compacted, drop", [(0, False), (3, False), (3, True), (99, True)])
def test_data_dir_archive_plus_log_segments(tmp_path, compacted, drop):
    """Archive + log segments not yet compacted = everything the service applied, each once."""
    recs = workload(21, batches=40)
    data = tmp_path / "data"
    write_log(data / "log", recs, segment_bytes=3000)
    segments = len(list((data / "log").glob("seg-*.log")))
    assert segments > 4
    if compacted:
        compact(data, compacted, drop=drop)
    got = analyze([data], aggregates=False)
    assert got.events == sum(r.batch.num_rows for r in recs)
    assert alert_ids(got.engine) == alert_ids(service_run(recs))
    archived = [s for s in got.plan.sources if s.kind == "parquet"]
    assert bool(archived) == bool(compacted)
    if compacted and not drop:
        assert got.plan.skipped_segments == min(compacted, segments)


def test_log_segment_torn_tail_is_read_up_to_the_tear(tmp_path):
    recs = workload(4)
    write_log(tmp_path / "log", recs, segment_bytes=1 << 20)
    seg = sorted((tmp_path / "log").glob("seg-*.log"))[-1]
    data = seg.read_bytes()
    seg.write_bytes(data + b"\x10\x00\x00\x00garbage")      # a write that never finished
    got = analyze([tmp_path], aggregates=False)
    assert alert_ids(got.engine) == alert_ids(service_run(recs))
    assert seg.read_bytes() == data + b"\x10\x00\x00\x00garbage"   # read-only: nothing cut


def _plain(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return t.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
                             for f in t.schema]))


def test_event_files_are_one_host_each_in_row_order(tmp_path):
    """Files without a host column: the host is the file name (or a host=NAME dir); applied one
    file after another, as pushing them one by one would."""
    recs = workload(8, relay_rows=False)
    by_host: dict[str, list[pa.RecordBatch]] = {}
    for r in recs:
        by_host.setdefault(r.host, []).append(r.batch)
    expected = Engine()
    paths = []
    for i, (host, batches) in enumerate(sorted(by_host.items())):
        table = pa.concat_tables([_plain(b) for b in batches])
        for b in batches:
            expected.ingest(b, host=host)
        if i == 0:
            path = tmp_path / f"{host}.parquet"
            pq.write_table(table, path)
        elif i == 1:
            path = tmp_path / f"host={host}" / "events.arrow"
            path.parent.mkdir()
            with pa.ipc.new_file(path, table.schema) as w:
                w.write_table(table)
        else:
            path = tmp_path / f"{host}.arrows"
            with pa.ipc.new_stream(path, table.schema) as w:
                w.write_table(table)
        paths.append(path)
    got = analyze(paths, aggregates=False)
    assert alert_ids(got.engine) == alert_ids(expected)
    assert sorted({h for a in got.alerts for h in a.hosts}) == sorted({h for a in expected.alerts() for h in a.hosts})


def test_selection_since_until_hosts(tmp_path):
    recs = workload(2, hosts=3, batches=30, step_ns=10**12)   # ~ a week of events
    archive = write_archive(tmp_path, recs, segments=5)
    rows = [(r, i) for r in recs for i in range(r.batch.num_rows)]
    ts = sorted(r.batch.column("ts_ns")[i].as_py() for r, i in rows)
    since, until = ts[len(ts) // 4], ts[3 * len(ts) // 4]
    sel = Selection(since=since, until=until, hosts=frozenset({"h0", "h2"}))
    expected = Engine()
    for r in recs:
        t = pa.Table.from_batches([r.batch])
        host = t.column("host").to_pylist() if "host" in t.column_names else [None] * t.num_rows
        keep = [since <= x < until and (h or r.host) in sel.hosts for x, h in zip(t.column("ts_ns").to_pylist(), host)]
        expected.ingest(t.filter(pa.array(keep)), host=r.host)
    got = analyze([archive], sel, aggregates=False)
    assert alert_ids(got.engine) == alert_ids(expected)
    assert got.events == expected.stats()["events"] < len(rows)
    # files wholly outside the range are not read
    narrow = Selection(since=ts[-1] + 1)
    p = plan([archive], narrow)
    assert p.pruned_files > 0 and not p.sources


def test_parse_time():
    assert parse_time("2025-01-01") == T0
    assert parse_time("2025-01-01T00:00:01Z") == T0 + 10**9
    assert parse_time("2025-01-01 01:00:00+01:00") == T0
    assert parse_time("2025-01-01T00:00:00.5") == T0 + 5 * 10**8
    with pytest.raises(ScanError):
        parse_time("yesterday")


def _run(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def test_cli_json_is_one_clean_document(tmp_path, capsys):
    recs = workload(1)
    archive = write_archive(tmp_path, recs)
    rc, out = _run(["analyze", str(archive), "--json", "--top", "3"])
    assert rc == 0
    doc = json.loads(out)
    assert [a["id"] for a in doc["alerts"]] == alert_ids(service_run(recs))
    assert set(doc["aggregates"]) == {"classes", "hosts", "hold_times", "edges", "held_while_taking"}
    assert all(len(t["top"]) <= 3 for t in doc["aggregates"].values())
    assert doc["summary"]["events"] == sum(r.batch.num_rows for r in recs)
    assert capsys.readouterr().err == ""
    rc, out = _run(["analyze", str(archive), "--alerts-only"])
    assert rc == 0 and "possible circular locking dependency detected" in out


def test_cli_bad_input_exit_2_with_one_line(tmp_path, capsys):
    rc, _ = _run(["analyze", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no such file" in err
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"ts_ns": pa.array([1], pa.int64()), "tid": pa.array([1], pa.int64())}), bad)
    rc, _ = _run(["analyze", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "column(s) op, lock missing" in err
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"ts_ns": pa.array([1], pa.int64()), "tid": pa.array([1], pa.int64()),
                             "op": pa.array([7], pa.uint8()), "lock": ["A"]}), wrong)
    rc, _ = _run(["analyze", str(wrong), "--alerts-only"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "'op'" in err and "wrong.parquet" in err
    with pytest.raises(SystemExit) as exc:
        main(["analyze", str(wrong), "--since", "not-a-time"])
    assert exc.value.code == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = Progress(1000, stream=stream)
        bar._last = -1e9
        bar.update(500)
        bar.status("aggregating")
        bar.close()
    assert "500/1.0k events" in tty.getvalue() and "aggregating" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_one_record_batches_with_ipc_and_empty_batches(tmp_path):
    """Log records are Arrow IPC streams; an empty batch applies nothing and breaks nothing."""
    recs = workload(9, batches=10)
    empty = Rec("h0", "stream-h0", 99, recs[0].batch.slice(0, 0))
    write_log(tmp_path / "log", [*recs, empty])
    assert alert_ids(analyze([tmp_path / "log"], aggregates=False).engine) == alert_ids(service_run(recs))
    assert ipc(recs[0].batch)


def test_add_offline_parsers_on_the_lockfleet_parser():
    """The three commands sit next to the others on `lockfleet`'s own parser, each with `func`."""
    import argparse

    from lockfleet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"analyze", "diff", "report"} <= set(sub.choices)
    args = parser.parse_args(["analyze", "some/dir", "--json", "--since", "2025-01-01", "--hosts", "a,b"])
    assert args.command == "analyze" and callable(args.func)
    assert args.since == T0 and args.hosts == frozenset({"a", "b"}) and args.json
    args = parser.parse_args(["diff", "a", "b", "--new-since", "2025-01-01"])
    assert args.command == "diff" and args.new_since == T0 and callable(args.func)
    args = parser.parse_args(["report", "a", "-o", "r.html"])
    assert args.command == "report" and args.output == "r.html" and callable(args.func)


def test_the_service_archiver_output_gives_the_service_alerts(tmp_path):
    """The service's own Archiver over the service's own SegmentLog, in process."""
    from lockfleet import store
    recs = workload(31, batches=40)
    data = tmp_path / "data"
    write_log(data / "log", recs, segment_bytes=3000)
    log = store.SegmentLog(data / "log", segment_bytes=3000, fsync="never")
    for _ in log.replay():
        pass
    try:
        arch = store.Archiver(data / "archive", log, retention_days=0, rows_per_file=50)
        assert arch.run_once() > 2
    finally:
        log.close()
    got = analyze([data], aggregates=False)
    assert alert_ids(got.engine) == alert_ids(service_run(recs))
    assert got.events == sum(r.batch.num_rows for r in recs)
    assert {s.kind for s in got.plan.sources} == {"parquet", "log"}
    assert not got.plan.unordered_segments
    # a compaction caught half-way (parts written, state not yet): that segment comes from the log
    state = json.loads((data / "archive" / "_state.json").read_text())
    behind = {"archived_through_segment": state["archived_through_segment"] - 2}
    (data / "archive" / "_state.json").write_text(json.dumps(behind))
    again = analyze([data], aggregates=False)
    assert alert_ids(again.engine) == alert_ids(service_run(recs)) and again.events == got.events
    assert again.plan.ignored_parts > 0


@pytest.mark.parametrize("order_columns", [True, False])
def test_segments_split_over_days(tmp_path, order_columns):
    """Batches whose rows straddle midnight UTC: the archiver splits each segment by day. With the
    order columns (lsn, row) analyze merges them back into log order; without, it says so."""
    recs = workload(17, batches=40, t0=T0 + 86_400 * 10**9 - 40_000, step_ns=300)
    data = tmp_path / "data"
    write_log(data / "log", recs, segment_bytes=20000)
    assert compact_by_day(data, order_columns=order_columns) >= 2
    got = analyze([data], aggregates=not order_columns)
    assert got.events == sum(r.batch.num_rows for r in recs)
    if order_columns:
        assert any(s.kind == "parquet_merged" for s in got.plan.sources)
        assert alert_ids(got.engine) == alert_ids(service_run(recs))
        agg = analyze([data]).aggregates
        assert int(agg.classes["events"].sum()) == got.events
    else:
        assert got.plan.unordered_segments
        assert got.summary()["segments_split_over_days"] == got.plan.unordered_segments
