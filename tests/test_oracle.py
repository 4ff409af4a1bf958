"""Hand-checked cases of the test oracle itself (tests/oracle.py), so that the property and
scenario suites rest on something trustworthy. Each case is small enough to verify by reading
docs/semantics.md."""

from __future__ import annotations

import itertools
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import require
from oracle import (
    HARDIRQ,
    SOFTIRQ,
    Oracle,
    assignment_is_strong,
    class_name,
    edge_set,
    kind_of,
    pareto,
    path_conflicts,
    usage_bits,
)

A, R, T = 0, 1, 2  # ops


def run(rows, **kw):
    return Oracle(**kw).feed(rows)


def r(tid, op, lock, mode=0, sub=0, inst=0, irq=0, host="h"):
    return (host, tid, op, lock, mode, sub, inst, irq)


def test_class_names_and_kinds():
    assert class_name("A", 0) == "A" and class_name("A", 3) == "A/3"
    assert kind_of(0, 0) == "EN" and kind_of(0, 2) == "ER" and kind_of(1, 1) == "SN"
    assert kind_of(2, 2) == "SR" and kind_of(1, 2) == "SR" and kind_of(2, 0) == "SN"


def test_pareto_and_brute_force():
    assert pareto({"EN", "SR", "ER"}) == ["EN"]
    assert pareto({"ER", "SN"}) == ["ER", "SN"]
    assert pareto({"SR", "SN"}) == ["SN"]
    # SR then SR: R followed by S, both ways round: not strong
    assert assignment_is_strong([{"SR"}, {"SR"}], wrap=True) is None
    # SN then SR: SN ends N (ok), SR ends R and wraps to SN which starts with S: not strong
    assert assignment_is_strong([{"SN"}, {"SR"}], wrap=True) is None
    # ...but as a path (no wrap) it is strong
    assert assignment_is_strong([{"SN"}, {"SR"}], wrap=False) is not None
    # ER, ER, ER: each R followed by E: strong
    assert assignment_is_strong([{"ER"}] * 3, wrap=True) is not None
    # choosing matters: {SR, EN} x {SR}: EN then SR then wrap to EN: ok
    assert assignment_is_strong([{"SR", "EN"}, {"SR"}], wrap=True) == ("EN", "SR")


def test_pareto_does_not_change_answers():
    """The dominance shortcut agrees with the plain brute force on every small case."""
    subsets = [set(c) for n in range(1, 5) for c in itertools.combinations(["EN", "ER", "SN", "SR"], n)]
    rnd = random.Random(7)
    for _ in range(3000):
        n = rnd.randint(1, 4)
        sets = [rnd.choice(subsets) for _ in range(n)]
        wrap = rnd.random() < 0.7
        plain = any(
            all(not (c[i][1] == "R" and c[(i + 1) % n][0] == "S") for i in (range(n) if wrap else range(n - 1)))
            for c in itertools.product(*[sorted(s) for s in sets])
        )
        assert (assignment_is_strong(sets, wrap) is not None) == plain, (sets, wrap)


def test_abba_edges_kinds_and_arrivals():
    o = run([
        r(1, A, "A"), r(1, A, "B"), r(1, R, "B"), r(1, R, "A"),
        r(2, A, "B"), r(2, A, "A"), r(2, R, "A"), r(2, R, "B"),
    ])
    assert o.edges() == {("A", "B"): ("EN",), ("B", "A"): ("EN",)}
    assert [(a.row, a.held, a.taken, a.kind) for a in o.arrivals] == [(1, "A", "B", "EN"), (5, "B", "A", "EN")]
    assert [(a.held, a.taken) for a in o.closing_arrivals()] == [("B", "A")]
    assert o.strong_cycles() == [("A", "B")]
    assert o.find_strong_cycle("B", "A", {"EN"}) == ("A", "B")
    assert o.closed_at(("A", "B")) == [1]
    assert o.closed_at(("B", "A")) == []      # B->A... closing pair would be A->B: not a closing arrival
    assert o.findings() == set()


