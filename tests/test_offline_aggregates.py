"""The aggregates of `lockfleet analyze`, against plain Python computations on small archives."""

from __future__ import annotations

import math
import os
import random
import sys
from collections import Counter, defaultdict

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eventgen import Ev, events
from test_offline_fixtures import T0, Rec, archive_table, service_run, workload, write_archive

from lockfleet.offline import Selection, analyze


def rows_of(recs: list[Rec]) -> list[dict]:
    return archive_table(recs).to_pylist()


def cls(r: dict) -> str:
    sub = 0 if r["op"] == 1 else r["subclass"]
    return r["lock"] if sub == 0 else f"{r['lock']}/{sub}"


def nearest(values: list[int], q: float) -> int:
    v = sorted(values)
    return v[int(math.floor((len(v) - 1) * q + 0.5))]   # polars' "nearest" (Rust's round: half away from 0)


def within_sketch_error(got: int, exact: int) -> bool:
    """p50/p99 from the log-scale histogram: within the stated relative error of the exact
    nearest-rank value, plus half a ns from rounding to whole ns (and a hair for float log2)."""
    from lockfleet.offline.aggregates import QUANTILE_REL_ERROR

    return abs(got - exact) <= QUANTILE_REL_ERROR * abs(exact) * (1 + 1e-9) + 0.5


