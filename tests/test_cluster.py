"""The cluster on a real NATS JetStream (nats-server processes on loopback): the derivation is a
pure function of a partition's raw batches; a gateway acks only what JetStream acked and dedupes
across gateways; and, with a three-node cluster, killing a NATS node, a worker, a gateway and the
authority at random points while agents push loses and doubles nothing acknowledged, and the
standby's findings are a single process's on the same events."""

from __future__ import annotations

import json
import random
import threading
import time

import pyarrow as pa
import pytest

from clusterkit import FailoverAgent, oracle_order, require_nats, workload
from lockfleet import Engine
from lockfleet.agent import AgentError, Refused, Stream, fetch_alerts, push_streams
from lockfleet.cluster import bus
from lockfleet.cluster.derive import Partition
from lockfleet.cluster.harness import Cluster

pytestmark = pytest.mark.e2e


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _headers(host: str, stream: str, seq: int) -> dict[str, str]:
    return {bus.H_HOST: host, bus.H_STREAM: stream, bus.H_SEQ: str(seq)}


def test_derivation_is_deterministic_dedupes_and_matches_raw_alerts() -> None:
    raw = workload(seed=3, hosts=4, batches=6, rows=200)
    msgs = [(h, i + 1, b) for i in range(6) for h, bs in raw.items() for b in bs[i:i + 1]]
    runs = []
    for _ in range(2):
        part = Partition(0)
        out = []
        for h, seq, b in msgs:
            out += part.apply(_headers(h, "s", seq), _ipc(b))
            out += part.apply(_headers(h, "s", seq), _ipc(b))   # stored twice on the bus: applied once
        runs.append(out)
        assert part.duplicates == len(msgs)
    assert [(d.subject, d.seq, d.payload, d.headers) for d in runs[0]] == \
           [(d.subject, d.seq, d.payload, d.headers) for d in runs[1]]
    # the authority's engine on the derived batches == one engine on the raw batches in that order
    central, single = Engine(), Engine()
    for d in runs[0]:
        central.ingest(pa.ipc.open_stream(d.payload).read_all(), host=d.host)
    for h, seq, b in msgs:
        single.ingest(b, host=h)
    got = {a.id: a.hosts for a in central.alerts()}
    want = {a.id: a.hosts for a in single.alerts()}
    assert want and got == want
    assert sorted(central.edges()) == sorted(single.edges())


def test_relay_batch_is_split_by_host() -> None:
    t = pa.table({"ts_ns": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()), "tid": pa.array([1] * 8, pa.int64()),
                  "op": pa.array([0, 0, 1, 1, 0, 0, 1, 1], pa.uint8()),
                  "lock": ["A", "B", "B", "A", "B", "A", "A", "B"],
                  "host": ["h1", "h1", "h1", "h1", "h2", "h2", "h2", "h2"]})
    out = Partition(0).apply(_headers("relay", "s", 1), _ipc(t.to_batches()[0]))
    assert [d.host for d in out] == ["h1", "h2"]
    central = Engine()
    for d in out:
        central.ingest(pa.ipc.open_stream(d.payload).read_all(), host=d.host)
    # A -> B on h1, B -> A on h2: the cycle is found across the two hosts the relay spoke for
    assert [(sorted(a.locks), list(a.hosts)) for a in central.alerts()] == [(["A", "B"], ["h1", "h2"])]


@pytest.fixture
def single_node(tmp_path):
    require_nats()
    cluster = Cluster(tmp_path / "c1", nodes=1, partitions=2, lease=1.5)
    cluster.start_nats()
    yield cluster
    cluster.stop()


def test_gateway_acks_after_jetstream_and_dedupes_across_gateways(single_node: Cluster) -> None:
    c = single_node
    g1, g2 = c.gateway("gw-1"), c.gateway("gw-2")
    g1.wait_healthy()
    g2.wait_healthy()
    batches = workload(seed=1, hosts=1, batches=8, rows=50)["host-0"]
    r1 = push_streams(g1.target, "host-0", [Stream("s", batches[:5])])
    assert (r1.batches, r1.duplicates) == (5, 0)
    # the agent moves to the other gateway and resends from seq 3: 3..5 are duplicates
    r2 = push_streams(g2.target, "host-0", [Stream("s", batches[2:], first_seq=3)])
    assert (r2.batches, r2.duplicates) == (6, 3)
    with pytest.raises(Refused) as gap:
        push_streams(g1.target, "host-0", [Stream("s", batches[:1], first_seq=10)])
    assert gap.value.reason == "seq_gap"
    with pytest.raises(Refused) as bad:
        push_streams(g1.target, "host-0", [Stream("s2", [pa.record_batch({"tid": pa.array([1], pa.int64())})])])
    assert bad.value.code == "INVALID_ARGUMENT"
    stored = c.read_stream(bus.EVENTS, "lf.ev.>")
    assert [int(h[bus.H_SEQ]) for h, _ in stored] == list(range(1, 9))
    # the agent compressed them (the gateway says it reads lz4): the same batches, decoded
    assert all(pa.ipc.open_stream(d).read_all().equals(pa.ipc.open_stream(_ipc(b)).read_all())
               for (_, d), b in zip(stored, batches, strict=True))
    # no bus, no ack: the batch is refused (UNAVAILABLE), not acknowledged
    c.nats.kill(0)
    with pytest.raises(AgentError):
        push_streams(g1.target, "host-0", [Stream("s3", batches[:1])], retry_for=1.0)