def test_read_recursive_abba_is_not_strong_but_rwsem_is():
    # rlock_ABBA2: read_lock(A); lock(B) | lock(B); read_lock(A): SN + ER -> not strong
    o = run([r(1, A, "A", 2), r(1, A, "B"), r(2, A, "B"), r(2, A, "A", 2)])
    assert o.edges() == {("A", "B"): ("SN",), ("B", "A"): ("ER",)}
    assert not o.has_strong_cycle() and o.closing_arrivals() == []
    # rwsem_ABBA2: down_read(A); lock(B) | lock(B); down_read(A): SN + EN -> strong
    o = run([r(1, A, "A", 1), r(1, A, "B"), r(2, A, "B"), r(2, A, "A", 1)])
    assert o.has_strong_cycle()
    # adding a write of A under B later (rlock_chaincache_ABBA1) makes it strong
    o = run([r(1, A, "A", 2), r(1, A, "B"), r(2, A, "B"), r(2, A, "A", 2), r(2, R, "A"),
             r(2, A, "A", 0)])
    assert o.edges()[("B", "A")] == ("EN", "ER")
    assert [(a.held, a.taken, a.kind) for a in o.closing_arrivals()] == [("B", "A", "EN")]


def test_w1r2_cycles():
    # W1R2/W2R3/W3R1: ER, ER, ER -> strong (selftest expects failure)
    o = run([r(1, A, "X"), r(1, A, "Y", 2), r(2, A, "Y"), r(2, A, "Z", 2), r(3, A, "Z"), r(3, A, "X", 2)])
    assert o.has_strong_cycle()
    # W1W2/R2R3/R3W1: EN, SR, SN -> SR followed by SN: not strong
    o = run([r(1, A, "X"), r(1, A, "Y"), r(2, A, "Y", 2), r(2, A, "Z", 2), r(3, A, "Z", 2), r(3, A, "X")])
    assert o.edges() == {("X", "Y"): ("EN",), ("Y", "Z"): ("SR",), ("Z", "X"): ("SN",)}
    assert not o.has_strong_cycle()


def test_cycle_needs_the_right_kind_per_pair_not_just_any():
    """A strong cycle must pick one kind per pair consistently: X->Y {SR, EN}... built so that
    the pair-wise "some kind works" answer differs from a real assignment."""
    # X -(ER)-> Y -(SN)-> X : ER then SN is blocked; SN then ER (wrap) fine -> not strong
    o = run([r(1, A, "X"), r(1, A, "Y", 2), r(2, A, "Y", 1), r(2, A, "X")])
    assert o.edges() == {("X", "Y"): ("ER",), ("Y", "X"): ("SN",)}
    assert not o.has_strong_cycle()


def test_kernel_bfs_blind_spot_is_found():
    """DESIGN.md: lockdep's __bfs marks a class visited the first time, even through an edge that
    cannot continue a strong path. A -(ER)-> B first, then A -(EN)-> C -(EN)-> B; B -(SN)-> A.
    Through A->B directly: ER then SN: blocked. Through C: EN, EN, SN, wrap SN->EN: strong."""
    o = run([
        r(1, A, "A"), r(1, A, "B", 2), r(1, R, "B"), r(1, A, "C"), r(1, A, "B"),
        r(2, A, "B", 1), r(2, A, "A"),
    ])
    assert o.edges() == {("A", "B"): ("ER",), ("A", "C"): ("EN",), ("C", "B"): ("EN",), ("B", "A"): ("SN",)}
    assert o.strong_cycles() == [("A", "C", "B")]
    assert o.find_strong_cycle("B", "A", {"SN"}) == ("A", "C", "B")


def test_trylock_edges():
    # lock A; trylock B; lock C: B->C and A->C, nothing into B
    o = run([r(1, A, "A"), r(1, T, "B"), r(1, A, "C")])
    assert o.edges() == {("B", "C"): ("EN",), ("A", "C"): ("EN",)}
    # two trylocks in a row, then a lock: all three below get an edge; stops at A
    o = run([r(1, A, "Z"), r(1, A, "A"), r(1, T, "B"), r(1, T, "C"), r(1, A, "D")])
    assert o.edges() == {("Z", "A"): ("EN",), ("C", "D"): ("EN",), ("B", "D"): ("EN",), ("A", "D"): ("EN",)}
    # a trylock at the bottom of the stack
    o = run([r(1, T, "A"), r(1, A, "B")])
    assert o.edges() == {("A", "B"): ("EN",)}
    # trylock ABBA: the closing acquisition is a trylock: no B->A, no cycle
    o = run([r(1, A, "A"), r(1, A, "B"), r(2, A, "B"), r(2, T, "A")])
    assert o.edges() == {("A", "B"): ("EN",)} and not o.has_strong_cycle()