def as_table(df, key: str) -> dict:
    return {r[key]: r for r in df.to_dicts()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classes_hosts_holds_timeline(tmp_path, seed):
    recs = workload(seed, hosts=4, threads=4, batches=40, rows=60, step_ns=10**9)
    rows = rows_of(recs)
    got = analyze([write_archive(tmp_path, recs, segments=4, seed=seed)])
    agg = got.aggregates

    # events per lock class
    by_cls: dict[str, Counter] = defaultdict(Counter)
    hosts_of = defaultdict(set)
    for r in rows:
        c = cls(r)
        by_cls[c]["events"] += 1
        by_cls[c]["acquires" if r["op"] != 1 else "releases"] += 1
        hosts_of[c].add(r["host"])
    table = as_table(agg.classes, "class")
    assert set(table) == set(by_cls)
    for c, n in by_cls.items():
        assert (table[c]["events"], table[c]["acquires"], table[c]["releases"]) == \
            (n["events"], n["acquires"], n["releases"]), c
        assert table[c]["hosts"] == len(hosts_of[c])
    assert agg.classes["events"].to_list() == sorted(agg.classes["events"].to_list(), reverse=True)

    # per host
    alerts = got.alerts
    hosts = as_table(agg.hosts, "host")
    assert set(hosts) == {r["host"] for r in rows}
    for h, row in hosts.items():
        mine = [r for r in rows if r["host"] == h]
        assert row["events"] == len(mine)
        assert row["acquires"] == sum(r["op"] != 1 for r in mine)
        assert row["releases"] == sum(r["op"] == 1 for r in mine)
        assert row["threads"] == len({r["tid"] for r in mine})
        assert row["classes"] == len({cls(r) for r in mine if r["op"] != 1})
        assert row["first_ts_ns"] == min(r["ts_ns"] for r in mine)
        assert row["last_ts_ns"] == max(r["ts_ns"] for r in mine)
        assert row["findings"] == sum(h in a.hosts for a in alerts)

    # hold times: per (host, thread, lock name), last in first out
    stacks: dict[tuple, list[tuple[int, str, int]]] = defaultdict(list)
    holds: dict[str, list[int]] = defaultdict(list)
    inside: Counter = Counter()      # acquisitions by the holder while it held the class
    acquired: Counter = Counter()    # per thread, so far
    for r in rows:
        key = (r["host"], r["tid"], r["lock"])
        thread = (r["host"], r["tid"])
        if r["op"] == 1:
            if stacks[key]:
                t0, c, n0 = stacks[key].pop()
                holds[c].append(r["ts_ns"] - t0)
                inside[c] += acquired[thread] - n0
        else:
            acquired[thread] += 1
            stacks[key].append((r["ts_ns"], cls(r), acquired[thread]))
    ht = as_table(agg.hold_times, "class")
    assert set(ht) == set(holds)
    for c, v in holds.items():
        row = ht[c]
        assert row["count"] == len(v)
        assert row["max_ns"] == max(v)
        for col, q in (("p50_ns", 0.5), ("p99_ns", 0.99)):
            assert within_sketch_error(row[col], nearest(v, q)), (c, col, row[col], nearest(v, q))
        assert row["mean_ns"] == pytest.approx(sum(v) / len(v))
        assert row["taken_while_held"] == inside[c]
    hwt = {d["held"]: d for d in agg.held_while_taking.to_dicts()}
    assert {c for c, n in inside.items() if n} <= set(hwt)
    for c, n in inside.items():
        if n:
            assert hwt[c]["taken_while_held"] == n
    assert agg.held_while_taking["taken_while_held"].to_list() == \
        sorted(agg.held_while_taking["taken_while_held"].to_list(), reverse=True)
    hist = agg.hold_histogram
    for c, v in holds.items():
        sub = hist.filter(hist["class"] == c)
        expect = Counter(0 if x <= 1 else int(math.floor(math.log2(x))) for x in v)
        assert dict(zip(sub["bucket"].to_list(), sub["count"].to_list())) == expect

    # timeline
    tl, width = agg.timeline, agg.timeline_width_ns
    t0 = min(r["ts_ns"] for r in rows)
    t0 -= t0 % width
    expect = Counter((((r["ts_ns"] - t0) // width) * width + t0, r["host"]) for r in rows)
    assert {(r["ts_ns"], r["host"]): r["events"] for r in tl.to_dicts()} == expect
    assert tl.height <= 4 * 121


def simple_workload(seed: int, hosts: int = 3, n: int = 600) -> list[Rec]:
    """Last-in first-out nesting, no trylocks, no irqs, no lock twice on a stack: each acquisition
    makes exactly the dependency top-of-stack -> new lock."""
    rng = random.Random(seed)
    names = [f"M{i}" for i in range(6)]
    stacks: dict[tuple[str, int], list[str]] = defaultdict(list)
    out, ts = [], T0
    seq: Counter = Counter()
    for b in range(n // 30):
        host = f"h{rng.randrange(hosts)}"
        evs = []
        for _ in range(30):
            tid = rng.randrange(3)
            st = stacks[(host, tid)]
            ts += rng.randint(1, 10**9)
            free = [x for x in names if x not in st]
            if st and (len(st) >= 4 or rng.random() < 0.45):
                evs.append(Ev(tid, 1, st.pop(), ts_ns=ts))
            else:
                lk = rng.choice(free)
                st.append(lk)
                evs.append(Ev(tid, 0, lk, ts_ns=ts))
        seq[host] += 1
        out.append(Rec(host, f"s-{host}", seq[host], events(evs)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_edges_and_locks_held_while_others_are_taken(tmp_path, seed):
    recs = simple_workload(seed)
    rows = rows_of(recs)
    got = analyze([write_archive(tmp_path, recs, segments=3, seed=seed)])
    stacks: dict[tuple, list[str]] = defaultdict(list)
    count: Counter = Counter()
    hosts, first, last = defaultdict(set), {}, {}
    for r in rows:
        st = stacks[(r["host"], r["tid"])]
        if r["op"] == 1:
            st.remove(r["lock"])
            continue
        if st:
            e = (st[-1], r["lock"])
            count[e] += 1
            hosts[e].add(r["host"])
            first.setdefault(e, (r["host"], r["ts_ns"]))
            last[e] = r["ts_ns"]
        st.append(r["lock"])
    edges = {(d["held"], d["taken"]): d for d in got.aggregates.edges.to_dicts()}
    assert set(edges) == set(count)
    for e, n in count.items():
        d = edges[e]
        assert d["count"] == n and d["hosts"] == len(hosts[e]) and sorted(d["host_list"]) == sorted(hosts[e])
        assert (d["first_host"], d["first_ts_ns"]) == first[e]
        assert d["last_ts_ns"] // 10**9 == last[e] // 10**9      # the core keeps it to the second
    assert got.aggregates.edges["count"].to_list() == sorted(count.values(), reverse=True)
    held = {d["held"]: d for d in got.aggregates.held_while_taking.to_dicts()}
    for h in {e[0] for e in count}:
        mine = [e for e in count if e[0] == h]
        assert held[h]["direct"] == sum(count[e] for e in mine)
        assert held[h]["taken_classes"] == len(mine)
        assert held[h]["hosts"] == len(set().union(*(hosts[e] for e in mine)))


def test_aggregates_follow_the_selection(tmp_path):
    recs = workload(4, hosts=3, batches=30, step_ns=10**9)
    rows = rows_of(recs)
    archive = write_archive(tmp_path, recs)
    got = analyze([archive], Selection(hosts=frozenset({"h1"})))
    assert got.aggregates.hosts["host"].to_list() == ["h1"]
    assert got.aggregates.hosts["events"].to_list() == [sum(r["host"] == "h1" for r in rows)]


def test_hold_times_in_parts_equal_all_at_once(tmp_path):
    from lockfleet.offline.aggregates import compute

    recs = workload(6, hosts=4, batches=30)
    got = analyze([write_archive(tmp_path, recs)])
    parted = compute(got.plan, Selection(), got.engine, partition_rows=50)
    assert parted.hold_times.equals(got.aggregates.hold_times)
    assert parted.hold_histogram.equals(got.aggregates.hold_histogram)


def test_hold_sketch_state_follows_the_groups_not_the_holds():
    """Many parts of many holds: what the sketch keeps has a row per class and per (class, bucket)
    in use, however many holds and parts went in; the results are those of all the holds at once."""
    import polars as pl

    from lockfleet.offline.aggregates import HIST_PER_OCTAVE, LOCK, HoldSketch

    rng = random.Random(11)
    classes = [(f"L{i}", sub) for i in range(5) for sub in (0, 1)]
    sketch = HoldSketch()
    every: dict[tuple[str, int], list[int]] = defaultdict(list)
    inside: Counter = Counter()
    n_parts, per_part = 40, 2000
    for _ in range(n_parts):
        rows = {"lock": [], "subclass": [], "hold_ns": [], "inside": []}
        for _ in range(per_part):
            lock, sub = rng.choice(classes)
            ns = rng.choice([0, 1, 2, 3]) if rng.random() < 0.05 else int(rng.lognormvariate(9, 2.5))
            k = rng.randrange(4)
            rows["lock"].append(lock)
            rows["subclass"].append(sub)
            rows["hold_ns"].append(ns)
            rows["inside"].append(k)
            every[(lock, sub)].append(ns)
            inside[(lock, sub)] += k
        sketch.add(pl.DataFrame(rows, schema={"lock": pl.String, "subclass": pl.UInt8, "hold_ns": pl.Int64,
                                              "inside": pl.Int64}).with_columns(pl.col("lock").cast(LOCK)))
        # retained state: a row per class, a row per (class, bucket) in use, never per hold
        assert sketch.stats.height <= len(classes)
        assert sketch.hist.height == sketch.hist.select("lock", "subclass", "fb").unique().height
    fb = Counter((lock, sub, -1 if ns <= 0 else int(math.floor(math.log2(ns) * HIST_PER_OCTAVE)))
                 for (lock, sub), v in every.items() for ns in v)
    assert sketch.stats.height == len(classes)
    assert sketch.hist.height == len(fb) < n_parts * per_part // 10
    ht = as_table(sketch.hold_times(), "class")
    for (lock, sub), v in every.items():
        row = ht[lock if sub == 0 else f"{lock}/{sub}"]
        assert row["count"] == len(v) and row["max_ns"] == max(v) and row["taken_while_held"] == inside[(lock, sub)]
        assert row["mean_ns"] == pytest.approx(sum(v) / len(v))
        for col, q in (("p50_ns", 0.5), ("p99_ns", 0.99)):
            assert within_sketch_error(row[col], nearest(v, q)), (lock, sub, col, row[col], nearest(v, q))


def test_empty_archive_has_empty_aggregates(tmp_path):
    recs = [Rec("h0", "s", 1, events([Ev(1, 0, "A")]).slice(0, 0))]
    got = analyze([write_archive(tmp_path, recs, segments=1)])
    assert got.events == 0 and got.aggregates.classes.height == 0 and not got.alerts
    assert service_run(recs).alerts() == []
    assert isinstance(got.aggregates.to_dict(), dict)

