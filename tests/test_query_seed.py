"""Every query and its subcommand on the seed scenario, against a real `lockfleet serve`: what a reader
of `lockfleet chain tracepoints_mutex bpf_event_mutex` and `lockfleet alerts` sees is the seed
report's links, sites and hosts; alert filters (kind, lock, host, time, id); `lock`, `hosts`,
`stats`, `export` (Arrow IPC), `dot` (and SVG with Graphviz); suppressions and who may make them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import ServeProcess, needs_shared, require, run_lockfleet
from lockfleet.findings.dot import dot_available
from lockfleet.demo import CYCLE, HOSTS
from receivers import events, nest, write

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SHARED_DIR = Path(os.environ.get("LOCKFLEET_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SEED = SHARED_DIR / "seed" / "lkml-bpf-deadlock-report.txt"
FIRST_HOST = ["perf-1", "boot-0", "boot-0", "perf-2"]    # who first took CYCLE[i] -> CYCLE[i+1]
QUERY, ADMIN, INGEST = "q" * 24, "a" * 24, "i" * 24


def _ok(proc) -> str:  # noqa: ANN001
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _json(*args: str) -> dict:
    return json.loads(_ok(run_lockfleet(*args)))


def seed_entries() -> dict[str, list[str]]:
    """The seed report's dependency chain: lock -> the frames of the stack it was taken with
    (lockdep's own `__mutex_lock` frame left out: the site is where the lock was taken)."""
    entries: dict[str, list[str]] = {}
    current = None
    for raw in SEED.read_text().splitlines():
        line = re.sub(r"^\[\s*\d+\.\d+\] ?", "", raw)
        m = re.match(r"^-> #\d+ \((.*)\)\{[^}]*\}:$", line)
        if m:
            current = m.group(1)
            entries[current] = []
        elif current and re.match(r"^ {7}\S", line):
            if not line.strip().startswith("__mutex_lock"):
                entries[current].append(line.strip())
        elif current and not line.strip():
            current = None
        if line.startswith("other info"):
            break
    return entries


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory, scenario_files):  # noqa: ANN001, ANN201
    tmp = tmp_path_factory.mktemp("query")
    server = ServeProcess(tmp / "data", tmp / "serve.log")
    server.start()
    try:
        for host in HOSTS:
            _ok(run_lockfleet("push", scenario_files[host], "--host", host, "--target", server.target))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cycle_id(seed_server) -> str:  # noqa: ANN001
    (alert,) = _json("alerts", "--json", "--target", seed_server.target)["alerts"]
    return str(alert["id"])


@needs_shared
def test_chain_and_alerts_show_the_seed_reports_links_sites_and_hosts(seed_server):  # noqa: ANN001
    entries = seed_entries()
    assert list(entries) == ["bpf_event_mutex", "&cpuctx_mutex", "pmus_lock", "cpu_hotplug_lock.rw_sem",
                             "tracepoints_mutex"]
    target = seed_server.target
    doc = _json("chain", "tracepoints_mutex", "bpf_event_mutex", "--json", "--target", target)
    assert doc["locks"] == list(CYCLE)
    for link, host in zip(doc["links"], FIRST_HOST):
        assert link["taken_site"].split("\n") == entries[link["taken"]], link["taken"]
        assert link["host"] == host and link["hosts"] == [host]
    text = _ok(run_lockfleet("chain", "tracepoints_mutex", "bpf_event_mutex", "--target", target))
    assert text.splitlines()[0].startswith(" -> ".join(CYCLE))
    for held, taken, host in zip(CYCLE, CYCLE[1:], FIRST_HOST):
        block = text.split(f"\n{held} -> {taken}  [EN]\n", 1)[1].split("\n\n", 1)[0]
        assert f"first taken on {host} by " in block
        frames = [x.strip() for x in block.split("taken at:", 1)[1].splitlines() if x.strip()]
        assert frames == entries[taken]

    report = _ok(run_lockfleet("alerts", "--target", target))
    table, body = report.split("\n\n", 1)
    assert "circular" in table and ", ".join(sorted(HOSTS)) in table and "published" in table
    # every chain entry of the seed, in the seed's order, with each of its frames
    at = 0
    for lock, frames in entries.items():
        at = body.index("-> #", body.index(f"({lock})", at) - 8)
        for frame in frames:
            at = body.index(frame, at)
    for held, taken, host in [*zip(CYCLE, CYCLE[1:], FIRST_HOST), (CYCLE[-1], CYCLE[0], "bpf-3")]:
        assert re.search(rf"#\d {re.escape(held)} -> {re.escape(taken)}: first taken on {host} ", body)
    assert "test_progs/246 is trying to acquire lock:" in body


