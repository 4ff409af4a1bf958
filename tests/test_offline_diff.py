"""`lockfleet diff OLD NEW`: two archives that differ by a planted dependency (which closes a cycle
and brings a new lock class), as two archives and as two time ranges of one archive."""

from __future__ import annotations

import io
import json
import os
import random
import sys
from collections import Counter, defaultdict
from contextlib import redirect_stdout

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_offline_fixtures import DAY_NS, T0, Rec, service_run, write_archive  # noqa: E402

from eventgen import Ev, events  # noqa: E402
from lockfleet.cli import main  # noqa: E402

NAMES = [f"N{i}" for i in range(8)]


def layered(seed: int, t0: int = T0, n: int = 600) -> list[Rec]:
    """Locks always taken in increasing N-order: a DAG, no findings."""
    rng = random.Random(seed)
    stacks: dict[tuple[str, int], list[int]] = defaultdict(list)
    seq: Counter = Counter()
    out, ts = [], t0
    for _ in range(n // 30):
        host = f"h{rng.randrange(3)}"
        evs = []
        for _ in range(30):
            tid = rng.randrange(3)
            st = stacks[(host, tid)]
            ts += rng.randint(1, 10**6)
            above = [i for i in range(len(NAMES)) if not st or i > st[-1]]
            if st and (not above or rng.random() < 0.45):
                evs.append(Ev(tid, 1, NAMES[st.pop()], ts_ns=ts))
            else:
                i = rng.choice(above)
                st.append(i)
                evs.append(Ev(tid, 0, NAMES[i], ts_ns=ts))
        seq[host] += 1
        out.append(Rec(host, f"s-{host}", seq[host], events(evs)))
    return out


def planted(old: list[Rec], ts: int) -> tuple[Rec, tuple[str, str]]:
    """A batch on a new host taking b then a, where a ~> b exists in OLD: a new dependency b -> a
    that closes a cycle; and a new class taken under it."""
    eng = service_run(old)
    known = {(h, t) for h, t, _k in eng.edges()}
    for a in NAMES:
        for b in NAMES:
            if a != b and (b, a) not in known and eng.chain(a, b):
                evs = [Ev(1, 0, b, ts_ns=ts), Ev(1, 0, a, ts_ns=ts + 1), Ev(1, 0, "brand_new_lock", ts_ns=ts + 2),
                       Ev(1, 1, "brand_new_lock", ts_ns=ts + 3), Ev(1, 1, a, ts_ns=ts + 4), Ev(1, 1, b, ts_ns=ts + 5)]
                return Rec("upgraded", "s-upgraded", 1, events(evs)), (b, a)
    raise AssertionError("no pair to plant")


def _diff(argv: list[str]) -> dict:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["diff", *argv, "--json"]) == 0
    return json.loads(buf.getvalue())


def _check(doc: dict, dep: tuple[str, str]) -> None:
    assert doc["new_classes"] == ["brand_new_lock"]
    assert sorted((d["held"], d["taken"]) for d in doc["new_dependencies"]) == sorted([dep, (dep[1], "brand_new_lock")])
    d = next(d for d in doc["new_dependencies"] if (d["held"], d["taken"]) == dep)
    assert d["count"] == 1 and d["hosts"] == 1 and d["first_host"] == "upgraded"
    assert doc["new_findings"] and all(f["kind"] == "circular" for f in doc["new_findings"])
    for f in doc["new_findings"]:
        locks = f["locks"]
        pairs = set(zip(locks, locks[1:] + locks[:1]))
        assert dep in pairs and "upgraded" in f["hosts"]
    assert doc["gone_classes"] == [] and doc["gone_dependencies"] == [] and doc["gone_findings"] == []
    assert doc["old"]["findings"] == 0 and doc["new"]["findings"] == len(doc["new_findings"])


@pytest.mark.parametrize("seed", [0, 1])
def test_two_archives(tmp_path, seed):
    old = layered(seed)
    extra, dep = planted(old, T0 + DAY_NS)
    a = write_archive(tmp_path / "old", old, segments=3)
    b = write_archive(tmp_path / "new", [*old, extra], segments=4)
    doc = _diff([str(a), str(b)])
    _check(doc, dep)
    # and backwards: nothing new, the planted things are gone
    back = _diff([str(b), str(a)])
    assert back["new_classes"] == [] and back["new_dependencies"] == [] and back["new_findings"] == []
    assert back["gone_classes"] == ["brand_new_lock"] and len(back["gone_findings"]) == len(doc["new_findings"])


def test_two_time_ranges_of_one_archive(tmp_path):
    before = layered(3)
    after = layered(3, t0=T0 + 2 * DAY_NS)            # the same traffic again, a day later
    extra, dep = planted(before, T0 + 3 * DAY_NS)
    after = [Rec(r.host, r.stream_id, r.seq + 100, r.batch) for r in after]
    archive = write_archive(tmp_path, [*before, *after, extra], segments=6)
    doc = _diff([str(archive), str(archive), "--old-until", "2025-01-02", "--new-since", "2025-01-03"])
    _check(doc, dep)
    assert doc["old"]["events"] + doc["new"]["events"] == sum(r.batch.num_rows for r in [*before, *after, extra])


def test_text_output(tmp_path):
    old = layered(5)
    extra, dep = planted(old, T0 + DAY_NS)
    a = write_archive(tmp_path / "old", old)
    b = write_archive(tmp_path / "new", [*old, extra])
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["diff", str(a), str(b)]) == 0
    out = buf.getvalue()
    assert "new lock classes (1)" in out and "brand_new_lock" in out
    assert f"{dep[0]} -> {dep[1]}" in out
    assert "possible circular locking dependency detected" in out