def test_trylock_is_not_checked_for_recursion_and_marks_only_irqs_enabled_usage():
    # lockdep's mark_usage: a trylock never marks "used in irq"
    o = run([r(1, A, "A"), r(1, T, "A", irq=1)])
    assert o.findings() == set()
    assert usage_bits(0, 1 | 4, trylock=True) == []
    assert usage_bits(0, 0, trylock=True) == ["HARDIRQ-ON-W", "SOFTIRQ-ON-W"]
    # ... but it does mark the irqs-enabled usage
    o = run([r(1, A, "A", irq=5), r(1, R, "A"), r(1, T, "A")])
    assert o.findings() == {("inconsistent_state", "A", HARDIRQ)}


def test_path_conflicts_rules():
    # since 5.10 every pair conflicts, unless a read bit is masked by the path
    assert path_conflicts(["IN-HARDIRQ-R"], ["HARDIRQ-ON-R"], "EN", "EN", "5.10")
    assert not path_conflicts(["IN-HARDIRQ-R"], ["HARDIRQ-ON-R"], "SN", "EN", "5.10")
    assert not path_conflicts(["IN-HARDIRQ-R"], ["HARDIRQ-ON-R"], "EN", "ER", "5.10")
    assert path_conflicts(["IN-HARDIRQ-W"], ["HARDIRQ-ON-R"], "SN", "EN", "5.10")
    assert not path_conflicts(["IN-HARDIRQ-W"], ["HARDIRQ-ON-R"], "SN", "SR", "5.10")
    assert path_conflicts(["IN-HARDIRQ-R"], ["HARDIRQ-ON-W"], "EN", "SR", "5.10")
    # before 5.10: unless both are reads, whatever the path
    assert not path_conflicts(["IN-HARDIRQ-R"], ["HARDIRQ-ON-R"], "EN", "EN", "pre-5.10")
    assert path_conflicts(["IN-HARDIRQ-W"], ["HARDIRQ-ON-R"], "SN", "SR", "pre-5.10")


def test_recursion_rules():
    # AA: recursive, no self edge, still pushed (the second release matches)
    o = run([r(1, A, "A"), r(1, A, "A", inst=2), r(1, R, "A"), r(1, R, "A")])
    assert o.findings() == {("recursive", "A")} and o.edges() == {}
    # read_lock after read_lock: allowed
    assert run([r(1, A, "A", 2), r(1, A, "A", 2)]).findings() == set()
    # recursive read after a non-recursive read: allowed too (held is a read of either kind)
    assert run([r(1, A, "A", 1), r(1, A, "A", 2)]).findings() == set()
    # down_read after down_read: recursive
    assert run([r(1, A, "A", 1), r(1, A, "A", 1)]).findings() == {("recursive", "A")}
    # write after read, read after write: recursive
    assert run([r(1, A, "A", 2), r(1, A, "A", 0)]).findings() == {("recursive", "A")}
    assert run([r(1, A, "A", 0), r(1, A, "A", 2)]).findings() == {("recursive", "A")}
    # A then A/1: different classes, an edge A -> A/1
    o = run([r(1, A, "A"), r(1, A, "A", sub=1)])
    assert o.findings() == set() and o.edges() == {("A", "A/1"): ("EN",)}
    # a recursive acquisition adds no dependency: A, B, A -> only A->B
    o = run([r(1, A, "A"), r(1, A, "B"), r(1, A, "A")])
    assert o.edges() == {("A", "B"): ("EN",)} and o.findings() == {("recursive", "A")}
    # allowed read recursion adds dependencies normally, minus the self one
    o = run([r(1, A, "A", 2), r(1, A, "B"), r(1, A, "A", 2)])
    assert o.edges() == {("A", "B"): ("SN",), ("B", "A"): ("ER",)} and o.findings() == set()
    assert not o.has_strong_cycle()


