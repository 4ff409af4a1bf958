"""The Agent SDK against a real `lockfleet serve`: batches cut by rows and by time with dictionary-
encoded names, flush/close that wait for acks, the overflow policies (block, drop with a counter),
refusals skipped or fatal, TLS with tokens and mTLS, and a SIGKILL and restart of the service
mid-stream that loses nothing the agent was told was acked and duplicates nothing."""

from __future__ import annotations

import logging
import threading
import time

import pyarrow as pa
import pytest

from conftest import ServeProcess, free_port
from lockfleet.agent import Agent, AgentClosed, Connection, Refused, Stream, fetch_stats, push_streams
from lockfleet.agent.client.encoding import WIRE_SCHEMA
from lockfleet.events import EventError

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

INGEST, QUERY = "ingest-sdk-0123456789abcdef", "query-sdk-0123456789abcdef0"


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("sdk")
    s = ServeProcess(d / "data", d / "serve.log", ["--max-threads-per-host", "64", "--group-commit-ms", "1"])
    s.start()
    try:
        yield s
    finally:
        s.stop()


def events_of(target: str) -> int:
    return fetch_stats(target)["events"]


def session(agent: Agent, tid: int, *locks: str) -> int:
    for name in locks:
        agent.acquire(name, tid=tid)
    for name in reversed(locks):
        agent.release(name, tid=tid)
    return 2 * len(locks)


def test_batches_are_cut_by_rows_and_dictionary_encoded(unused_target):
    agent = Agent(unused_target, host="cut", batch_rows=100, batch_interval=3600, retry_for=None)
    try:
        for i in range(250):
            agent.acquire(f"lock_{i % 3}", tid=7, site="f+0x1/0x10", task="t/7")
        wait_for(lambda: agent.stats()["batches"] == 2, what="two full batches")
        batches = list(agent.sender.unacked)
        assert [b.seq for b in batches] == [1, 2] and [b.rows for b in batches] == [100, 100]
        with pa.ipc.open_stream(pa.py_buffer(batches[0].ipc)) as reader:
            batch = reader.read_next_batch()
        assert batch.schema == WIRE_SCHEMA
        assert batch.column("lock").dictionary.to_pylist() == ["lock_0", "lock_1", "lock_2"]
        assert batch.column("tid").to_pylist() == [7] * 100
        assert agent.stats()["buffered"] == 250            # recorded, none acked
    finally:
        agent.abort()
    with pytest.raises(AgentClosed):
        agent.acquire("x")


def test_time_cut_flush_and_close_wait_for_acks(server):
    before = events_of(server.target)
    acks = []
    agent = Agent(server.target, host="flush", batch_rows=10_000, batch_interval=0.05,
                  on_ack=lambda seq, ack: acks.append(seq))
    n = session(agent, 1, "F_a", "F_b")
    # nothing calls flush: the batch goes by time
    wait_for(lambda: agent.stats()["acked_events"] == n, what="the time cut to be acked")
    n += session(agent, 2, "F_a", "F_c")
    assert agent.flush(timeout=30)
    st = agent.stats()
    assert st["acked_events"] == st["applied_events"] == st["recorded"] == n
    assert acks == list(range(1, st["acked_batches"] + 1))
    assert events_of(server.target) == before + n
    agent.record([{"op": 0, "lock": "F_d", "tid": 3}, {"op": 1, "lock": "F_d", "tid": 3}])
    agent.record([(1, 3, 0, "F_e", 0, 0, 0, 0, None, None), (2, 3, 1, "F_e", 0, 0, 0, 0, None, None)])
    table = pa.table({"ts_ns": pa.array([5, 6], pa.int64()), "tid": pa.array([4, 4], pa.int64()),
                      "op": pa.array([0, 1], pa.uint8()), "lock": pa.array(["F_f", "F_f"])})
    assert agent.record(table) == 2
    agent.close()
    assert agent.stats()["acked_events"] == n + 6
    assert events_of(server.target) == before + n + 6
    agent.close()                                   # idempotent
    with pytest.raises(AgentClosed):
        agent.release("F_a")


