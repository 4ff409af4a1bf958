"""Bad input against a real `lockfleet serve` with mTLS, bearer tokens and small limits: each entry
of the table gets its own clear refusal (an ack with a code, a reason and a message, the stream
kept open and a later good batch on it applied; or, for the call-level ones, a gRPC status), while
a well-behaved agent streaming beside them the whole time loses nothing."""

from __future__ import annotations

import struct
import threading
import time

import grpc
import pyarrow as pa
import pytest

from lockfleet.agent import Connection, Stream, fetch_stats, push_streams, to_ipc
from lockfleet.agent.client.fetch import fetch_chain, fetch_hosts
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

INGEST, QUERY = "ingest-token-0123456789abcdef", "query-token-0123456789abcdef"
MAX_ROWS, MAX_STRING, MAX_CLASSES, MAX_THREADS, MAX_MESSAGE = 50_000, 4096, 1000, 500, 4 << 20


def batch(n: int = 4, thread: int = 1, **columns: pa.Array) -> pa.RecordBatch:
    """n valid events (good_0 -> good_1 nesting, n a multiple of 4), with columns replaced or added."""
    ops = [0, 0, 1, 1] * (n // 4)
    locks = ["good_0", "good_1", "good_1", "good_0"] * (n // 4)
    cols: dict[str, pa.Array] = {"ts_ns": pa.array(range(1, n + 1), pa.int64()), "tid": pa.array([thread] * n, pa.int64()),
                                 "op": pa.array(ops, pa.uint8()), "lock": pa.array(locks, pa.utf8())}
    for name, arr in columns.items():
        if arr is None:
            cols.pop(name)
        else:
            cols[name] = arr
    return pa.RecordBatch.from_arrays(list(cols.values()), names=list(cols))


def ipc(b: pa.RecordBatch) -> bytes:
    return to_ipc(b)


def billion_row_claim() -> bytes:
    """A well-formed IPC stream whose record batch header claims 10**9 rows (buffers of 776)."""
    n = 776
    data = bytearray(ipc(batch(n)))
    needle = struct.pack("<q", n)
    spots = [i for i in range(len(data) - 16) if data[i:i + 8] == needle]
    # the batch length, then the field nodes: (length, null_count = 0) pairs
    nodes = [i for i in spots if data[i + 8:i + 16] == b"\0" * 8]
    for i in [spots[0], *nodes[-4:]]:
        data[i:i + 8] = struct.pack("<q", 10**9)
    return bytes(data)


def bad_offsets() -> bytes:
    """A string column whose offsets point past its data: well-formed IPC, invalid array."""
    offsets = pa.py_buffer(struct.pack("<5i", 0, 1, 2, 999_999, 3))
    values = pa.py_buffer(b"ABA")
    lock = pa.Array.from_buffers(pa.utf8(), 4, [None, offsets, values])
    return ipc(batch(4, lock=lock))


def twice_op() -> pa.RecordBatch:
    b = batch()
    return pa.RecordBatch.from_arrays([*b.columns, b.column("op")], names=[*b.schema.names, "op"])


class Call:
    """One raw Ingest.Push call for host h1 with a client certificate and the ingest token."""

    def __init__(self, target: str, certs, who: str = "h1", token: str | None = INGEST) -> None:
        self.channel = grpc.secure_channel(target, certs.client(who))
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def push(self, msgs: list[pb.PushBatch]) -> list[pb.PushAck]:
        try:
            return list(pb_grpc.IngestStub(self.channel).Push(iter(msgs), metadata=self.metadata, timeout=60))
        finally:
            self.channel.close()


def msg(stream: str, seq: int, data: bytes, host: str = "h1") -> pb.PushBatch:
    return pb.PushBatch(host=host, stream_id=stream, seq=seq, arrow_ipc=data)


# name -> (the bad batch's messages before the good follow-up, code, reason, words in the message)
# Each runs on its own stream; the follow-up is a good batch at the seq that comes next.
TABLE = {
    "truncated IPC": (lambda s: [msg(s, 1, ipc(batch(400))[:-1000])], "INVALID_ARGUMENT", "malformed_ipc|not_arrow_ipc", "truncated"),
    "not Arrow at all": (lambda s: [msg(s, 1, b"ts_ns,tid,op,lock\n1,2,0,A\n")], "INVALID_ARGUMENT", "not_arrow_ipc", "not an Arrow IPC"),
    "empty payload": (lambda s: [msg(s, 1, b"")], "INVALID_ARGUMENT", "not_arrow_ipc", "empty"),
    "truncated schema": (lambda s: [msg(s, 1, ipc(batch(40))[:150])], "INVALID_ARGUMENT", "not_arrow_ipc", "truncated"),
    "offsets past the data": (lambda s: [msg(s, 1, bad_offsets())], "INVALID_ARGUMENT", "malformed_ipc", "damaged"),
    "a billion-row claim": (lambda s: [msg(s, 1, billion_row_claim())], "RESOURCE_EXHAUSTED", "too_many_rows", "1000000000"),
    "rows over --max-rows": (lambda s: [msg(s, 1, ipc(batch(MAX_ROWS + 4)))], "RESOURCE_EXHAUSTED", "too_many_rows", "--max-rows"),
    "ts_ns as strings": (lambda s: [msg(s, 1, ipc(batch(ts_ns=pa.array(["1", "2", "3", "4"]))))], "INVALID_ARGUMENT", "wrong_type", "'ts_ns'"),
    "op as int64": (lambda s: [msg(s, 1, ipc(batch(op=pa.array([0, 0, 1, 1], pa.int64()))))], "INVALID_ARGUMENT", "wrong_type", "'op'"),
    "lock as a dictionary of ints": (lambda s: [msg(s, 1, ipc(batch(lock=pa.array([1, 2, 2, 1]).dictionary_encode())))], "INVALID_ARGUMENT", "wrong_type", "'lock'"),
    "lock column missing": (lambda s: [msg(s, 1, ipc(batch(lock=None)))], "INVALID_ARGUMENT", "missing_column", "'lock'"),
    "a column twice": (lambda s: [msg(s, 1, ipc(twice_op()))], "INVALID_ARGUMENT", "duplicate_column", "'op'"),
    "null tid": (lambda s: [msg(s, 1, ipc(batch(tid=pa.array([1, None, 1, 1], pa.int64()))))], "INVALID_ARGUMENT", "null_in_required_column", "'tid' row 1"),
    "null lock": (lambda s: [msg(s, 1, ipc(batch(lock=pa.array(["good_0", "good_1", None, "good_0"]))))], "INVALID_ARGUMENT", "null_in_required_column", "'lock' row 2"),
    "empty lock name": (lambda s: [msg(s, 1, ipc(batch(lock=pa.array(["good_0", "", "", "good_0"]))))], "INVALID_ARGUMENT", "empty_lock_name", "'lock' row 1"),
    "unknown op code": (lambda s: [msg(s, 1, ipc(batch(op=pa.array([0, 7, 1, 1], pa.uint8()))))], "INVALID_ARGUMENT", "value_out_of_range", "'op' row 1"),
    "mode out of range": (lambda s: [msg(s, 1, ipc(batch(mode=pa.array([0, 3, 0, 0], pa.uint8()))))], "INVALID_ARGUMENT", "value_out_of_range", "'mode' row 1"),
    "subclass out of range": (lambda s: [msg(s, 1, ipc(batch(subclass=pa.array([9, 0, 0, 0], pa.uint8()))))], "INVALID_ARGUMENT", "value_out_of_range", "'subclass' row 0"),
    "irq mask out of range": (lambda s: [msg(s, 1, ipc(batch(irq=pa.array([0, 0, 16, 0], pa.uint8()))))], "INVALID_ARGUMENT", "value_out_of_range", "'irq' row 2"),
    "a huge lock name": (lambda s: [msg(s, 1, ipc(batch(lock=pa.array(["good_0", "L" * 100_000, "L" * 100_000, "good_0"]))))], "INVALID_ARGUMENT", "string_too_long", "--max-string-bytes"),
    "a message over --max-message-bytes": (lambda s: [msg(s, 1, ipc(batch(4, site=pa.array(["x" * 3000] * 4))) + b"\0" * (MAX_MESSAGE + 10))], "RESOURCE_EXHAUSTED", "message_too_large", "--max-message-bytes"),
    "schema change mid-stream": (lambda s: [msg(s, 1, ipc(batch())), msg(s, 2, ipc(batch(lock=pa.array(["good_0", "good_1", "good_1", "good_0"]).dictionary_encode())))], "FAILED_PRECONDITION", "schema_changed", "'lock' was string"),
    "seq gap": (lambda s: [msg(s, 1, ipc(batch())), msg(s, 5, ipc(batch()))], "FAILED_PRECONDITION", "seq_gap", "expected seq 2"),
    "seq 0": (lambda s: [msg(s, 0, ipc(batch()))], "INVALID_ARGUMENT", "bad_seq", "seq must start at 1"),
    "empty host": (lambda s: [msg(s, 1, ipc(batch()), host="")], "INVALID_ARGUMENT", "empty_host", "host is empty"),
    "empty stream id": (lambda s: [msg("", 1, ipc(batch()))], "INVALID_ARGUMENT", "empty_stream_id", "stream_id is empty"),
    "too many lock classes": (lambda s: [msg(s, 1, ipc(batch(2000, lock=pa.array([f"new_{i}" for i in range(2000)]))))], "RESOURCE_EXHAUSTED", "lock_class_limit", "--max-lock-classes"),
    "too many threads": (lambda s: [msg(s, 1, ipc(batch(1000, tid=pa.array(range(10_000, 11_000), pa.int64()))))], "RESOURCE_EXHAUSTED", "thread_limit", "--max-threads-per-host"),
    "a stream for another host": (lambda s: [msg(s, 1, ipc(batch()), host="h2")], "PERMISSION_DENIED", "host_not_in_certificate", "'h2'"),
    "a host column naming another host": (lambda s: [msg(s, 1, ipc(batch(host=pa.array(["h1", "h2", "h2", "h1"]))))], "PERMISSION_DENIED", "host_not_in_certificate", "'h2'"),
}


@pytest.fixture(scope="module")
def secured(certs, tmp_path_factory):
    from conftest import ServeProcess

    tmp = tmp_path_factory.mktemp("secured")
    tokens = tmp / "tokens"
    tokens.write_text(f"# lockfleet tokens\ningest {INGEST}\nquery {QUERY}\n")
    server = ServeProcess(tmp / "data", tmp / "serve.log", [
        "--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
        "--client-ca", certs.path("ca.pem"), "--token-file", tokens,
        "--max-rows", MAX_ROWS, "--max-string-bytes", MAX_STRING, "--max-lock-classes", MAX_CLASSES,
        "--max-threads-per-host", MAX_THREADS, "--max-message-bytes", MAX_MESSAGE], credentials=certs.client("h1"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def conn(server, certs, who: str = "h1", token: str = INGEST) -> Connection:
    return Connection(server.target, token=token, tls_ca=certs.path("ca.pem"), tls_cert=certs.path(f"{who}.pem"),
                      tls_key=certs.path(f"{who}.key"))


def test_each_bad_input_is_refused_clearly_while_a_good_stream_loses_nothing(secured, certs):
    assert len(TABLE) >= 20
    good = [batch(400, thread=1 + i % 8) for i in range(150)]
    good_events = sum(b.num_rows for b in good)
    errors: list[BaseException] = []
    acked: list[int] = []

    def agent() -> None:
        try:
            push_streams(conn(secured, certs), "h1", [Stream("well-behaved", good)],
                         on_ack=lambda _s, seq, _a: (acked.append(seq), time.sleep(0.01)))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=agent)
    thread.start()
    follow_up_events = 0
    for name, (make, code, reason, words) in TABLE.items():
        stream = f"bad-{name.replace(' ', '-')}"
        msgs = make(stream)
        acks = Call(secured.target, certs).push([*msgs, _follow_up(msgs)])
        bad, follow = acks[-2], acks[-1]
        assert not bad.ok, name
        assert bad.code == code, (name, bad.code, bad.error)
        assert bad.reason in reason.split("|"), (name, bad.reason, bad.error)
        assert words in bad.error, (name, bad.error)
        assert len(bad.error.splitlines()) == 1, name
        assert follow.ok and not follow.duplicate and follow.events == 4, (name, follow)
        follow_up_events += follow.events
    thread.join(timeout=120)
    assert not errors, errors
    assert acked == list(range(1, len(good) + 1))
    stats = fetch_stats(conn(secured, certs, token=QUERY))
    firsts = sum(1 for make, *_ in TABLE.values() if len(make("x")) == 2)   # the good seq 1 before a bad seq 2
    assert stats["events"] == good_events + follow_up_events + 4 * firsts
    assert stats["ingest"]["refused"] >= len(TABLE)
    assert stats["alerts"] == 0


def _follow_up(msgs: list[pb.PushBatch]) -> pb.PushBatch:
    """A good batch at the seq the stream expects after the refusal."""
    stream = msgs[-1].stream_id or "empty-stream-follow-up"
    ok_before = 1 if len(msgs) == 2 else 0
    return msg(stream, ok_before + 1, ipc(batch(4, thread=2)))


def test_call_level_refusals(secured, certs):
    good = msg("call-level", 1, ipc(batch()))

    def status(**kw) -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as err:
            Call(secured.target, certs, **kw).push([good])
        return err.value.code(), err.value.details() or ""

    code, details = status(token=None)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details
    code, details = status(token=QUERY)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "query token does not grant ingest" in details
    code, details = status(token="not-a-valid-token-at-all")
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not valid" in details
    code, details = status(who="stranger")     # a certificate from another CA
    assert code == grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(secured.target, certs.client(None)) as ch:   # no client certificate
        with pytest.raises(grpc.RpcError) as err:
            list(pb_grpc.IngestStub(ch).Push(iter([good]), metadata=(("authorization", f"Bearer {INGEST}"),), timeout=30))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # beyond the transport's cap (twice --max-message-bytes) gRPC itself ends the call
    huge = msg("call-level", 1, b"\0" * (3 * MAX_MESSAGE))
    with pytest.raises(grpc.RpcError) as err:
        Call(secured.target, certs).push([huge])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # an ingest token does not open the query service either
    with grpc.secure_channel(secured.target, certs.client("h1")) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.QueryStub(ch).Stats(pb.StatsRequest(), metadata=(("authorization", f"Bearer {INGEST}"),), timeout=30)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # none of it was applied: the stream's first batch is still to come
    acks = Call(secured.target, certs).push([good])
    assert acks[0].ok and not acks[0].duplicate


def test_a_relay_speaks_for_other_hosts_and_each_row_lands_under_its_host(secured, certs):
    # rows for rl-a and rl-b through one relay stream whose envelope is rl-env; a null host is the envelope's
    rows = [("rl-a", 0, "relay_0"), ("rl-a", 0, "relay_1"), ("rl-a", 1, "relay_1"), ("rl-a", 1, "relay_0"),
            ("rl-b", 0, "relay_1"), ("rl-b", 0, "relay_2"), ("rl-b", 1, "relay_2"), ("rl-b", 1, "relay_1"),
            (None, 0, "relay_2"), (None, 1, "relay_2")]
    relay_batch = pa.record_batch({
        "ts_ns": pa.array(range(1, len(rows) + 1), pa.int64()), "tid": pa.array([5] * len(rows), pa.int64()),
        "op": pa.array([r[1] for r in rows], pa.uint8()), "lock": pa.array([r[2] for r in rows], pa.utf8()),
        "host": pa.array([r[0] for r in rows], pa.utf8())})
    acks = Call(secured.target, certs, who="relay").push([msg("relay-1", 1, ipc(relay_batch), host="rl-env"),
                                                          msg("relay-1", 1, ipc(batch()), host="rl-plain")])
    assert [(a.ok, a.events) for a in acks] == [(True, 10), (True, 4)]
    q = conn(secured, certs, token=QUERY)
    hosts = {h["host"]: h for h in fetch_hosts(q)}
    got = {h: (hosts[h]["batches"], hosts[h]["events"], hosts[h]["threads"])
           for h in ("rl-a", "rl-b", "rl-env", "rl-plain")}
    # (batches on its envelope, rows attributed to it, threads tracked on it)
    assert got == {"rl-a": (0, 4, 1), "rl-b": (0, 4, 1), "rl-env": (1, 2, 1), "rl-plain": (1, 4, 1)}
    assert "relay-1" not in hosts            # the relay's own name is not a host of any row
    chain = fetch_chain(q, "relay_0", "relay_2")
    assert chain.found and chain.locks == ["relay_0", "relay_1", "relay_2"]
    assert [(x["host"], x["hosts"]) for x in chain.links] == [("rl-a", ["rl-a"]), ("rl-b", ["rl-b"])]
    # a client that is not a relay may not name other hosts in its rows
    acks = Call(secured.target, certs, who="h1").push([msg("s-relay-h1", 1, ipc(relay_batch), host="h1")])
    assert acks[0].code == "PERMISSION_DENIED" and "'rl-a'" in acks[0].error
