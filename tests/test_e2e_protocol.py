"""The wire contract against a real `lockfleet serve`: one ack per batch in order, duplicates,
gaps, bad batches refused with the stream kept open, the Query service, health and reflection."""

from __future__ import annotations

import json

import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lockfleet.agent import to_ipc
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _batch(pairs: list[tuple[int, int, str]], tid: int = 7) -> bytes:
    """(ts, op, lock) rows of one thread as IPC bytes."""
    return to_ipc(pa.record_batch({
        "ts_ns": pa.array([p[0] for p in pairs], pa.int64()),
        "tid": pa.array([tid] * len(pairs), pa.int64()),
        "op": pa.array([p[1] for p in pairs], pa.uint8()),
        "lock": pa.array([p[2] for p in pairs], pa.utf8()),
    }))


AB = _batch([(1, 0, "A"), (2, 0, "B"), (3, 1, "B"), (4, 1, "A")])
BA = _batch([(5, 0, "B"), (6, 0, "A"), (7, 1, "A"), (8, 1, "B")])
BAD = to_ipc(pa.record_batch({"ts_ns": pa.array([1], pa.int64()), "tid": pa.array([1], pa.int64()),
                              "lock": pa.array(["A"], pa.utf8())}))


def _push(target: str, batches: list[pb.PushRequest]) -> list[pb.PushResponse]:
    with grpc.insecure_channel(target) as channel:
        return list(pb_grpc.IngestServiceStub(channel).Push(iter(batches), timeout=30))


def test_acks_duplicates_gaps_and_bad_batches(lockfleet_server):
    target = lockfleet_server.target
    acks = _push(target, [
        pb.PushRequest(host="h1", stream_id="s", seq=1, arrow_ipc=AB),
        pb.PushRequest(host="h1", stream_id="s", seq=1, arrow_ipc=AB),        # resent: duplicate
        pb.PushRequest(host="h1", stream_id="s", seq=3, arrow_ipc=BA),        # gap: refused
        pb.PushRequest(host="h1", stream_id="s", seq=2, arrow_ipc=BAD),       # bad: refused, stream stays open
        pb.PushRequest(host="h1", stream_id="s", seq=2, arrow_ipc=b"not arrow"),
        pb.PushRequest(host="h2", stream_id="t", seq=1, arrow_ipc=BA),        # closes A -> B -> A across hosts
    ])
    assert [a.seq for a in acks] == [1, 1, 3, 2, 2, 1]
    assert [(a.ok, a.duplicate) for a in acks] == [(True, False), (True, True), (False, False), (False, False),
                                                   (False, False), (True, False)]
    assert acks[0].events == 4 and not acks[0].new_alerts
    assert acks[2].code == "FAILED_PRECONDITION" and "expected seq 2" in acks[2].error
    assert acks[3].code == "INVALID_ARGUMENT" and "'op'" in acks[3].error
    assert acks[4].code == "INVALID_ARGUMENT" and "Arrow IPC" in acks[4].error
    assert len(acks[5].new_alerts) == 1

    with grpc.insecure_channel(target) as channel:
        query = pb_grpc.QueryServiceStub(channel)
        reply = query.Alerts(pb.AlertsRequest(), timeout=30)
        assert [a.id for a in reply.alerts] == list(acks[5].new_alerts)
        alert = reply.alerts[0]
        assert alert.kind == "circular" and sorted(alert.locks) == ["A", "B"] and list(alert.hosts) == ["h1", "h2"]
        assert "possible circular locking dependency detected" in alert.report
        assert json.loads(alert.json)["id"] == alert.id
        stats = query.Stats(pb.StatsRequest(), timeout=30)
        assert stats.events == 8 and stats.alerts == 1 and stats.alerts_by_kind["circular"] == 1
        assert stats.ingest["refused"] == 3 and stats.ingest["duplicates"] == 1
        chain = query.Chain(pb.ChainRequest(src="A", dst="B"), timeout=30)
        assert chain.found and list(chain.locks) == ["A", "B"] and chain.links[0].host == "h1"
        with pytest.raises(grpc.RpcError) as err:
            query.Alerts(pb.AlertsRequest(kind="deadlock"), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # the stream resumes where it left off
    acks = _push(target, [pb.PushRequest(host="h1", stream_id="s", seq=2, arrow_ipc=BA)])
    assert acks[0].ok and not acks[0].duplicate


def test_empty_host_or_seq_zero_is_refused(lockfleet_server):
    acks = _push(lockfleet_server.target, [pb.PushRequest(host="", stream_id="s", seq=1, arrow_ipc=AB),
                                           pb.PushRequest(host="h", stream_id="s", seq=0, arrow_ipc=AB)])
    assert [(a.ok, a.code) for a in acks] == [(False, "INVALID_ARGUMENT"), (False, "INVALID_ARGUMENT")]


def test_health_and_reflection(lockfleet_server):
    with grpc.insecure_channel(lockfleet_server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lockfleet.v1.IngestService", "lockfleet.v1.QueryService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=30)
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"lockfleet.v1.IngestService", "lockfleet.v1.QueryService", "grpc.health.v1.Health"} <= names