def test_alert_filters_by_kind_lock_host_time_and_id(seed_server, cycle_id):  # noqa: ANN001
    target = seed_server.target

    def n(*args: str) -> int:
        return len(_json("alerts", "--json", "--target", target, *args)["alerts"])

    assert n("--kind", "circular") == 1 and n("--kind", "recursive") == 0
    assert n("--lock", "pmus_lock") == 1 and n("--lock", "rtnl_mutex") == 0
    assert n("--host", "bpf-3") == 1 and n("--host", "web-9") == 0
    # the cycle was closed by bpf-3 at 2019-02-28 18:07:40 UTC (host clock)
    assert n("--since", "2019-02-28T18:00:00Z") == 1 and n("--until", "2019-02-28T18:00:00Z") == 0
    assert n("--since", "2019-02-28", "--until", "2019-03-01") == 1
    assert n("--since", "2h") == 0          # relative to now: the seed is from 2019
    assert n("--id", cycle_id) == 1 and n("--id", "circular-0000000000000000") == 0
    brief = _ok(run_lockfleet("alerts", "--brief", "--target", target))
    assert brief.splitlines()[0].split() == ["SEQ", "ID", "KIND", "LOCKS", "HOSTS", "FIRST", "SEEN", "STATE"]
    assert cycle_id in brief and "WARNING" not in brief
    proc = run_lockfleet("alerts", "--since", "yesterday-ish", "--target", target)
    assert proc.returncode == 2 and "not a time" in proc.stderr


def test_lock_shows_edges_counts_hosts_times_and_irq_usage(seed_server, cycle_id):  # noqa: ANN001
    target = seed_server.target
    doc = _json("lock", "pmus_lock", "--json", "--target", target)
    assert doc["found"] and doc["name"] == "pmus_lock" and doc["usage"] == "+.+."
    assert [(e["held"], e["host"]) for e in doc["edges_in"]] == [("cpu_hotplug_lock.rw_sem", "boot-0")]
    assert [(e["taken"], e["host"]) for e in doc["edges_out"]] == [("&cpuctx_mutex", "boot-0")]
    assert doc["hosts"] == ["boot-0"] and doc["alerts"] == [cycle_id]
    assert doc["count"] == sum(e["count"] for e in doc["edges_in"] + doc["edges_out"]) >= 2
    assert 0 < doc["first_ts_ns"] <= doc["last_ts_ns"]
    assert {u["usage"] for u in doc["usages"]} >= {"HARDIRQ-ON-W"}
    # a background lock taken in hard-irq context: IN-HARDIRQ-W, on every host
    rq = _json("lock", "&rq->lock", "--json", "--target", target)
    assert "IN-HARDIRQ-W" in {u["usage"] for u in rq["usages"]} and rq["hosts"] == sorted(HOSTS)
    assert rq["usage"][0] in "-?" and rq["edges_in"] and not rq["alerts"]
    text = _ok(run_lockfleet("lock", "&rq->lock", "--target", target))
    assert text.startswith("lock &rq->lock {") and "IN-HARDIRQ-W" in text and "scheduler_tick" in text
    assert "dependencies in (held -> this)" in text
    missing = _ok(run_lockfleet("lock", "no_such_lock", "--target", target))
    assert "no lock class 'no_such_lock'" in missing
    assert _json("lock", "no_such_lock", "--json", "--target", target)["found"] is False


