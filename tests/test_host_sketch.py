"""Memory that tracks the fleet, not hosts x dependencies (docs/semantics.md, "Hosts of a
dependency" and "Bounded tables"), against the oracle (tests/oracle.py):

  - a dependency names its first HOST_EXACT (8) hosts exactly (the first eight by row order);
    past them its host count is 8 plus a HyperLogLog estimate, within the documented bound;
  - the chain cache is bounded: with a tiny bound (emptied over and over) the dependencies,
    their kinds, their counts and the findings are those of an unbounded cache and the oracle's;
  - threads whose held stack is empty are dropped (swept after every batch here): nothing
    found changes, locks held across batches stay held;
  - snapshots carry the sketches; the core's invariants hold throughout;
  - memory: 2,000 hosts taking the same dependencies cost the per-host tables no more than 200.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eventgen import events  # noqa: E402
from oracle import Oracle  # noqa: E402

from lockfleet import Engine  # noqa: E402
from lockfleet._core import Core  # noqa: E402

HOST_EXACT = 8
HLL_M = 128
SIGMA = 1.04 / math.sqrt(HLL_M)       # the sketch's standard error (docs/semantics.md)
EXAMPLES = int(os.environ.get("LOCKFLEET_PROPERTY_EXAMPLES", "0")) or 60


def within_bound(estimate: int, true: int) -> bool:
    """The documented bound: the part past the exact hosts within 4 standard errors (+1 for
    rounding)."""
    return abs(estimate - true) <= 4 * SIGMA * max(true - HOST_EXACT, 0) + 1


class CountingOracle(Oracle):
    """The oracle, also counting the times each dependency was made (one per acquisition)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: Counter[tuple[str, str]] = Counter()

    def _add_dep(self, held: str, taken: str, kind: str, host: str, idx: int) -> None:
        self.times[(held, taken)] += 1
        super()._add_dep(held, taken, kind, host, idx)


# ------------------------------------------------------------------ the estimator itself

@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(1, 5000), st.integers(0, 1 << 20))
def test_the_sketch_estimate_is_within_its_bound(n, start):
    ids = range(start, start + n)
    est = Core.hll_estimate_of(ids)
    assert abs(est - n) <= 4 * SIGMA * n + 1, (n, est)


# ------------------------------------------------------------------ against the oracle

LOCKS = ["la", "lb", "lc", "ld"]


@st.composite
def fleet_streams(draw):
    """Rows (host, tid, op, lock, 0, 0, 0, 0) of many hosts taking nested pairs of a few locks,
    threads ending or holding a lock across batch cuts, and the cut points."""
    n_hosts = draw(st.integers(1, 60))
    rows = []
    held: dict[tuple[str, int], list[str]] = {}
    for _ in range(draw(st.integers(1, 120))):
        host = f"h{draw(st.integers(0, n_hosts - 1))}"
        tid = draw(st.integers(1, 400))
        stack = held.setdefault((host, tid), [])
        free = [x for x in LOCKS if x not in stack]
        if stack and (not free or draw(st.booleans())):
            lock = stack.pop(draw(st.integers(0, len(stack) - 1)))
            rows.append((host, tid, 1, lock, 0, 0, 0, 0))
            continue
        for lock in draw(st.lists(st.sampled_from(free), min_size=1, max_size=2, unique=True)):
            rows.append((host, tid, 0, lock, 0, 0, 0, 0))
            stack.append(lock)
        if draw(st.booleans()):    # the thread ends: everything released, innermost first
            for lock in reversed(stack):
                rows.append((host, tid, 1, lock, 0, 0, 0, 0))
            stack.clear()
    cuts = sorted(set(draw(st.lists(st.integers(0, len(rows)), max_size=4))))
    return rows, cuts


def feed(eng: Engine, rows, cuts, sweep: bool = False) -> list[str]:
    ids = []
    for a, b in zip([0, *cuts], [*cuts, len(rows)]):
        if a < b:
            ids += [x.id for x in eng.ingest(events(rows[a:b], host_column=True), host="default")]
            if sweep:
                eng._core.sweep_threads()
            eng._core.check_invariants()
    return ids


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(fleet_streams(), st.sampled_from([16, 17, 40]))
def test_hosts_counts_and_findings_hold_with_a_tiny_chain_cache_and_swept_threads(stream, max_chains):
    rows, cuts = stream
    orc = CountingOracle().feed(rows)
    plain = Engine()
    feed(plain, rows, cuts)
    small = Engine(max_chains=max_chains)
    feed(small, rows, cuts, sweep=True)
    # the same graph and findings as an unbounded cache that keeps every thread
    assert small.edges() == plain.edges()
    assert {a.id for a in small.alerts()} == {a.id for a in plain.alerts()}
    assert {(h, t): tuple(sorted(k)) for h, t, k in small.edges()} == orc.edges()
    for link in small.links():
        pair = (link.held, link.taken)
        by_row = sorted(orc.pair_hosts[pair].items(), key=lambda kv: kv[1])
        true = len(by_row)
        assert link.count == orc.times[pair], pair
        if true <= HOST_EXACT:
            assert link.hosts == tuple(sorted(h for h, _ in by_row)) and link.host_count == true
        else:      # the first eight by row order, named; the rest estimated
            assert link.hosts == tuple(sorted(h for h, _ in by_row[:HOST_EXACT]))
            assert within_bound(link.host_count, true), (pair, link.host_count, true)
    assert small.stats()["threads"] <= sum(1 for s in orc.stacks.values() if s)


