"""End to end: witnesses through a real `lockfleet serve`. The seed's cycle across four hosts
(one inversion), then a fifth host whose new dependency closes another cycle through that
inversion: still one finding, with two witnesses, listed by `lockfleet alerts --witnesses ID`
(text and --json) and the Query service's Witnesses call; after a restart the same."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ServeProcess

from lockfleet.demo import HOSTS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _detour(path: Path) -> Path:
    """Host qa-4: pmus_lock -> extra_lock -> &cpuctx_mutex, a detour around the seed's link
    pmus_lock -> &cpuctx_mutex: its second dependency closes a new cycle, through the seed's
    inversion only."""
    rows = [("pmus_lock", 0), ("extra_lock", 0), ("extra_lock", 1), ("pmus_lock", 1),
            ("extra_lock", 0), ("&cpuctx_mutex", 0), ("&cpuctx_mutex", 1), ("extra_lock", 1)]
    t = pa.table({"ts_ns": pa.array([2_000_000_000_000 + i for i in range(len(rows))], pa.int64()),
                  "tid": pa.array([77] * len(rows), pa.int64()),
                  "op": pa.array([op for _, op in rows], pa.uint8()),
                  "lock": pa.array([name for name, _ in rows]),
                  "task": pa.array(["qa_test/77"] * len(rows))})
    pq.write_table(t, path)
    return path


def test_witnesses_listed_through_the_service(lockfleet_cli, lockfleet_server: ServeProcess,
                                              scenario_files: dict[str, Path], tmp_path: Path) -> None:
    server = lockfleet_server
    for host in HOSTS:
        _ok(lockfleet_cli("push", scenario_files[host], "--host", host, "--target", server.target))
    _ok(lockfleet_cli("push", _detour(tmp_path / "qa.parquet"), "--host", "qa-4", "--target", server.target))

    alerts = json.loads(_ok(lockfleet_cli("alerts", "--json", "--target", server.target)))["alerts"]
    circular = [a for a in alerts if a["kind"] == "circular"]
    assert len(circular) == 1, [a["locks"] for a in circular]
    a = circular[0]
    assert a["witnesses"] == 2 and a["witnesses_kept"] == 2
    assert "qa-4" in a["hosts"]

    def check(doc: dict) -> None:
        assert doc["count"] == 2
        first, second = doc["witnesses"]
        assert first["locks"] == a["locks"]
        assert "extra_lock" in second["locks"] and "extra_lock" not in first["locks"]
        assert second["links"][-1]["host"] == "qa-4"
        assert (doc["inversion"]["held"], doc["inversion"]["taken"]) == (a["links"][-1]["held"], a["links"][-1]["taken"])

    check(json.loads(_ok(lockfleet_cli("alerts", "--witnesses", a["id"], "--json", "--target", server.target))))
    text = _ok(lockfleet_cli("alerts", "--witnesses", a["id"], "--target", server.target))
    assert "2 witness(es), 2 kept" in text and "closed by extra_lock -> &cpuctx_mutex on qa-4" in text

    from lockfleet.v1 import lockfleet_pb2 as pb
    from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc
    with server.channel() as ch:
        reply = pb_grpc.QueryServiceStub(ch).Witnesses(pb.WitnessesRequest(id=a["id"]), timeout=10)
        assert reply.found and reply.count == 2 and len(reply.witnesses) == 2
        assert not pb_grpc.QueryServiceStub(ch).Witnesses(pb.WitnessesRequest(id="circular-0000000000000000"),
                                                   timeout=10).found

    bad = lockfleet_cli("alerts", "--witnesses", "circular-0000000000000000", "--target", server.target)
    assert bad.returncode == 2 and "no finding with id" in bad.stderr

    server.restart()
    check(json.loads(_ok(lockfleet_cli("alerts", "--witnesses", a["id"], "--json", "--target", server.target))))
