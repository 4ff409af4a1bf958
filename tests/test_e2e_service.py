"""End to end: `lockfleet serve` as a subprocess, fed by `lockfleet push` subprocesses with the seed
scenario spread over four hosts, read back with `lockfleet alerts/stats/chain`; restarts on the
same data dir; idempotent pushes; bad input refused with exit 2 and a one-line reason."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ServeProcess, run_lockfleet

from lockfleet.demo import CYCLE, HOSTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _push_all(cli, server, files: dict[str, Path]) -> None:
    for host in HOSTS:  # bpf-3 last: it closes the cycle, as test_progs did
        _ok(cli("push", files[host], "--host", host, "--target", server.target))


def _alerts(cli, server) -> list[dict]:
    doc = json.loads(_ok(cli("alerts", "--json", "--target", server.target)))
    return doc["alerts"]


def _stats(cli, server) -> dict:
    return json.loads(_ok(cli("stats", "--json", "--target", server.target)))


def _rows(files: dict[str, Path]) -> int:
    import pyarrow as pa

    total = 0
    for path in files.values():
        if path.suffix == ".parquet":
            total += pq.read_metadata(path).num_rows
        elif path.suffix == ".arrow":
            total += pa.ipc.open_file(path).read_all().num_rows
        else:
            total += pa.ipc.open_stream(path).read_all().num_rows
    return total


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line reason, got:\n{text}"
    return lines[0]


def test_fleet_cycle_survives_restart_and_repeat_pushes(lockfleet_cli, lockfleet_server, scenario_files):
    cli, server = lockfleet_cli, lockfleet_server
    _push_all(cli, server, scenario_files)

    alerts = _alerts(cli, server)
    assert [a["kind"] for a in alerts] == ["circular"]
    alert = alerts[0]
    assert alert["locks"] == list(CYCLE)       # closed by bpf-3's tracepoints_mutex, lockdep's #0
    assert alert["hosts"] == sorted(HOSTS)
    assert alert["single_host"] is None        # no host saw the whole cycle
    stats = _stats(cli, server)
    total = _rows(scenario_files)
    assert stats["events"] == total
    assert stats["alerts"] == 1
    assert stats["locks"] >= len(CYCLE) and stats["edges"] >= len(CYCLE)

    report = _ok(cli("alerts", "--target", server.target))
    assert "possible circular locking dependency detected" in report
    for lock in CYCLE:
        assert lock in report

    # a restart replays the log: same alerts, same counts
    server.restart()
    assert _alerts(cli, server) == alerts
    assert _stats(cli, server)["events"] == total

    # pushing a file again applies nothing twice
    for host in ("boot-0", "bpf-3"):
        out = _ok(cli("push", scenario_files[host], "--host", host, "--target", server.target))
        assert "already there" in out
    assert _stats(cli, server)["events"] == total
    assert _alerts(cli, server) == alerts

    # ... also after another restart (the high-water marks come back from the log)
    server.restart()
    _ok(cli("push", scenario_files["perf-1"], "--host", "perf-1", "--target", server.target))
    after = _stats(cli, server)
    assert after["events"] == total
    assert after["ingest"]["duplicates"] == 1


def test_torn_tail_is_cut_on_restart(lockfleet_cli, lockfleet_server, scenario_files):
    cli, server = lockfleet_cli, lockfleet_server
    _ok(cli("push", scenario_files["perf-2"], "--host", "perf-2", "--target", server.target))
    events = _stats(cli, server)["events"]
    assert server.stop() == 0   # SIGTERM: a clean shutdown
    segments = sorted((server.data_dir / "log").glob("seg-*.log"))
    with open(segments[-1], "ab") as f:   # a crash in the middle of an append
        f.write(b"\x00\x10\x00\x00\xde\xad\xbe\xefpartial")
    server.start()
    assert "torn tail" in server.log()
    assert _stats(cli, server)["events"] == events
    _ok(cli("push", scenario_files["perf-1"], "--host", "perf-1", "--target", server.target))
    server.restart()
    assert _stats(cli, server)["events"] == events + _rows({"perf-1": scenario_files["perf-1"]})


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory, scenario_files):
    """A server holding the whole scenario, shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("fleet")
    server = ServeProcess(tmp / "data", tmp / "serve.log")
    server.start()
    try:
        _push_all(run_lockfleet, server, scenario_files)
        yield server
    finally:
        server.stop()