def test_hosts_and_stats(seed_server, scenario_files, cycle_id):  # noqa: ANN001
    import pyarrow.parquet as pq

    target = seed_server.target
    hosts = {h["host"]: h for h in _json("hosts", "--json", "--target", target)["hosts"]}
    assert sorted(hosts) == sorted(HOSTS)
    for host, path in scenario_files.items():
        if path.suffix == ".parquet":
            rows = pq.read_metadata(path).num_rows
        elif path.suffix == ".arrow":
            rows = pa.ipc.open_file(path).read_all().num_rows
        else:
            rows = pa.ipc.open_stream(path).read_all().num_rows
        h = hosts[host]
        assert h["events"] == rows and h["batches"] >= 1 and h["streams"] == 1 and h["threads"] > 0
        assert h["last_received_ns"] >= h["first_received_ns"] > 0 and h["alerts"] == [cycle_id]
        assert h["last_event_ts_ns"] // 10**9 > 1551366460 - 1     # the seed's host clock
    text = _ok(run_lockfleet("hosts", "--target", target))
    assert text.splitlines()[0].split()[:3] == ["HOST", "BATCHES", "EVENTS"]
    assert all(h in text for h in HOSTS)
    stats = _json("stats", "--json", "--target", target)
    assert stats["events"] == sum(h["events"] for h in hosts.values()) and stats["alerts"] == 1
    assert stats["publishing"]["last_seq"] == 1
    assert re.search(r"^events\s+\d+$", _ok(run_lockfleet("stats", "--target", target)), re.M)


def test_export_is_an_arrow_stream_of_every_edge(seed_server, tmp_path):  # noqa: ANN001
    target = seed_server.target
    out = tmp_path / "edges.arrow"
    line = _ok(run_lockfleet("export", "--target", target, "-o", out, "--rows-per-batch", "7"))
    with pa.ipc.open_stream(out) as reader:
        batches = list(reader)
        schema = reader.schema
    table = pa.Table.from_batches(batches, schema)
    assert schema.names[:10] == ["held", "taken", "kinds", "count", "hosts", "first_host", "first_task", "first_ts_ns",
                                 "held_site", "taken_site"]
    assert schema.field("hosts").type == pa.list_(pa.utf8()) and schema.field("kinds").type == pa.list_(pa.utf8())
    stats = _json("stats", "--json", "--target", target)
    assert table.num_rows == stats["edges"] and max(b.num_rows for b in batches) == 7
    assert f"wrote {table.num_rows} edges" in line
    rows = {(r["held"], r["taken"]): r for r in table.to_pylist()}
    link = rows[("tracepoints_mutex", "cpu_hotplug_lock.rw_sem")]
    assert link["first_host"] == "perf-1" and link["kinds"] == ["EN"] and link["hosts"] == ["perf-1"]
    assert link["taken_site"].startswith("static_key_slow_inc+0xe/0x20\n")
    assert link["first_task"] and link["count"] == 1 and link["first_ts_ns"] > 0
    assert _json("export", "--target", target, "-o", tmp_path / "again.arrow", "--json")["edges"] == table.num_rows
    import polars as pl

    assert pl.read_ipc_stream(out).height == table.num_rows


def test_dot_of_the_finding(seed_server, cycle_id, tmp_path):  # noqa: ANN001
    target = seed_server.target
    dot = _ok(run_lockfleet("dot", cycle_id, "--target", target))
    assert dot.startswith(f'digraph "{cycle_id}"')
    for held, taken in zip(CYCLE, (*CYCLE[1:], CYCLE[0])):
        assert re.search(rf'"{re.escape(held)}" -> "{re.escape(taken)}" \[label="EN x\d+\\n[^"]*", color=red', dot)
    assert dot.count("style=dashed") == 1        # the closing dependency, lockdep's #0
    out = _ok(run_lockfleet("dot", cycle_id, "--target", target, "-o", tmp_path / "cycle.svg"))
    assert (tmp_path / "cycle.dot").read_text() == dot
    if dot_available():
        assert "<svg" in (tmp_path / "cycle.svg").read_text() and "cycle.svg" in out
    else:
        assert not (tmp_path / "cycle.svg").exists()
    doc = _json("dot", cycle_id, "--json", "--radius", "0", "--target", target)
    assert doc["id"] == cycle_id and "grey" not in doc["dot"]
    proc = run_lockfleet("dot", "circular-0000000000000000", "--target", target)
    assert proc.returncode == 1 and "no finding" in proc.stderr
    require(dot_available(), "Graphviz's dot is not on PATH (Debian: apt-get install graphviz): SVG not checked")