# ------------------------------------------------------------------ sketches at scale

def fan_in(n_hosts: int, pairs: int, first: int = 0) -> list[tuple[pa.RecordBatch, str]]:
    """Each host takes the same `pairs` dependencies l<i> -> m<i>, each on a thread of its own
    that then ends (an edge-mode agent's synthetic threads)."""
    out = []
    for h in range(first, first + n_hosts):
        rows = []
        for i in range(pairs):
            rows += [(None, i, 0, f"l{i}", 0, 0, 0, 0), (None, i, 0, f"m{i}", 0, 0, 0, 0),
                     (None, i, 1, f"m{i}", 0, 0, 0, 0), (None, i, 1, f"l{i}", 0, 0, 0, 0)]
        out.append((events(rows, host_column=False), f"host-{h}"))
    return out


def per_host_tables(eng: Engine) -> int:
    # between two sweeps the thread table holds up to 256 ended threads whatever the fleet's size:
    # sweep, to compare what stays
    eng._core.sweep_threads()
    m = eng._core.memory_breakdown()
    return m["edge_hosts"] + m["host_sketches"] + m["threads"]


def test_a_dependency_taken_by_2000_hosts_is_counted_within_the_bound_and_costs_no_more_than_200():
    small, big = Engine(max_chains=4096), Engine(max_chains=4096)
    for batch, host in fan_in(200, 20):
        small.ingest(batch, host=host)
    for batch, host in fan_in(2000, 20):
        big.ingest(batch, host=host)
    for link in big.links():
        assert len(link.hosts) == HOST_EXACT and within_bound(link.host_count, 2000), link.host_count
    assert big._core.sketch_count() == 20 and big.stats()["threads"] <= 256
    assert big._core.chain_count() <= 4096 and big.stats()["chain_flushes"] >= 1
    # per-host tables (hosts of dependencies, sketches, threads): bounded, not x10
    assert per_host_tables(big) <= per_host_tables(small) * 1.5, (per_host_tables(small), per_host_tables(big))
    # an alert over sketched dependencies estimates its hosts from the merged sketches
    big.ingest(events([(None, 1, 0, "m0", 0, 0, 0, 0), (None, 1, 0, "l0", 0, 0, 0, 0)], host_column=False),
               host="late")
    (alert,) = big.alerts()
    assert len(alert.hosts) == HOST_EXACT + 1 and within_bound(alert.host_count, 2001)
    assert alert.to_dict()["host_count"] == alert.host_count
    text = alert.render()
    assert "(estimated)" in text and "no host named for every link" in text and "only across hosts" not in text


def test_snapshots_carry_the_sketches_and_the_folded_counts():
    eng = Engine(max_chains=64)
    batches = fan_in(300, 10)
    for batch, host in batches[:150]:
        eng.ingest(batch, host=host)
    again = Engine.restore(eng.snapshot())
    for batch, host in batches[150:]:
        eng.ingest(batch, host=host)
        again.ingest(batch, host=host)
    assert [(x.held, x.taken, x.hosts, x.host_count, x.count) for x in eng.links()] == \
        [(x.held, x.taken, x.hosts, x.host_count, x.count) for x in again.links()]
    assert all(x.count == 300 for x in again.links())
    again._core.check_invariants()


def test_a_core_snapshot_of_the_previous_format_is_refused():
    eng = Engine()
    for batch, host in fan_in(8, 1):
        eng.ingest(batch, host=host)
    core = eng._core.dump()
    assert core.startswith(b"LFCORE06") and Core.load(core).dump() == core
    with pytest.raises(ValueError):
        Core.load(b"LFCORE05" + core[8:])


def test_offline_merges_name_more_hosts_when_asked():
    eng = Engine(exact_hosts=12)
    for batch, host in fan_in(12, 2):
        eng.ingest(batch, host=host)
    assert all(len(x.hosts) == 12 and x.host_count == 12 for x in eng.links())
    assert eng._core.sketch_count() == 0
    again = Engine.restore(eng.snapshot())
    for batch, host in fan_in(3, 2, first=12):
        again.ingest(batch, host=host)
    assert all(len(x.hosts) == 12 and within_bound(x.host_count, 15) and x.host_count > 12 for x in again.links())
