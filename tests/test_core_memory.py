"""The core frees what it allocates, and its arrays live in one table.

Every block the Cython core allocates goes through a counting allocator (ext/lockfleet/alloc.pxd);
`lockfleet._core.live_blocks()` is the number handed out and not yet freed. A Core's life (growing
every table family, inversions with reach words and witnesses, instances, many hosts and threads,
irq findings, depth overflows, out-of-order releases, snapshots and restores) must end where it
began. The array table (`Core.array_table()`) is what allocation, freeing, snapshots and memory
accounting are derived from: every array in it is allocated once the core has been used, and the
memory breakdown charges every array's capacity.
"""

from __future__ import annotations

import gc
import random

import pytest
from eventgen import IN_HARDIRQ, Stream, events

from lockfleet import Engine
from lockfleet._core import Core, live_blocks


def _busy_engine(seed: int = 7) -> Engine:
    """An engine driven through every table family of the core."""
    rng = random.Random(seed)
    eng = Engine(max_lock_depth=8)
    s = Stream()
    hosts = [f"h{i}" for i in range(6)]
    threads = [s.thread(host=hosts[i % len(hosts)]) for i in range(40)]
    names = [f"L{i}" for i in range(60)]
    for t in threads:                       # a layered order, then edges against it: inversions, witnesses
        for _ in range(6):
            a, b = sorted(rng.sample(range(len(names)), 2))
            t.lock(names[a], instance=rng.randrange(3)).lock(names[b]).unlock(names[b]).unlock(names[a])
    for t in threads[:12]:
        a, b = sorted(rng.sample(range(len(names)), 2))
        t.lock(names[b]).lock(names[a]).unlock(names[a]).unlock(names[b])
    t = threads[0]
    t.lock("X").lock("Y").lock("Z").unlock("X").unlock("Z").unlock("Y")      # out-of-order release
    t.lock("R").lock("R").unlock("R").unlock("R")                          # recursive
    t.lock("T1").trylock("T2").lock("T3").unlock("T3").unlock("T2").unlock("T1")   # a chain, two deps
    t.unlock("never-held")                                                  # bad unlock
    for i in range(10):                                                     # depth overflow
        t.lock(f"D{i}")
    for i in reversed(range(10)):
        t.unlock(f"D{i}")
    with threads[1].hardirq():
        threads[1].lock("Q").unlock("Q")
    threads[2].lock("Q").unlock("Q")                                        # inconsistent state
    rows = s.rows
    for lo in range(0, len(rows), 97):                                      # many batches
        eng.ingest(events(rows[lo:lo + 97]), host="h0")
    return eng


def test_a_core_frees_everything_it_allocated():
    gc.collect()
    before = live_blocks()
    eng = _busy_engine()
    st = eng.stats()
    assert st["inversions"] > 0 and st["witnesses"] > st["inversions"] and st["hosts"] >= 6
    assert st["depth_overflows"] > 0
    assert live_blocks() > before
    restored = Engine.restore(eng.snapshot())          # a second core, from a snapshot
    assert restored.stats()["edges"] == st["edges"]
    restored.ingest(events([(None, 1, 0, "L0", 0, 0, 0, 0), (None, 1, 1, "L0", 0, 0, 0, 0)]))
    del eng, restored
    gc.collect()
    assert live_blocks() == before


def test_a_refused_snapshot_frees_what_it_had_allocated():
    gc.collect()
    before = live_blocks()
    core_bytes = _busy_engine(3)._core.dump()
    for cut in (len(core_bytes) // 3, len(core_bytes) - 5):
        with pytest.raises(ValueError):
            Core.load(core_bytes[:cut])
    gc.collect()
    assert live_blocks() == before


def test_every_array_in_the_table_is_allocated_and_accounted():
    eng = _busy_engine(5)
    core = eng._core
    table = core.array_table()
    assert len(table) > 90
    assert all(allocated for _fam, _elem, _snap, allocated in table)
    breakdown = core.memory_breakdown()
    floor = 0
    caps = {}
    for fam, elem, _snap, _allocated in table:
        caps.setdefault(fam, 0)
        floor += elem           # at least one element of every array is charged
    assert sum(breakdown.values()) == core.memory_bytes() >= floor
    assert breakdown["inversions"] > 0 and breakdown["edge_hosts"] > 0 and breakdown["adjacency"] > 0


def test_a_core_that_was_never_used_frees_its_first_tables():
    gc.collect()
    before = live_blocks()
    cores = [Core(max_depth) for max_depth in (1, 48, 1024)]
    assert live_blocks() > before
    del cores
    gc.collect()
    assert live_blocks() == before


def test_events_raise_the_counter_only_while_a_core_lives():
    # the counter is the core's, not Python's: other allocations do not move it
    gc.collect()
    before = live_blocks()
    junk = [bytearray(1000) for _ in range(1000)]
    assert live_blocks() == before
    del junk
    batch = events([(None, 1, 0, "A", 0, 0, 0, IN_HARDIRQ), (None, 1, 1, "A", 0, 0, 0, IN_HARDIRQ)])
    eng = Engine()
    eng.ingest(batch)
    assert live_blocks() > before
    del eng
    gc.collect()
    assert live_blocks() == before