def test_chaos_nothing_acked_lost_or_doubled_findings_equal_one_process(tmp_path) -> None:
    require_nats()
    rng = random.Random(int(time.time()))
    seed = rng.randrange(1000)
    c = Cluster(tmp_path / "c3", nodes=3, partitions=4, lease=1.5)
    try:
        c.start_nats()
        primary = c.authority("authority")
        primary.wait_healthy()
        primary.wait_log("holds the lease: leader")
        standby = c.authority("standby")
        gws = [c.gateway("gw-1"), c.gateway("gw-2")]
        workers = [c.worker("worker-1"), c.worker("worker-2")]
        for r in (standby, *gws):
            r.wait_healthy()
        raw = workload(seed=seed, hosts=6, batches=14, rows=250)
        targets = [g.target for g in gws]
        agents = [FailoverAgent(h, bs, targets, start=i) for i, (h, bs) in enumerate(raw.items())]
        for a in agents:
            a.thread.start()
        kills = ["nats", "worker", "gateway", "authority"]
        rng.shuffle(kills)
        done: list[str] = []
        for what in kills:
            time.sleep(rng.uniform(0.3, 2.0))
            if what == "nats":
                c.nats.kill(rng.randrange(3))
            elif what == "worker":
                workers[0].kill()
                workers.append(c.worker("worker-3"))
            elif what == "gateway":
                gws[0].kill()
            else:
                primary.kill()
            done.append(what)
        for a in agents:
            a.thread.join(120)
        assert not [a.error for a in agents if a.error], [a.error for a in agents]
        assert all(len(a.acked) == len(a.batches) for a in agents)
        # every acked batch is on the bus exactly once
        stored = c.read_stream(bus.EVENTS, "lf.ev.>")
        seen: dict[tuple[str, int], int] = {}
        for h, _ in stored:
            key = (h[bus.H_HOST], int(h[bus.H_SEQ]))
            seen[key] = seen.get(key, 0) + 1
        assert seen == {(a.host, s): 1 for a in agents for s in range(1, len(a.batches) + 1)}, f"kills {done}"
        # the standby leads, catches up, and holds what one process holds on the same events
        standby.wait_log("holds the lease: leader", timeout=60)
        derived = c.read_stream(bus.DERIVED, "lf.derived.>")
        order = oracle_order(raw, derived, {})
        single = Engine()
        for host, b in order:
            single.ingest(b, host=host)
        want = {a.id: list(a.hosts) for a in single.alerts()}
        assert want
        deadline = time.monotonic() + 60
        got: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            got = {a.data["id"]: a.data["hosts"] for a in fetch_alerts(standby.target)}
            published = c.published_alerts()
            if got == want and len(published) == len(want):
                break
            time.sleep(0.5)
        assert got == want, f"seed {seed}, kills {done}"
        time.sleep(c.lease)
        published = [p["alert"]["id"] for p in c.published_alerts()]
        assert sorted(published) == sorted(want), f"each finding published once (seed {seed}, kills {done})"
    finally:
        c.stop()