def test_suppress_needs_an_admin_token_and_is_listed_and_kept(serve_factory, tmp_path):  # noqa: ANN001
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ingest {INGEST}\nquery {QUERY}\nadmin {ADMIN}\n")
    server = serve_factory("--token-file", tokens)
    t = server.target
    for host, rows in (("h1", nest(1, "A", "B")), ("h2", nest(2, "B", "A"))):
        _ok(run_lockfleet("push", write(events(rows), tmp_path / f"{host}.parquet"), "--host", host, "--target", t,
                          "--token", INGEST))
    (alert,) = _json("alerts", "--json", "--target", t, "--token", QUERY)["alerts"]
    fid = alert["id"]
    assert "suppression" not in alert         # an unsuppressed alert is exactly Alert.to_dict()
    proc = run_lockfleet("suppress", fid, "--reason", "r", "--target", t, "--token", QUERY)
    assert proc.returncode == 1 and "PERMISSION_DENIED" in proc.stderr and "admin" in proc.stderr
    proc = run_lockfleet("suppress", fid, "--target", t, "--token", ADMIN)
    assert proc.returncode == 2 and "--reason" in proc.stderr
    admin_file = tmp_path / "admin-token"
    admin_file.write_text(f"admin {ADMIN}\n")
    doc = _json("suppress", fid, "--reason", "A/B order is fine: different instances", "--author", "dana",
                "--json", "--target", t, "--token-file", tokens)
    assert doc["known"] is True and doc["suppression"]["author"] == "dana"
    out = _ok(run_lockfleet("suppress", "circular-00000000000000ff", "--reason", "ahead of time", "--target", t,
                            "--token-file", admin_file))
    assert "suppressed circular-00000000000000ff" in out
    listed = _json("suppressions", "--json", "--target", t, "--token", QUERY)
    assert [s["id"] for s in listed["suppressions"]] == [fid, "circular-00000000000000ff"] and listed["blessed"] == []
    # kept across a restart; listed (marked) by alerts, left out on request
    server.restart()
    (alert,) = _json("alerts", "--json", "--target", t, "--token", ADMIN)["alerts"]
    assert alert["suppression"]["reason"] == "A/B order is fine: different instances"
    assert _json("alerts", "--json", "--hide-suppressed", "--target", t, "--token", QUERY)["alerts"] == []
    text = _ok(run_lockfleet("alerts", "--target", t, "--token", QUERY))
    assert "[suppressed by dana at " in text and "suppressed (dana)" in text
    assert (server.data_dir / "suppressions.json").is_file()
    # it was published before it was suppressed: that publication stands, and is not repeated
    assert [json.loads(x)["id"] for x in (server.data_dir / "alerts.jsonl").read_text().splitlines()] == [fid]
    _ok(run_lockfleet("unsuppress", fid, "--target", t, "--token", ADMIN))
    proc = run_lockfleet("unsuppress", fid, "--target", t, "--token", ADMIN)
    assert proc.returncode == 1 and "no suppression" in proc.stderr
    assert "no recorded suppressions" not in _ok(run_lockfleet("suppressions", "--target", t, "--token", QUERY))


def test_watch_and_suppressions_on_the_seed(seed_server, cycle_id):  # noqa: ANN001
    from lockfleet.agent.client.fetch import watch_alerts

    target = seed_server.target
    (pub,) = [json.loads(x) for x in
              _ok(run_lockfleet("watch", "--json", "--count", "1", "--target", target)).splitlines()]
    assert (pub["seq"], pub["event"], pub["alert"]["id"], pub["alert"]["locks"]) == (1, "new", cycle_id, list(CYCLE))
    text = _ok(run_lockfleet("watch", "--count", "1", "--target", target))
    assert text.splitlines()[0].split()[:3] == ["SEQ", "EVENT", "ID"] and cycle_id in text.splitlines()[1]
    stream = watch_alerts(target, after_seq=0)
    first = next(stream)
    stream.close()
    assert first.seq == 1 and "possible circular locking dependency" in first.alert.report
    assert _json("suppressions", "--json", "--target", target) == {"suppressions": [], "blessed": []}
    assert "no recorded suppressions" in _ok(run_lockfleet("suppressions", "--target", target))