def test_release_rules():
    # out of order release, then C is taken under B only
    o = run([r(1, A, "A"), r(1, A, "B"), r(1, R, "A"), r(1, A, "C"), r(1, R, "B"), r(1, R, "C")])
    assert o.edges() == {("A", "B"): ("EN",), ("B", "C"): ("EN",)} and o.findings() == set()
    # double unlock
    assert run([r(1, A, "A"), r(1, R, "A"), r(1, R, "A")]).findings() == {("bad_unlock", "A")}
    # unlock of a lock never taken, and of one held by another thread
    assert run([r(1, R, "Q")]).findings() == {("bad_unlock", "Q")}
    assert run([r(1, A, "Q"), r(2, R, "Q")]).findings() == {("bad_unlock", "Q")}
    # same tid, different host: different threads
    assert run([r(1, A, "Q", host="a"), r(1, R, "Q", host="b")]).findings() == {("bad_unlock", "Q")}
    # a release matches any subclass
    o = run([r(1, A, "A", sub=1), r(1, R, "A"), r(1, R, "A")])
    assert o.findings() == {("bad_unlock", "A")}
    # instance matching: releasing instance 1 removes the older entry, not the top one
    o = run([r(1, A, "X", inst=1), r(1, A, "X", sub=1, inst=2), r(1, R, "X", inst=1), r(1, A, "Y")])
    assert o.edges() == {("X", "X/1"): ("EN",), ("X/1", "Y"): ("EN",)}
    # instance 0 on either side matches anything with the name
    o = run([r(1, A, "X", inst=1), r(1, R, "X"), r(1, A, "X"), r(1, R, "X", inst=5)])
    assert o.findings() == set()
    # nonzero instances that differ do not match
    assert run([r(1, A, "X", inst=1), r(1, R, "X", inst=2)]).findings() == {("bad_unlock", "X")}


def test_depth_limit():
    rows = [r(1, A, f"L{i}") for i in range(6)] + [r(1, R, f"L{i}") for i in reversed(range(6))]
    o = run(rows, max_lock_depth=4)
    assert o.depth_overflows == 2
    assert o.edges() == {("L0", "L1"): ("EN",), ("L1", "L2"): ("EN",), ("L2", "L3"): ("EN",)}
    assert o.findings() == set()
    assert o.stacks[("h", 1)] == []
    # after that the thread is back to normal
    o.feed([r(1, A, "L5"), r(1, A, "L4")])
    assert ("L5", "L4") in o.edges()


def test_irq_context_breaks_the_chain():
    # process context holds A; a hard irq comes in and takes B: no A -> B
    o = run([r(1, A, "A"), r(1, A, "B", irq=5), r(1, R, "B"), r(1, A, "C")])
    assert o.edges() == {("A", "C"): ("EN",)}


def test_usage_bits():
    assert usage_bits(0, 0) == ["HARDIRQ-ON-W", "SOFTIRQ-ON-W"]
    assert usage_bits(2, 1 | 4) == ["IN-HARDIRQ-R"]
    assert usage_bits(0, 2 | 8) == ["HARDIRQ-ON-W", "IN-SOFTIRQ-W"]
    assert usage_bits(0, 8) == ["HARDIRQ-ON-W"]
    assert usage_bits(1, 4) == []
    assert usage_bits(0, 2 | 4 | 8) == ["IN-SOFTIRQ-W"]


def test_inconsistent_state():
    # irqsafe1: in hardirq and with hardirqs on
    assert run([r(1, A, "A", irq=5), r(1, R, "A"), r(1, A, "A")]).findings() == {
        ("inconsistent_state", "A", HARDIRQ)}
    # reads on both sides do not conflict
    assert run([r(1, A, "A", 2, irq=5), r(1, R, "A"), r(1, A, "A", 2)]).findings() == set()
    # a read in irq vs a write with irqs on does
    assert run([r(1, A, "A", 2, irq=5), r(1, R, "A"), r(1, A, "A", 0)]).findings() == {
        ("inconsistent_state", "A", HARDIRQ)}
    # softirq-safe taken with bh disabled but hard irqs on: HARDIRQ-ON only -> nothing
    assert run([r(1, A, "D", irq=2 | 8), r(1, R, "D"), r(1, A, "D", irq=8)]).findings() == set()
    # softirq: in softirq, and with everything enabled
    assert run([r(1, A, "D", irq=2 | 8), r(1, R, "D"), r(1, A, "D")]).findings() == {
        ("inconsistent_state", "D", SOFTIRQ)}