def test_many_threads_record_into_one_agent_in_order(server):
    """Rows go into the buffer without a lock: 8 threads at once, small batches cut meanwhile;
    every event arrives once and each thread's order is kept (no bad_unlock, no lost pair)."""
    before = fetch_stats(server.target)
    agent = Agent(server.target, host="threads", batch_rows=97, batch_interval=0.01)
    per_thread = 3000

    def work(k: int) -> None:
        for i in range(per_thread // 4):
            session(agent, 1000 + k, f"MT_{k}_a", f"MT_{k}_b")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    agent.close(timeout=60)
    st = agent.stats()
    assert st["recorded"] == st["acked_events"] == 8 * per_thread and st["batches"] >= 8 * per_thread // 97
    after = fetch_stats(server.target)
    assert after["events"] - before["events"] == 8 * per_thread
    assert after["alerts"] == before["alerts"]          # no bad_unlock: each thread's pairs in order


def test_push_streams_sends_prebuilt_batches_whole_on_the_sdk(server):
    """`lockfleet push` and push_streams: one Agent per stream, each given batch one seq (an
    empty one too), a resend of the same stream is all duplicates."""
    before = events_of(server.target)

    def batch(n: int) -> pa.RecordBatch:
        return pa.record_batch({"ts_ns": pa.array(range(n), pa.int64()), "tid": pa.array([9] * n, pa.int64()),
                                "op": pa.array([i % 2 for i in range(n)], pa.uint8()),
                                "lock": pa.array(["P_a"] * n, pa.string())})

    batches = [batch(4), batch(0), batch(6)]
    seqs = []
    result = push_streams(server.target, "pusher", [Stream("files/1", batches)],
                          on_ack=lambda sid, seq, ack: seqs.append((sid, seq)))
    assert seqs == [("files/1", 1), ("files/1", 2), ("files/1", 3)]
    assert result.batches == 3 and result.events == 10 and result.duplicates == 0
    again = push_streams(server.target, "pusher", [Stream("files/1", batches)])
    assert again.batches == 3 and again.duplicates == 3 and again.events == 0
    assert events_of(server.target) == before + 10
    agent = Agent(server.target, host="pusher", stream_id="mixed")
    agent.send_batch(batch(2))
    with pytest.raises(ValueError, match="one schema"):
        agent.acquire("P_a")
    agent.close()


def test_bad_events_are_refused_locally_naming_the_field(unused_target):
    agent = Agent(unused_target, host="bad")
    try:
        with pytest.raises(EventError, match="mode"):
            agent.acquire("A", mode=3)
        with pytest.raises(EventError, match="lock"):
            agent.acquire("")
        with pytest.raises(EventError, match="row 1: subclass"):
            agent.record([{"op": 0, "lock": "A"}, {"op": 0, "lock": "B", "subclass": 9}])
        with pytest.raises(EventError, match="'op'"):
            agent.record(pa.table({"ts_ns": pa.array([1], pa.int64()), "tid": pa.array([1], pa.int64()),
                                   "op": pa.array([7], pa.uint8()), "lock": pa.array(["A"])}))
        with pytest.raises(EventError, match="host"):
            agent.record(pa.table({"ts_ns": pa.array([1], pa.int64()), "tid": pa.array([1], pa.int64()),
                                   "op": pa.array([0], pa.uint8()), "lock": pa.array(["A"]), "host": ["h2"]}))
        assert agent.stats()["recorded"] == 0
        with pytest.raises(ValueError):
            Agent(unused_target, overflow="spill")
    finally:
        agent.abort()


def test_drop_overflow_counts_and_warns(unused_target, caplog):
    agent = Agent(unused_target, host="drop", max_buffered_events=10, overflow="drop", batch_rows=4)
    try:
        with caplog.at_level(logging.WARNING, logger="lockfleet.agent"):
            taken = sum(agent.acquire("D", tid=1) for _ in range(25))
        assert taken == 10
        st = agent.stats()
        assert agent.dropped == st["dropped"] == 15 and st["recorded"] == 10
        assert "dropping events" in caplog.text and "max_buffered_events=10" in caplog.text
        assert agent.flush(timeout=0.2) is False        # nothing can be acked: nobody listens
    finally:
        agent.abort()


def test_block_overflow_waits_until_the_service_acks(tmp_path):
    server = ServeProcess(tmp_path / "data", tmp_path / "serve.log")
    server.port = free_port()                      # the service is not up yet
    agent = Agent(server.target, host="block", max_buffered_events=50, batch_rows=20, batch_interval=0.01)
    total = 300
    done = threading.Event()

    def writer() -> None:
        for i in range(total // 2):
            session(agent, 1, "BL")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(lambda: agent.stats()["recorded"] == 50, what="the buffer to fill")
        assert not done.is_set() and agent.stats()["buffered"] == 50 and agent.dropped == 0
        server.start()
        t.join(timeout=60)
        assert done.is_set()
        agent.close(timeout=60)
        st = agent.stats()
        assert st["acked_events"] == total and st["reconnects"] >= 1
        assert events_of(server.target) == total
    finally:
        agent.abort()
        server.stop()


def test_refused_batches_are_skipped_or_fatal(server):
    before = events_of(server.target)
    # 100 threads in one batch: over the service's --max-threads-per-host 64, refused for good
    agent = Agent(server.target, host="refuse-skip", batch_rows=1000)
    for tid in range(100):
        session(agent, tid, "R_a")
    agent.flush(timeout=30)
    n = session(agent, 1, "R_a", "R_b")
    agent.close(timeout=30)
    st = agent.stats()
    assert st["refused_batches"] == 1 and st["refused_events"] == 200
    assert "thread_limit" in st["last_error"]
    assert st["acked_events"] == n and events_of(server.target) == before + n

    agent = Agent(server.target, host="refuse-fail", batch_rows=1000, on_refused="fail")
    for tid in range(100):
        session(agent, tid, "R_a")
    with pytest.raises(Refused) as refusal:
        agent.flush(timeout=30)
    assert refusal.value.code == "RESOURCE_EXHAUSTED" and refusal.value.reason == "thread_limit"
    with pytest.raises(Refused):
        agent.acquire("R_a", tid=1)
    with pytest.raises(Refused):
        agent.close()
    assert events_of(server.target) == before + n


def test_tls_token_and_mtls(serve_factory, certs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ingest {INGEST}\nquery {QUERY}\n")
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           "--token-file", tokens, credentials=certs.client(), name="tls")
    query = Connection(server.target, token=QUERY, tls_ca=certs.path("ca.pem"))
    with Agent(server.target, host="tls-1", tls_ca=certs.path("ca.pem"), token_file=tokens) as agent:
        n = session(agent, 1, "T_a", "T_b")
    assert agent.stats()["acked_events"] == n and fetch_stats(query)["events"] == n

    agent = Agent(server.target, host="tls-2", tls_ca=certs.path("ca.pem"), token=QUERY)   # the wrong role
    session(agent, 1, "T_a")
    with pytest.raises(Refused) as refusal:
        agent.flush(timeout=30)
    assert refusal.value.code == "PERMISSION_DENIED"
    agent.abort()

    mtls = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                         "--client-ca", certs.path("ca.pem"), credentials=certs.client("h1"), name="mtls")
    as_h1 = dict(tls_ca=certs.path("ca.pem"), tls_cert=certs.path("h1.pem"), tls_key=certs.path("h1.key"))
    with Agent(mtls.target, host="h1", **as_h1) as agent:
        n = session(agent, 1, "M_a", "M_b")
    assert agent.stats()["acked_events"] == n
    agent = Agent(mtls.target, host="h2", on_refused="fail", **as_h1)          # not its certificate's host
    session(agent, 1, "M_a")
    with pytest.raises(Refused) as refusal:
        agent.close(timeout=30)
    assert refusal.value.code == "PERMISSION_DENIED" and "'h2'" in str(refusal.value)


def test_sigkill_and_restart_mid_stream_loses_no_acked_event_and_duplicates_none(serve_factory):
    server = serve_factory("--group-commit-ms", "1", "--snapshot-seconds", "0.5", name="crash")
    agent = Agent(server.target, host="crashy", batch_rows=500, batch_interval=0.02, window=4,
                  max_buffered_events=20_000)
    stop = threading.Event()
    failures: list[BaseException] = []
    locks = [f"K_{i}" for i in range(12)]

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                pair = sorted({locks[i % 12], locks[(i * 5 + 1) % 12]})
                session(agent, 1 + i % 16, *pair)
                i += 1
                if i % 200 == 0:
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    kills = []
    try:
        for _ in range(3):
            wait_for(lambda: agent.stats()["acked_batches"] >= 10 + 10 * len(kills), what="acks before a kill")
            acked = agent.stats()["acked_events"]
            server.kill()
            kills.append(acked)
            time.sleep(0.2)                          # the agent notices, buffers, retries
            server.start()
            assert events_of(server.target) >= acked   # nothing acked was lost
        wait_for(lambda: agent.stats()["acked_batches"] >= 10 + 10 * len(kills), what="acks after the restarts")
    finally:
        stop.set()
        t.join(timeout=60)
    assert not failures, failures
    agent.close(timeout=90)
    st = agent.stats()
    assert st["reconnects"] >= 3 and st["dropped"] == 0 and st["refused_events"] == 0
    assert st["acked_events"] == st["recorded"]
    server.kill()
    server.start()
    stats = fetch_stats(server.target)
    assert stats["events"] == st["recorded"]           # every event once: none lost, none twice
    assert stats["ingest"]["batches"] == st["acked_batches"]
    assert kills == sorted(kills) and kills[-1] < st["recorded"]
