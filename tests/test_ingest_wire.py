"""Ingest on the wire against real `lockfleet serve` processes: Arrow IPC compression (lz4, zstd)
negotiated in Push's initial metadata, a clear refusal of a codec the service does not read,
older peers on either side, and `lockfleet push --streams N` (one file on several streams)."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockfleet.agent import Agent, Stream, push_streams, split_by_thread, to_ipc
from lockfleet.agent import fetch_alerts, fetch_stats
from lockfleet.demo import seed_scenario
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc
from lockfleet.wire import CODECS_METADATA, encode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _log_bytes(server) -> int:
    return sum(p.stat().st_size for p in (server.data_dir / "log").glob("seg-*.log"))


def _view(target: str) -> tuple[list, dict]:
    alerts = sorted((a.data["id"], a.data["kind"], tuple(a.data["locks"]), tuple(a.data["hosts"]))
                    for a in fetch_alerts(target))
    stats = fetch_stats(target)
    return alerts, {k: stats[k] for k in ("events", "locks", "edges", "alerts")}


def _big_fleet() -> dict[str, list[pa.RecordBatch]]:
    """The seed scenario's hosts plus one busy host (many threads in one lock order), cut small."""
    fleet = {h: t.to_batches(max_chunksize=64) for h, t in seed_scenario().items()}
    rng = np.random.default_rng(7)
    tid, op, lock = [], [], []
    for _ in range(3000):
        t = int(rng.integers(1, 64))
        chosen = np.sort(rng.choice(40, size=int(rng.integers(1, 4)), replace=False))
        tid += [t] * (2 * len(chosen))
        op += [0] * len(chosen) + [1] * len(chosen)
        lock += [f"busy_{c:02d}" for c in chosen] + [f"busy_{c:02d}" for c in chosen[::-1]]
    n = len(op)
    busy = pa.table({"ts_ns": pa.array(np.arange(n, dtype=np.int64) + 1_700_000_000_000_000_000),
                     "tid": pa.array(tid, pa.int64()), "op": pa.array(op, pa.uint8()),
                     "lock": pa.array(lock, pa.utf8())})
    fleet["busy"] = busy.to_batches(max_chunksize=4096)
    return fleet


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_batches_are_accepted_and_give_what_uncompressed_ones_give(serve_factory, codec):
    plain, packed = serve_factory(name="plain"), serve_factory(name=codec)
    for host, batches in _big_fleet().items():
        push_streams(plain.target, host, [Stream("s", batches)], compression="none")
        push_streams(packed.target, host, [Stream("s", batches)], compression=codec)
    assert _view(packed.target) == _view(plain.target)
    alerts, stats = _view(packed.target)
    assert stats["events"] == sum(b.num_rows for bs in _big_fleet().values() for b in bs)
    assert any(len(a[2]) == 5 for a in alerts)           # the seed's five-lock finding
    # the batches were sent (and logged) compressed: the log holds fewer bytes
    assert _log_bytes(packed) < 0.7 * _log_bytes(plain), (_log_bytes(packed), _log_bytes(plain))
    # and a restart replays the compressed log to the same state
    packed.restart()
    assert _view(packed.target) == _view(plain.target)


def test_the_agent_compresses_by_default_when_the_service_says_it_reads_it(serve_factory):
    auto, none = serve_factory(name="auto"), serve_factory(name="none")
    batches = _big_fleet()["busy"]
    push_streams(auto.target, "busy", [Stream("s", batches)])                       # compression="auto"
    push_streams(none.target, "busy", [Stream("s", batches)], compression="none")
    assert _view(auto.target) == _view(none.target)
    assert _log_bytes(auto) < 0.7 * _log_bytes(none)
    with grpc.insecure_channel(auto.target) as ch:                                   # what it says
        call = pb_grpc.IngestStub(ch).Push(iter(()), timeout=10)
        offered = dict(call.initial_metadata())[CODECS_METADATA]
        list(call)
    assert set(offered.split(",")) == {"lz4", "zstd"}