def test_archive_from_the_bus_once_and_analyze_reads_it(single_node: Cluster, lockfleet_cli) -> None:
    import pyarrow.parquet as pq

    c = single_node
    gw = c.gateway("gw")
    gw.wait_healthy()
    arch = c.archiver()
    raw = workload(seed=7, hosts=3, batches=6, rows=200)
    for h, bs in raw.items():
        push_streams(gw.target, h, [Stream("s", bs[:3])])
    time.sleep(1.5)
    arch.kill()            # mid-way: whatever it wrote and did not record is redone, not doubled
    for h, bs in raw.items():
        push_streams(gw.target, h, [Stream("s", bs[3:], first_seq=4)])
        push_streams(gw.target, h, [Stream("s", bs[2:4], first_seq=3)])   # resent: duplicates
    arch = c.archiver()
    state = c.workdir / "archiver" / "archive" / "_bus_state.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if state.exists() and json.loads(state.read_text())["through"] >= 18:
            break
        time.sleep(0.2)
    arch.stop()
    parts = sorted((c.workdir / "archiver" / "archive").glob("day=*/*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    assert table.num_rows == sum(b.num_rows for bs in raw.values() for b in bs)
    assert len(set(zip(table.column("host").to_pylist(), table.column("seq").to_pylist()))) == 18
    single = Engine()     # in the bus's order, as the archive keeps it
    for part in (slice(0, 3), slice(3, 6)):
        for h, bs in raw.items():
            for b in bs[part]:
                single.ingest(b, host=h)
    res = lockfleet_cli("analyze", c.workdir / "archiver", "--json")
    assert res.returncode == 0, res.stderr
    got = sorted((a["id"], tuple(a["hosts"])) for a in json.loads(res.stdout)["alerts"])
    want = sorted((a.id, tuple(a.hosts)) for a in single.alerts())
    assert want and got == want


def test_cluster_commands_refuse_bad_usage_with_status_2(capsys) -> None:
    from lockfleet.cli import main

    cases = [
        (["worker", "--bus", "http://127.0.0.1:4222"], "not a nats:// or tls:// URL"),
        (["worker", "--bus", "nats://127.0.0.1:4222", "--partitions", "0"], "--partitions"),
        (["serve", "--listen", "0.0.0.0:50551", "--bus", "nats://127.0.0.1:4222"], "loopback"),
        (["serve", "--listen", "127.0.0.1:50551"], "--data-dir is required"),
        (["authority", "--bus", "nats://127.0.0.1:4222", "--name", "a"], "--data-dir"),
    ]
    for args, why in cases:
        try:
            status = main(args)
        except SystemExit as exc:     # argparse's own usage errors
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2, (args, err)
        assert why in err, (args, err)


def test_edge_mode_shipments_are_forwarded_without_an_engine() -> None:
    from lockfleet.agent.edgemode import ExportState, export_new

    raw = workload(seed=5, hosts=1, batches=4, rows=200)["host-0"]
    local, state = Engine(), ExportState()
    part = Partition(0)
    shipped = []
    for i, b in enumerate(raw):
        local.ingest(b, host="host-0")
        batch = export_new(local, state)
        assert batch is not None
        out = part.apply(_headers("host-0", "edge", i + 1), _ipc(batch))
        assert [(d.host, d.seq, d.payload) for d in out] == [("host-0", i + 1, _ipc(batch))]
        shipped.append(batch)
    assert part.hosts["host-0"].engine is None


def test_gateway_over_mtls_binds_streams_to_the_certificate_host(single_node: Cluster, certs) -> None:
    from lockfleet.agent import Connection
    from lockfleet.cluster.harness import Role
    from lockfleet.cluster.natsd import _free_port

    c = single_node
    port, health = _free_port(), _free_port()
    gw = Role("gw-tls", ["serve", "--listen", f"127.0.0.1:{port}", "--health-listen", f"127.0.0.1:{health}",
                         "--tls-cert", str(certs.path("server.pem")), "--tls-key", str(certs.path("server.key")),
                         "--client-ca", str(certs.path("ca.pem")), *c.bus_args()], c.workdir, health).start()
    c.roles["gw-tls"] = gw
    gw.wait_healthy()   # the plain health port

    def as_(who: str) -> Connection:
        return Connection(f"localhost:{port}", tls_ca=str(certs.path("ca.pem")), tls_cert=str(certs.path(f"{who}.pem")),
                          tls_key=str(certs.path(f"{who}.key")))

    batch = workload(seed=2, hosts=1, batches=1, rows=20)["host-0"][0]
    assert push_streams(as_("h1"), "h1", [Stream("s", [batch])]).batches == 1
    with pytest.raises(Refused) as other:
        push_streams(as_("h1"), "h2", [Stream("s", [batch])])
    assert other.value.code == "PERMISSION_DENIED"
    relayed = pa.Table.from_batches([batch]).append_column("host", pa.array(["h2"] * batch.num_rows))
    with pytest.raises(Refused) as column:
        push_streams(as_("h1"), "h1", [Stream("r", relayed.to_batches())])
    assert column.value.code == "PERMISSION_DENIED" and "'h2'" in str(column.value)
    assert push_streams(as_("relay"), "h1", [Stream("r", relayed.to_batches())]).batches == 1