def test_irq_inversion_and_path():
    # irqsafe4: irqs off: A, B (A->B); B with irqs on; A in hardirq
    rows = [r(1, A, "A", irq=4), r(1, A, "B", irq=4), r(1, R, "B"), r(1, R, "A"),
            r(2, A, "B"), r(2, R, "B"),
            r(3, A, "A", irq=5), r(3, R, "A")]
    o = run(rows)
    assert o.findings() == {("irq_inversion", "B", HARDIRQ)}
    assert o.irq_inversions() == {("B", HARDIRQ): ["A", "B"]}
    assert o.irq_path_is_valid(["A", "B"], HARDIRQ)
    assert not o.irq_path_is_valid(["B", "A"], HARDIRQ)


def test_irq_inversion_needs_a_strong_path():
    # S -(ER)-> M -(SN)-> U is not strong; S -(EN)-> M2 -(EN)-> U is
    rows = [r(1, A, "S", irq=5), r(1, R, "S"),            # S hardirq-safe
            r(2, A, "U"), r(2, R, "U"),                    # U hardirq-unsafe
            r(3, A, "S", irq=4), r(3, A, "M", 2, irq=4), r(3, R, "M"), r(3, R, "S"),
            r(4, A, "M", 1, irq=4), r(4, A, "U", irq=4), r(4, R, "U"), r(4, R, "M")]
    o = run(rows)
    assert o.edges() == {("S", "M"): ("ER",), ("M", "U"): ("SN",)}
    assert ("irq_inversion", "U", HARDIRQ) not in o.findings()
    o.feed([r(5, A, "S", irq=4), r(5, A, "M2", irq=4), r(5, A, "U", irq=4)])
    assert o.irq_inversions()[("U", HARDIRQ)] == ["S", "M2", "U"]


def test_irq_inversion_bfs_over_read_state():
    """The same class reached first through a recursive-read edge and then by a better path:
    BFS over (class, ends-in-R) must not stop at the first visit."""
    rows = [r(1, A, "S", irq=5), r(1, R, "S"),
            r(2, A, "U"), r(2, R, "U"),
            r(3, A, "S", irq=4), r(3, A, "M", 2, irq=4), r(3, R, "M"),      # S -(ER)-> M
            r(3, A, "N", irq=4), r(3, A, "M", irq=4), r(3, R, "M"), r(3, R, "N"),  # S->N (EN), N -(EN)-> M
            r(3, R, "S"),
            r(4, A, "M", 1, irq=4), r(4, A, "U", irq=4)]                     # M -(SN)-> U
    o = run(rows)
    assert o.irq_inversions()[("U", HARDIRQ)] == ["S", "N", "M", "U"]


def test_hardirq_unsafe_softirq_safe():
    """lib/locking-selftest.c hardirq_deadlock_softirq_not_deadlock."""
    rows = [
        r(1, A, "mutex_A"), r(1, A, "lock_C", irq=4), r(1, R, "lock_C"), r(1, R, "mutex_A"),
        r(1, A, "lock_A", irq=5), r(1, R, "lock_A"),
        r(1, A, "lock_A", irq=4), r(1, A, "lock_B", irq=4), r(1, R, "lock_B"), r(1, R, "lock_A"),
        r(1, A, "lock_B", irq=4), r(1, A, "lock_C", irq=4), r(1, R, "lock_C"), r(1, R, "lock_B"),
        r(1, A, "lock_D", irq=2 | 4 | 8), r(1, R, "lock_D"),
        r(1, A, "lock_D", irq=8), r(1, R, "lock_D"),
        r(1, A, "lock_C", irq=4), r(1, A, "lock_D", irq=4), r(1, R, "lock_D"), r(1, R, "lock_C"),
    ]
    o = run(rows)
    assert o.findings() == {("irq_inversion", "lock_D", HARDIRQ)}
    assert o.irq_inversions()[("lock_D", HARDIRQ)] == ["lock_A", "lock_B", "lock_C", "lock_D"]


def test_later_cycles_sharing_edges_are_found():
    # ABBA, then A->C, C->B: cycle A->C->B->A closes at C->B
    o = run([r(1, A, "A"), r(1, A, "B"), r(2, A, "B"), r(2, A, "A"),
             r(3, A, "A"), r(3, A, "C"), r(4, A, "C"), r(4, A, "B")])
    assert [(a.held, a.taken) for a in o.closing_arrivals()] == [("B", "A"), ("C", "B")]
    assert o.find_strong_cycle("C", "B", {"EN"}) == ("B", "A", "C")
    assert sorted(o.strong_cycles()) == [("A", "B"), ("A", "C", "B")]