class _OldService(pb_grpc.IngestServicer):
    """A service from before compression: names no codecs, keeps what it receives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def Push(self, requests, context):  # noqa: N802
        for msg in requests:
            self.received.append(msg.arrow_ipc)
            n = pa.ipc.open_stream(pa.py_buffer(msg.arrow_ipc)).read_all().num_rows
            yield pb.PushAck(seq=msg.seq, ok=True, events=n)


def test_an_older_service_gets_uncompressed_batches():
    old = _OldService()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_IngestServicer_to_server(old, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        batches = _big_fleet()["busy"][:3]
        with Agent(f"127.0.0.1:{port}", "h", stream_id="s", quiet=True) as agent:
            for b in batches:
                agent.send_batch(b)
            agent.flush(30)
    finally:
        server.stop(0)
    assert old.received == [to_ipc(b) for b in batches]


def _codec_byte(ipc: bytes) -> int:
    """Where a zstd batch's IPC metadata names its codec (found by asking pyarrow which byte it is)."""
    for i in range(len(ipc) - 1, -1, -1):
        if ipc[i] != 1:          # ZSTD is 1 in Arrow's CompressionType
            continue
        bad = bytearray(ipc)
        bad[i] = 9
        try:
            pa.ipc.open_stream(pa.py_buffer(bytes(bad))).read_all()
        except pa.ArrowInvalid as exc:
            if "codec" in str(exc).lower():
                return i
        except Exception:  # noqa: BLE001 - another byte: some other damage
            continue
    raise AssertionError("no codec byte found")


def test_an_unknown_codec_is_refused_as_invalid_argument_and_the_stream_goes_on(lockfleet_server):
    good = to_ipc(_big_fleet()["busy"][0])
    z = encode(_big_fleet()["busy"][0], "zstd")
    bad = bytearray(z)
    bad[_codec_byte(z)] = 9
    with grpc.insecure_channel(lockfleet_server.target) as ch:
        acks = list(pb_grpc.IngestStub(ch).Push(iter([
            pb.PushBatch(host="h", stream_id="s", seq=1, arrow_ipc=bytes(bad)),
            pb.PushBatch(host="h", stream_id="s", seq=1, arrow_ipc=good)]), timeout=30))
    assert not acks[0].ok and acks[0].code == "INVALID_ARGUMENT" and acks[0].reason == "bad_compression", acks[0]
    assert "codec" in acks[0].error and "lz4" in acks[0].error and "seq 1" in acks[0].error, acks[0].error
    assert acks[1].ok and acks[1].events == _big_fleet()["busy"][0].num_rows


# -- one file on several streams --------------------------------------------------------------

def _inversion_file(path: Path, batches: int = 12, rows: int = 65536) -> None:
    """Many threads taking locks in one order, a dependency X -> Y in the first batch (thread 5),
    Y -> X in the last (thread 18), and a three-lock cycle P -> Q, Q -> R, R -> P on threads
    31, 44, 57 in batches 0, 5, 11: the file's order makes each cycle's last link its inversion."""
    rng = np.random.default_rng(11)
    special = {0: [(5, "X", "Y"), (31, "P", "Q")], 5: [(44, "Q", "R")], batches - 1: [(18, "Y", "X"), (57, "R", "P")]}
    tables = []
    for b in range(batches):
        tid, op, lock = [], [], []
        for t, a, c in special.get(b, []):
            tid += [t] * 4
            op += [0, 0, 1, 1]
            lock += [a, c, c, a]
        while len(op) < rows - 8:
            t = int(rng.integers(1, 97))
            chosen = np.sort(rng.choice(30, size=int(rng.integers(1, 4)), replace=False))
            tid += [t] * (2 * len(chosen))
            op += [0] * len(chosen) + [1] * len(chosen)
            lock += [f"L{c:02d}" for c in chosen] + [f"L{c:02d}" for c in chosen[::-1]]
        tid, op, lock = tid[:rows], op[:rows], lock[:rows]
        ts = np.arange(len(op), dtype=np.int64) + 1_700_000_000_000_000_000 + b * rows
        tables.append(pa.table({"ts_ns": ts, "tid": pa.array(tid, pa.int64()), "op": pa.array(op, pa.uint8()),
                                "lock": pa.array(lock, pa.utf8())}))
    table = pa.concat_tables(tables)
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table, max_chunksize=rows)


