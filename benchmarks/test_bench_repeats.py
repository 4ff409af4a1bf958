"""pytest-benchmark: W1's repeat path (target: <= 20 ns per event with 64 threads
interleaved in a batch), next to the same repeats from 4 threads one edge after another, and a
Python `set` probed once per observation (pre-converted pairs, outside the timer).

The engine first ingests W1's new edges (untimed), then each timed round is one pass over all of
W1's repeats (full: 10M edges = 40M events in 64k-row batches, pre-built; the first pass, which
meets the 10 back edges of the repeat phase, is an untimed warm-up). Each test builds its own
batches and drops them (40M rows are about 1 GB).
"""

from __future__ import annotations

import gc

import baselines as bl
import benchkit as bk
import pytest
import workloads as wk


@pytest.mark.parametrize("n_tids,interleave", [(4, False), (64, True)], ids=["4-threads", "64-interleaved"])
def test_engine_w1_repeats(benchmark, n_tids, interleave):
    from lockfleet import Engine

    benchmark.group = "W1 repeats"
    wl = bk.workload("W1")
    new = bk.event_batches(wl, "new", n_tids=n_tids, interleave=interleave)
    rep = bk.event_batches(wl, "repeats", ts0=bk.TS0 + wk.events_count(new) * 100, n_tids=n_tids,
                           interleave=interleave)
    eng = Engine()
    for b in new:
        eng.ingest(b, host=bk.HOST)
    events = wk.events_count(rep)

    def one_pass():
        n = 0
        for b in rep:
            n += len(eng.ingest(b, host=bk.HOST))
        return n

    bk.measure(benchmark, one_pass, rounds=1 if bk.quick_mode() else 3, warmup=1, workload="W1",
               case=f"repeats {n_tids} threads" + (" interleaved" if interleave else ""), impl=bk.ENGINE,
               units=events, unit="events", edges=int(wl.phase("repeats").edges.shape[0]), n_tids=n_tids,
               interleave=interleave)
    st = eng.stats()
    benchmark.extra_info["stats"] = {k: st[k] for k in ("edges", "locks", "alerts_circular", "inversions",
                                                          "witnesses", "core_bytes", "threads", "chains")}
    del rep, new, eng
    gc.collect()


def test_set_w1_repeats(benchmark):
    benchmark.group = "W1 repeats"
    wl = bk.workload("W1")
    known = bk.pairs(wl.phase("new").edges)
    rep = bk.pairs(wl.phase("repeats").edges)
    bk.run_baseline(benchmark, lambda: set(known), lambda s, d: bl.set_probe(s, rep, d), box=bk.budget("graph"),
                    units_per_done=4, workload="W1", case="repeats", impl="python set probe", unit="events",
                    total=4 * len(rep))