def test_chain_shows_each_link_with_its_host(lockfleet_cli, fleet_server):
    cli, server = lockfleet_cli, fleet_server
    doc = json.loads(_ok(cli("chain", "tracepoints_mutex", "bpf_event_mutex", "--json", "--target", server.target)))
    assert doc["found"] is True
    assert doc["locks"] == list(CYCLE)
    assert [(x["held"], x["taken"]) for x in doc["links"]] == list(zip(CYCLE, CYCLE[1:]))
    assert [x["host"] for x in doc["links"]] == ["perf-1", "boot-0", "boot-0", "perf-2"]
    text = _ok(cli("chain", "tracepoints_mutex", "bpf_event_mutex", "--target", server.target))
    assert "static_key_slow_inc+0xe/0x20" in text and "perf-1" in text
    none = json.loads(_ok(cli("chain", "rtnl_mutex", "tracepoints_mutex", "--json", "--target", server.target)))
    assert none == {"found": False, "locks": [], "links": []}


def test_alert_filters(lockfleet_cli, fleet_server):
    cli, server = lockfleet_cli, fleet_server

    def ids(*args: str) -> int:
        return len(json.loads(_ok(cli("alerts", "--json", "--target", server.target, *args)))["alerts"])

    assert ids("--kind", "circular") == 1
    assert ids("--kind", "recursive") == 0
    assert ids("--lock", "pmus_lock") == 1
    assert ids("--lock", "rtnl_mutex") == 0
    assert ids("--host", "perf-2") == 1
    assert ids("--host", "web-9") == 0


def test_not_arrow_file_is_refused_in_one_line(lockfleet_cli, lockfleet_server, tmp_path):
    bad = tmp_path / "events.parquet"
    bad.write_text("ts_ns,tid,op,lock\n1,2,0,A\n")
    proc = lockfleet_cli("push", bad, "--host", "h", "--target", lockfleet_server.target)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "events.parquet" in line and "not a Parquet or Arrow" in line


def test_missing_column_is_named(lockfleet_cli, lockfleet_server, scenario_files, tmp_path):
    table = pq.read_table(scenario_files["boot-0"]).drop_columns(["op"])
    path = tmp_path / "no-op.parquet"
    pq.write_table(table, path)
    proc = lockfleet_cli("push", path, "--host", "boot-0", "--target", lockfleet_server.target)
    assert proc.returncode == 2
    assert "'op'" in _one_line(proc.stderr)
    assert _stats(lockfleet_cli, lockfleet_server)["events"] == 0


def test_bad_value_names_column_and_row(lockfleet_cli, lockfleet_server, scenario_files, tmp_path):
    import pyarrow as pa

    table = pq.read_table(scenario_files["boot-0"])
    ops = table.column("op").to_pylist()
    ops[1234] = 7
    table = table.set_column(table.schema.get_field_index("op"), "op", pa.array(ops, pa.uint8()))
    path = tmp_path / "bad-op.parquet"
    pq.write_table(table, path)
    proc = lockfleet_cli("push", path, "--host", "boot-0", "--target", lockfleet_server.target)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert "'op'" in line and "1234" in line


def test_missing_file(lockfleet_cli, lockfleet_server, tmp_path):
    proc = lockfleet_cli("push", tmp_path / "nope.arrow", "--host", "h", "--target", lockfleet_server.target)
    assert proc.returncode == 2
    assert "nope.arrow" in _one_line(proc.stderr)


def test_unreachable_service_is_exit_1(lockfleet_cli, scenario_files, unused_target):
    target = unused_target
    for args in (("alerts",), ("stats",), ("chain", "a", "b"), ("push", str(scenario_files["perf-1"]), "--host", "x")):
        proc = lockfleet_cli(*args, "--target", target)
        assert proc.returncode == 1, (args, proc.stderr)
        assert target in _one_line(proc.stderr)


def test_serve_refuses_non_loopback_and_a_used_data_dir(lockfleet_cli, lockfleet_server, tmp_path):
    proc = lockfleet_cli("serve", "--listen", "0.0.0.0:0", "--data-dir", tmp_path / "d")
    assert proc.returncode == 2
    assert "loopback" in _one_line(proc.stderr)
    proc = lockfleet_cli("serve", "--listen", "127.0.0.1:0", "--data-dir", lockfleet_server.data_dir)
    assert proc.returncode == 1
    assert "in use" in _one_line(proc.stderr)