def test_push_on_several_streams_finds_what_one_stream_finds(serve_factory, lockfleet_cli, tmp_path):
    path = tmp_path / "events.arrow"
    _inversion_file(path)
    one, three = serve_factory(name="one"), serve_factory(name="three")
    r1 = lockfleet_cli("push", path, "--host", "h", "--target", one.target)
    r3 = lockfleet_cli("push", path, "--host", "h", "--target", three.target, "--streams", "3")
    assert r1.returncode == 0 and r3.returncode == 0, (r1.stderr, r3.stderr)
    alerts1, stats1 = _view(one.target)
    alerts3, stats3 = _view(three.target)
    assert alerts3 == alerts1
    assert sorted(tuple(sorted(a[2])) for a in alerts1) == [("P", "Q", "R"), ("X", "Y")], alerts1
    assert stats3 == stats1 and stats1["events"] == pa.ipc.open_file(str(path)).read_all().num_rows
    # idempotent: the same file on the same number of streams again applies nothing
    again = lockfleet_cli("push", path, "--host", "h", "--target", three.target, "--streams", "3")
    assert again.returncode == 0 and "already there" in again.stdout, again.stdout
    assert _view(three.target) == (alerts3, stats3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 9), min_size=0, max_size=200), st.integers(1, 5), st.integers(1, 50))
def test_split_by_thread_keeps_each_threads_rows_in_order(tids, n, cut):
    ts = list(range(len(tids)))
    table = pa.table({"ts_ns": pa.array(ts, pa.int64()), "tid": pa.array(tids, pa.int64()),
                      "op": pa.array([0] * len(tids), pa.uint8()), "lock": pa.array(["A"] * len(tids), pa.utf8())})
    batches = table.to_batches(max_chunksize=cut) or [table.to_batches()[0] if table.num_rows else
                                                      pa.RecordBatch.from_pylist([], schema=table.schema)]
    parts = split_by_thread(Stream("s", batches), n)
    assert len(parts) == n and len({p.stream_id for p in parts}) == n
    assert all(len(p.batches) == len(batches) for p in parts)
    seen = {}
    for p in parts:
        rows = [r for b in p.batches for r in zip(b.column("tid").to_pylist(), b.column("ts_ns").to_pylist())]
        for tid, t in rows:
            seen.setdefault(tid, []).append(t)
            assert all(r[0] % n == int(p.stream_id.split("/")[-1].split("of")[0]) - 1 for r in rows)
    expected = {}
    for tid, t in zip(tids, ts):
        expected.setdefault(tid, []).append(t)
    assert seen == expected                      # every row once, each thread's in the file's order


def test_push_streams_paces_the_parts_together(lockfleet_server):
    """Part i of each source batch goes out only once part i - window of every stream is acked."""
    order: list[tuple[str, int]] = []
    lock = threading.Lock()
    batches = [pa.record_batch({"ts_ns": pa.array([i * 10 + t for t in range(4)], pa.int64()),
                                "tid": pa.array([0, 1, 2, 3], pa.int64()), "op": pa.array([0, 1, 0, 1], pa.uint8()),
                                "lock": pa.array(["A", "A", "B", "B"], pa.utf8())}) for i in range(40)]

    def on_ack(sid: str, seq: int, _ack) -> None:
        with lock:
            order.append((sid, seq))

    push_streams(lockfleet_server.target, "h", [Stream("s", batches)], parallel=2, window=2, on_ack=on_ack)
    assert len(order) == 80
    acked: dict[str, int] = {}
    for sid, seq in order:   # seq s went out once the other part had acked s - 1 - window (one of slack)
        acked[sid] = seq
        other = [v for k, v in acked.items() if k != sid]
        assert seq <= 2 + 2 or (other and other[0] >= seq - 2 - 2), (sid, seq, acked)
