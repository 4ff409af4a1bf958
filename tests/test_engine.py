"""Engine-level behaviour beyond lockdep's rules (those are in test_scenarios/test_properties):
the seed report through the engine, evidence, queries, snapshots."""

import re
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import require
from eventgen import Stream, events

from lockfleet import Engine
from lockfleet.demo import seed_scenario

SEED_LOCKS = ("tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex", "bpf_event_mutex")


def shared() -> Path:
    import os
    return Path(os.environ.get("LOCKFLEET_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def fed_seed(engine: Engine, hosts=None) -> list:
    raised = []
    for host, table in seed_scenario().items():
        if hosts is None or host in hosts:
            raised += engine.ingest(table, host=host)
    return raised


def test_seed_cycle_across_four_hosts_renders_like_the_seed():
    eng = Engine()
    raised = fed_seed(eng)
    assert [a.kind for a in raised] == ["circular"]
    alert = raised[0]
    assert alert.locks == SEED_LOCKS
    assert alert.hosts == ("boot-0", "bpf-3", "perf-1", "perf-2")
    assert alert.single_host() is None
    text = alert.render()
    assert "Chain exists of:\n  tracepoints_mutex --> &cpuctx_mutex --> bpf_event_mutex\n" in text
    seed = (shared() / "seed" / "lkml-bpf-deadlock-report.txt")
    require(seed.exists(), f"{seed} not found")
    strip = lambda line: re.sub(r"^\[\s*\d+\.\d+\]\s?", "", line)
    seed_lines = [strip(l) for l in seed.read_text().splitlines()]
    start = seed_lines.index("       CPU0                    CPU1")
    table = seed_lines[start:start + 6]
    got = text.splitlines()
    at = got.index("       CPU0                    CPU1")
    assert got[at:at + 6] == table


def test_no_host_alone_makes_a_finding():
    for host in ("boot-0", "perf-1", "perf-2", "bpf-3"):
        eng = Engine()
        assert fed_seed(eng, hosts={host}) == []


def test_alert_id_names_the_inversion():
    """The id is the inversion's: the same rows in the same order give the same id on any
    engine; the same cycle closed by another dependency is another inversion, so another id."""
    a, b, c = Engine(), Engine(), Engine()
    items = list(seed_scenario().items())
    for host, t in items:
        a.ingest(t, host=host)
        c.ingest(t, host=host)
    for host, t in reversed(items):
        b.ingest(t, host=host)
    (x,), (y,), (z,) = a.alerts(), b.alerts(), c.alerts()
    assert set(x.locks) == set(y.locks)
    assert x.id == z.id
    assert x.inversion == (x.links[-1].held, x.links[-1].taken)
    assert y.inversion == (y.links[-1].held, y.links[-1].taken)
    assert x.inversion != y.inversion and x.id != y.id


def test_chain_and_links_carry_evidence():
    eng = Engine()
    fed_seed(eng)
    path = eng.chain("tracepoints_mutex", "bpf_event_mutex")
    assert path == ["tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex", "bpf_event_mutex"]
    links = eng.chain_links("tracepoints_mutex", "bpf_event_mutex")
    assert [l.first_taken.host for l in links] == ["perf-1", "boot-0", "boot-0", "perf-2"]
    assert links[0].first_taken.site.startswith("static_key_slow_inc")
    assert eng.chain("bpf_event_mutex", "no_such_lock") is None


def test_subclass_names_and_chain_lookup():
    s = Stream()
    t = s.thread(host="h")
    t.lock("A")
    t.lock("A", subclass=1)
    t.unlock("A")
    t.unlock("A")
    eng = Engine()
    eng.ingest(events(s.rows), host="h")
    assert eng.edges() == [("A", "A/1", ("EN",))]
    assert eng.chain("A", "A/1") == ["A", "A/1"]
    assert eng.alerts() == []


def test_counts_and_hosts_grow_with_repeats():
    s = Stream()
    for host in ("h1", "h2", "h2"):
        t = s.thread(host=host)
        t.lock("A"); t.lock("B"); t.unlock("B"); t.unlock("A")
    eng = Engine()
    eng.ingest(events(s.rows), host="x")
    (link,) = eng.chain_links("A", "B")
    assert link.count == 3 and link.hosts == ("h1", "h2")


def test_stats_counts_events_and_classes():
    eng = Engine()
    fed_seed(eng)
    st = eng.stats()
    assert st["events"] == sum(t.num_rows for t in seed_scenario().values())
    assert st["alerts"] == 1 and st["locks"] >= 5 and st["edges"] >= 5


def test_snapshot_restore_mid_stream_keeps_held_locks_and_alerts():
    s = Stream()
    t1, t2 = s.thread(host="h1"), s.thread(host="h2")
    t1.lock("A"); t1.lock("B")           # t1 still holds A and B at the snapshot
    first = events(s.rows)
    s.rows.clear()
    t1.unlock("B"); t1.unlock("A")       # would be bad_unlocks if the stacks were lost
    t2.lock("B"); t2.lock("A"); t2.unlock("A"); t2.unlock("B")
    second = events(s.rows)
    eng = Engine()
    eng.ingest(first, host="h")
    restored = Engine.restore(eng.snapshot())
    out_a = eng.ingest(second, host="h")
    out_b = restored.ingest(second, host="h")
    assert [a.kind for a in out_b] == ["circular"]
    assert [a.to_dict() for a in out_a] == [a.to_dict() for a in out_b]
    drop = lambda st: {k: v for k, v in st.items() if not k.startswith("core_bytes")}
    assert drop(eng.stats()) == drop(restored.stats())
    assert eng.edges() == restored.edges()


def test_snapshot_rejects_garbage():
    with pytest.raises(ValueError):
        Engine.restore(b"nope")
    snap = Engine().snapshot()
    with pytest.raises(ValueError):
        Engine.restore(snap[:-3] if len(snap) > 3 else b"LFENG001")


def test_depth_limit_is_a_setting():
    s = Stream()
    t = s.thread(host="h")
    for i in range(5):
        t.lock(f"L{i}")
    for i in reversed(range(5)):
        t.unlock(f"L{i}")
    eng = Engine(max_lock_depth=3)
    eng.ingest(events(s.rows), host="h")
    st = eng.stats()
    assert st["depth_overflows"] == 2
    assert st["alerts"] == 0   # the untracked releases are absorbed, not bad_unlocks


def test_count_column_says_how_many_acquisitions_a_row_stands_for():
    """A uint64 `count` (edge-mode agents) multiplies a row; 0 makes the dependency uncounted;
    a `count` column of another type is an unknown column and ignored (docs/contract.md section 2)."""
    def batch(count):
        cols = {"ts_ns": pa.array([1, 2, 3, 4], pa.int64()), "tid": pa.array([1] * 4, pa.int64()),
                "op": pa.array([0, 0, 1, 1], pa.uint8()), "lock": pa.array(["A", "B", "B", "A"])}
        if count is not None:
            cols["count"] = count
        return pa.record_batch(cols)

    eng = Engine()
    eng.ingest(batch(pa.array([None, 5, None, None], pa.uint64())), host="h")
    eng.ingest(batch(pa.array([None, 0, None, None], pa.uint64())), host="h")
    eng.ingest(batch(None), host="h")
    eng.ingest(batch(pa.array([7, 7, 7, 7], pa.int64())), host="h")   # not uint64: ignored
    (link,) = eng.chain_links("A", "B")
    assert link.count == 5 + 0 + 1 + 1


def _pairs(tid: int, *pairs: tuple[str, str]) -> pa.Table:
    rows = [(a, b) for a, b in pairs]
    names, ops = [], []
    for a, b in rows:
        names += [a, b, b, a]
        ops += [0, 0, 1, 1]
    return pa.table({"ts_ns": pa.array(range(len(ops)), pa.int64()), "tid": pa.array([tid] * len(ops), pa.int64()),
                     "op": pa.array(ops, pa.uint8()), "lock": pa.array(names)})


def test_snapshot_keeps_inversions_and_their_witnesses():
    """Restored mid-stream, an engine goes on exactly as one that never stopped: the same
    inversion, the same witness counts and kept cycles, and its order's invariants hold."""
    first = [_pairs(1, ("A", "B"), ("B", "C")), _pairs(2, ("C", "A"))]          # inversion C -> A
    later = [_pairs(3, ("A", "D"), ("D", "C")), _pairs(4, ("B", "E"), ("E", "C")), _pairs(5, ("X", "Y"))]
    straight = Engine()
    for t in first + later:
        straight.ingest(t, host="h")
    eng = Engine()
    for t in first:
        eng.ingest(t, host="h")
    eng = Engine.restore(eng.snapshot())
    eng._core.check_invariants()
    for t in later:
        eng.ingest(t, host="h")
    eng._core.check_invariants()
    (a,), (b,) = straight.alerts(), eng.alerts()
    assert a.id == b.id and a.inversion == b.inversion == ("C", "A")
    assert a.count == b.count == 3
    assert [w.locks for w in a.witnesses] == [w.locks for w in b.witnesses]
    assert eng.stats()["witnesses"] == straight.stats()["witnesses"] == 3