def test_simple_cycles_against_networkx():
    try:
        import networkx as nx
    except ImportError:
        nx = None
    require(nx, "networkx is not installed (it is in the test extras: pip install -e '.[test]')")
    rnd = random.Random(3)
    for _ in range(200):
        o = Oracle()
        names = [f"N{i}" for i in range(rnd.randint(2, 6))]
        for _ in range(rnd.randint(1, 14)):
            a, b = rnd.sample(names, 2)
            o._add_dep(a, b, rnd.choice(["EN", "ER", "SN", "SR"]), "h", 0)
        g = nx.DiGraph(list(o.kinds))
        want = set()
        for c in nx.simple_cycles(g):
            i = c.index(min(c))
            want.add(tuple(c[i:] + c[:i]))
        assert set(o.simple_cycles()) == want
        # closing-search and full enumeration agree
        assert o.has_strong_cycle() == bool(o.strong_cycles())
        for (h, t) in o.kinds:
            found = o.find_strong_cycle(h, t, o.kinds_at((h, t)))
            via_enum = [c for c in o.strong_cycles() if (h, t) in edge_set(c)]
            assert (found is not None) == bool(via_enum), (o.edges(), h, t)


def test_release_from_the_middle_both_readings():
    """lock A, lock C, lock B, unlock C. semantics.md (Release): only C goes. lockdep's
    __lock_release (and the engine): B is re-acquired on top of A, which adds A -> B."""
    rows = [r(1, A, "A"), r(1, A, "C"), r(1, A, "B"), r(1, R, "C")]
    assert run(rows, reacquire=False).edges() == {("A", "C"): ("EN",), ("C", "B"): ("EN",)}
    o = run(rows, reacquire=True)
    assert o.edges() == {("A", "C"): ("EN",), ("C", "B"): ("EN",), ("A", "B"): ("EN",)}
    assert o.arrivals[-1].row == 3                     # the release row is the evidence
    # re-acquisition: trylocks get no edge into them, but are pushed; the walk goes through them
    rows = [r(1, A, "A"), r(1, A, "C"), r(1, T, "B"), r(1, A, "D"), r(1, R, "C")]
    o = run(rows, reacquire=True)
    assert set(o.edges()) == {("A", "C"), ("B", "D"), ("C", "D"), ("A", "D")}
    # no usage marks and no recursion check on re-acquisition
    rows = [r(1, A, "A"), r(1, A, "C"), r(1, A, "A", 2), r(1, R, "C")]
    o = run(rows, reacquire=True)
    assert o.findings() == {("recursive", "A")}
    assert set(o.usage["A"]) == {"HARDIRQ-ON-W", "SOFTIRQ-ON-W", "HARDIRQ-ON-R", "SOFTIRQ-ON-R"}


def test_irq_inversion_of_a_class_with_itself():
    """A softirq-safe and -unsafe class on a cycle reaches itself: by the letter of semantics.md
    that is an irq_inversion A ~> B ~> A as well as its inconsistent_state (IRQ_INVERSION_SELF)."""
    rows = [r(1, A, "A", irq=2 | 8), r(1, R, "A"), r(1, A, "A"), r(1, A, "B"), r(2, A, "B"), r(2, A, "A")]
    o = run(rows)
    assert o.findings() == {("inconsistent_state", "A", SOFTIRQ), ("irq_inversion", "B", SOFTIRQ),
                            ("irq_inversion", "A", SOFTIRQ)}
    assert o.irq_inversions() == {("B", SOFTIRQ): ["A", "B"], ("A", SOFTIRQ): ["A", "B", "A"]}
    assert o.irq_path_is_valid(["A", "B", "A"], SOFTIRQ)
    import oracle

    saved, oracle.IRQ_INVERSION_SELF = oracle.IRQ_INVERSION_SELF, False
    try:
        assert run(rows).irq_inversions() == {("B", SOFTIRQ): ["A", "B"]}
    finally:
        oracle.IRQ_INVERSION_SELF = saved
