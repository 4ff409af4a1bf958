"""Scenario suite in the spirit of the kernel's lib/locking-selftest.c.

Each scenario states lockdep's verdict and why, citing the selftest it mirrors (names as in
lib/locking-selftest.c) or Documentation/locking/lockdep-design.rst ("lockdep-design"), and the
rule of docs/semantics.md it exercises. Where the selftest runs everything in one task, the
scenario puts each part in its own thread, so that the fleet variants below spread them over
hosts.

Every scenario runs in three ways (the `mode` fixture) and must give the same findings:
  one_host     one batch, no host column, ingested for host "h0"
  host_column  one batch with a host column (thread i on host "host<i>"; the rows of thread 0
               have a null host and the batch is ingested for "host0"), dictionary-encoded
  segments     every run of consecutive rows of one thread is its own batch, ingested for
               that thread's host
and each is also checked against the oracle (tests/oracle.py), which keeps the stated
expectations honest.

Set LOCKFLEET_TEST_ENGINE=oracle to run the suite against the oracle's stand-in engine (a check
of the harness itself).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eventgen import Stream, events, memory_guard, oracle_rows
from oracle import HARDIRQ, SOFTIRQ, Oracle, OracleEngine, alert_identity, edge_set

MODES = ("one_host", "host_column", "segments")


def make_engine(**kw: Any) -> Any:
    if os.environ.get("LOCKFLEET_TEST_ENGINE") == "oracle":
        return OracleEngine(**kw)
    from lockfleet import Engine

    return Engine(**kw)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------------------------------------
# harness
# ---------------------------------------------------------------------------------------------

@dataclass
class F:
    """An expected finding. `locks`: for circular, the exact Alert.locks (locks[0] the lock whose
    acquisition closed the cycle); for irq_inversion, the path S ~> U; else the class.
    `threads`: indexes of the threads whose events make up the finding (for Alert.hosts)."""

    kind: str
    locks: tuple[str, ...]
    threads: tuple[int, ...]
    irq: str = ""
    # irq findings: threads whose usage bits make up the finding. Their hosts MAY be in
    # Alert.hosts: semantics.md says "for a path, every host that took any of its dependencies;
    # for the others, every host where it happened", which does not settle whether the hosts that
    # set the usage bits count. So for irq findings Alert.hosts is checked to lie between the hosts
    # of `threads` and those of `threads + also` (and to be non-empty).
    also: tuple[int, ...] = ()

    def identity(self) -> tuple:
        if self.kind == "circular":
            return ("circular", edge_set(self.locks))
        if self.kind in ("recursive", "bad_unlock"):
            return (self.kind, self.locks[0])
        return (self.kind, self.locks[-1], self.irq)


def cycle(*locks: str, threads: tuple[int, ...], also: tuple[int, ...] = ()) -> F:
    """A circular finding: its first cycle, the threads that made it, and (also) the threads of
    its later witnesses, whose hosts join the finding's."""
    return F("circular", tuple(locks), threads, also=also)


def host_of(i: int, mode: str) -> str:
    return "h0" if mode == "one_host" else f"host{i}"


@dataclass
class Run:
    eng: Any
    returned: list[list[Any]]
    rows: list[Any]              # oracle rows, in ingest order
    oracle: Oracle = field(init=False)


def run_mode(s: Stream, mode: str, max_lock_depth: int = 48, irq_rule: str = "5.10") -> Run:
    with memory_guard():
        return _run_mode(s, mode, max_lock_depth, irq_rule)


def _run_mode(s: Stream, mode: str, max_lock_depth: int, irq_rule: str = "5.10") -> Run:
    eng = make_engine(max_lock_depth=max_lock_depth, irq_rule=irq_rule)
    idx = {t.tid: i for i, t in enumerate(s.threads)}
    returned, rows = [], []
    if mode == "one_host":
        b = s.with_hosts({t.tid: None for t in s.threads})
        returned.append(list(eng.ingest(events(b, host_column=False), host="h0")))
        rows = oracle_rows(b, "h0")
    elif mode == "host_column":
        b = s.with_hosts({t.tid: host_of(i, mode) for i, t in enumerate(s.threads)})
        returned.append(list(eng.ingest(events(b, host_column=True, dictionary=True, null_hosts="host0"),
                                        host="host0")))
        rows = oracle_rows(b, "host0")
    elif mode == "segments":
        for seg in s.segments():
            h = host_of(idx[seg[0].tid], mode)
            returned.append(list(eng.ingest(events(seg, host_column=False), host=h)))
            rows += oracle_rows(seg, h)
    else:
        raise ValueError(mode)
    r = Run(eng, returned, rows)
    r.oracle = Oracle(max_lock_depth, irq_rule=irq_rule).feed(rows)
    return r


def oracle_identities(orc: Oracle) -> set[tuple]:
    """The rule book's findings: one circular finding per inversion, named by its first cycle."""
    return orc.findings() | {("circular", edge_set(c)) for _a, c in orc.inversion_run()[0]}


def engine_edges(eng: Any) -> dict[tuple[str, str], tuple[str, ...]]:
    out = {}
    for held, taken, kinds in eng.edges():
        assert (held, taken) not in out, f"pair {held}->{taken} listed twice"
        out[(held, taken)] = tuple(kinds)
    return out


def check(s: Stream, expected: list[F], mode: str, *, max_lock_depth: int = 48,
          edges: dict[tuple[str, str], tuple[str, ...]] | None = None, irq_rule: str = "5.10") -> Run:
    res = run_mode(s, mode, max_lock_depth, irq_rule)
    want = {f.identity() for f in expected}
    assert len(want) == len(expected)
    # the expectation agrees with the rule book
    assert oracle_identities(res.oracle) == want, "scenario expectation disagrees with the oracle"
    if edges is not None:
        assert res.oracle.edges() == edges, "scenario edges disagree with the oracle"

    got = res.eng.alerts()
    got_ids = [alert_identity(a) for a in got]
    assert len(set(got_ids)) == len(got_ids), f"duplicate findings: {got_ids}"
    assert set(got_ids) == want
    by_identity = dict(zip(got_ids, got))
    for f in expected:
        a = by_identity[f.identity()]
        assert re.fullmatch(rf"{f.kind}-[0-9a-f]{{16}}", a.id), a.id
        if f.kind in ("circular", "irq_inversion"):
            assert tuple(a.locks) == f.locks, f"{f.kind}: locks {a.locks}, expected {f.locks}"
        else:
            assert set(a.locks) == set(f.locks)
        if f.irq:
            assert a.irq_state == f.irq
        low = {host_of(i, mode) for i in f.threads}
        if f.kind in ("inconsistent_state", "irq_inversion"):
            high = low | {host_of(i, mode) for i in f.also}
            assert a.hosts and low <= set(a.hosts) <= high, (f, a.hosts)
            assert list(a.hosts) == sorted(a.hosts)
        else:   # a circular finding's hosts include its witnesses' (`also`)
            low |= {host_of(i, mode) for i in f.also}
            assert tuple(a.hosts) == tuple(sorted(low)), (f, a.hosts)
    # what each ingest returned adds up to alerts(), each alert once
    returned = [a.id for batch in res.returned for a in batch]
    assert sorted(returned) == sorted(a.id for a in got)
    assert sorted({a.id for a in got}) == sorted(a.id for a in got)
    # the graph is the oracle's
    assert engine_edges(res.eng) == res.oracle.edges()
    # the same finding has the same id however the events were spread
    if mode != "one_host":
        base = {alert_identity(a): a.id for a in run_mode(s, "one_host", max_lock_depth, irq_rule).eng.alerts()}
        assert {alert_identity(a): a.id for a in got} == base
    return res


# The selftests' lock types. spin/mutex/wlock/wsem all take the lock exclusive (mode 0);
# "rlock" is read_lock on an rwlock, a recursive read (mode 2; the selftests set
# force_read_lock_recursive); "rsem" is down_read, a non-recursive read (mode 1).
LOCKTYPES = {"spin": 0, "rlock": 2, "rsem": 1}


@pytest.fixture(params=sorted(LOCKTYPES))
def locktype(request: pytest.FixtureRequest) -> str:
    return request.param


def fails(locktype: str) -> bool:
    """DO_TESTCASE_6R: "'read' variant: rlocks must not trigger" - every type fails but rlock,
    because two recursive readers never block each other (lockdep-design, "Recursive read
    locks": a cycle is a deadlock only if it is strong)."""
    return locktype != "rlock"


# ---------------------------------------------------------------------------------------------
# DO_TESTCASE_6R("A-A deadlock") .. ("A-B-C-D-B-C-D-A deadlock")
# ---------------------------------------------------------------------------------------------

def test_AA(mode: str, locktype: str) -> None:
    """AA_*: LOCK(X1); LOCK(X2) with X1, X2 instances of one class. Fails for all but rlock:
    check_deadlock() allows only a recursive read after a read of the same class
    (semantics.md Acquire rule 1)."""
    m = LOCKTYPES[locktype]
    s = Stream()
    t = s.thread()
    t.lock("X", m, instance=1).lock("X", m, instance=2)
    check(s, [F("recursive", ("X",), (0,))] if fails(locktype) else [], mode)


# (name, the LOCK_UNLOCK_2 pairs in order, the expected Alert.locks of the cycle)
CIRCULAR = [
    ("ABBA", ["AB", "BA"], ("A", "B")),
    ("ABBCCA", ["AB", "BC", "CA"], ("A", "B", "C")),
    ("ABCABC", ["AB", "CA", "BC"], ("C", "A", "B")),
    ("ABBCCDDA", ["AB", "BC", "CD", "DA"], ("A", "B", "C", "D")),
    ("ABCDBDDA", ["AB", "CD", "BD", "DA"], ("A", "B", "D")),
    ("ABCDBCDA", ["AB", "CD", "BC", "DA"], ("A", "B", "C", "D")),
]


@pytest.mark.parametrize("name,pairs,locks", CIRCULAR, ids=[c[0] for c in CIRCULAR])
def test_circular(mode: str, locktype: str, name: str, pairs: list[str], locks: tuple[str, ...]) -> None:
    """ABBA_*, ABBCCA_*, ABCABC_*, ABBCCDDA_*, ABCDBDDA_*, ABCDBCDA_*: each LOCK_UNLOCK_2(x, y)
    in its own thread. All lock types fail but rlock (DO_TESTCASE_6R). locks[0] is the lock
    whose acquisition closed the cycle (the last pair's second lock, lockdep's #0), then the
    cycle in dependency order. Cycle members are exactly the threads that made its links."""
    m = LOCKTYPES[locktype]
    s = Stream()
    for p in pairs:
        s.thread().lock_unlock(p[0], p[1], mode=m)
    links = set(zip(locks, locks[1:] + locks[:1]))
    threads = tuple(i for i, p in enumerate(pairs) if (p[0], p[1]) in links)
    kind = {0: "EN", 1: "SN", 2: "SR"}[m]
    edges = {(p[0], p[1]): (kind,) for p in pairs}
    check(s, [cycle(*locks, threads=threads)] if fails(locktype) else [], mode, edges=edges)


def test_double_unlock(mode: str, locktype: str) -> None:
    """double_unlock_*: LOCK(A); UNLOCK(A); UNLOCK(A) fails for every type (DO_TESTCASE_6)."""
    s = Stream()
    s.thread().lock("A", LOCKTYPES[locktype]).unlock("A").unlock("A")
    check(s, [F("bad_unlock", ("A",), (0,))], mode)


def test_unlock_never_taken(mode: str) -> None:
    """Releasing a lock the thread does not hold is bad_unlock (lockdep's print_unlock_imbalance_bug),
    also when another thread holds it."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.unlock("Q")
    t1.lock("R")
    t0.unlock("R")
    check(s, [F("bad_unlock", ("Q",), (0,)), F("bad_unlock", ("R",), (0,))], mode)


def test_out_of_order_release(mode: str) -> None:
    """Releases may come in any order (lockdep's lock_release finds the entry anywhere in the held
    stack; selftests treat "bad unlock order" as fine): no finding, and the released A is really
    gone: C taken after it depends on B only."""
    s = Stream()
    t = s.thread()
    t.lock("A").lock("B").unlock("A").lock("C").unlock("B").unlock("C")
    check(s, [], mode, edges={("A", "B"): ("EN",), ("B", "C"): ("EN",)})


def test_release_by_instance(mode: str) -> None:
    """A release removes the most recent held lock of that name and instance: releasing instance 1
    of X leaves X/1 (instance 2) held, so Y depends on X/1."""
    s = Stream()
    t = s.thread()
    t.lock("X", instance=1).lock("X", subclass=1, instance=2).unlock("X", instance=1).lock("Y")
    t.unlock("Y").unlock("X", instance=2)
    check(s, [], mode, edges={("X", "X/1"): ("EN",), ("X/1", "Y"): ("EN",)})


def test_recursive_acquisition_adds_no_dependency(mode: str) -> None:
    """A, B, A in one thread: lockdep reports the recursion (check_deadlock) and stops there, so the
    second A adds no B -> A dependency and there is no cycle. A is still pushed: both releases match."""
    s = Stream()
    t = s.thread()
    t.lock("A").lock("B").lock("A").unlock("A").unlock("B").unlock("A")
    check(s, [F("recursive", ("A",), (0,))], mode, edges={("A", "B"): ("EN",)})


# ---------------------------------------------------------------------------------------------
# the read/write matrices
# ---------------------------------------------------------------------------------------------

RW_AA = [
    # selftest, first, second, lockdep's verdict (True = fails)
    ("rlock_AA1", 2, 2, False),   # RL(X1); RL(X1): read-after-read recursion allowed
    ("rsem_AA1", 1, 1, True),     # RSL(X1); RSL(X1): a non-recursive read may block on a waiting writer
    ("rlock_AA2", 2, 0, True),    # RL(X1); WL(X2): write after read
    ("rsem_AA2", 1, 0, True),
    ("rlock_AA3", 0, 2, True),    # WL(X1); RL(X2): read after write
    ("rsem_AA3", 0, 1, True),
    ("rsem_then_rlock", 1, 2, False),  # a recursive read after a read of either kind (check_deadlock)
]


@pytest.mark.parametrize("name,first,second,bad", RW_AA, ids=[c[0] for c in RW_AA])
def test_rw_AA(mode: str, name: str, first: int, second: int, bad: bool) -> None:
    """"recursive read-lock", "recursive read-lock #2", "mixed read-write-lock",
    "mixed write-read-lock": same class twice, X1 and X2 distinct instances."""
    s = Stream()
    s.thread().lock("X", first, instance=1).lock("X", second, instance=2)
    check(s, [F("recursive", ("X",), (0,))] if bad else [], mode)


RW_ABBA = [
    # selftest: (mode of X, mode of Y) in thread 0 taking X then Y; thread 1 takes Y then X.
    ("rlock_ABBA1", (2, 0), (0, 0), True),   # read_lock(A) lock(B) | lock(B) write_lock(A): SN + EN
    ("rwsem_ABBA1", (1, 0), (0, 0), True),   # down_read                                    SN + EN
    ("rlock_ABBA2", (2, 0), (0, 2), False),  # read_lock(A) lock(B) | lock(B) read_lock(A): SN + ER
    ("rwsem_ABBA2", (1, 0), (0, 1), True),   # down_read both ways: SN + EN (no recursion for rwsem)
    ("rlock_ABBA3", (0, 0), (0, 0), True),   # write_lock both ways
    ("rwsem_ABBA3", (0, 0), (0, 0), True),
]


@pytest.mark.parametrize("name,first,second,bad", RW_ABBA, ids=[c[0] for c in RW_ABBA])
def test_rw_ABBA(mode: str, name: str, first: tuple[int, int], second: tuple[int, int], bad: bool) -> None:
    """"mixed read-lock/lock-write ABBA", "mixed read-lock/lock-read ABBA", "mixed
    write-lock/lock-write ABBA": thread 0 takes X (first[0]) then Y (first[1]); thread 1 takes Y
    (second[0]) then X (second[1]). lockdep-design "Recursive read locks": a cycle with
    -(xR)-> followed by -(Sx)-> is not a deadlock; the recursive reader of X under Y can always
    get X while thread 0 only reads it."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("X", first[0]).lock("Y", first[1]).unlock("Y").unlock("X")
    t1.lock("Y", second[0]).lock("X", second[1]).unlock("X").unlock("Y")
    check(s, [cycle("X", "Y", threads=(0, 1))] if bad else [], mode)


def test_rlock_chaincache_ABBA1(mode: str) -> None:
    """rlock_chaincache_ABBA1: read_lock(A) lock(B) | lock(B) read_lock(A) (not a deadlock) |
    lock(B) write_lock(A): the new kind EN on the known pair B -> A closes the cycle; a cache of
    chains or pairs that ignores the kind would miss it (semantics.md: a new kind on a known pair
    is searched). Hosts: every host that took one of the cycle's pairs, in any kind."""
    s = Stream()
    t0, t1, t2 = s.thread(), s.thread(), s.thread()
    t0.read_lock("X").lock("Y").unlock("Y").unlock("X")
    t1.lock("Y").read_lock("X").unlock("X").unlock("Y")
    t2.lock("Y").write_lock("X").unlock("X").unlock("Y")
    check(s, [cycle("X", "Y", threads=(0, 1, 2))], mode,
          edges={("X", "Y"): ("SN",), ("Y", "X"): ("EN", "ER")})


THREE = [
    # selftest, E1, E2, E3 as ((lock, mode), (lock, mode)); verdict
    ("W1R2_W2R3_W3R1", ((("X", 0), ("Y", 2)), (("Y", 0), ("Z", 2)), (("Z", 0), ("X", 2))), True),
    ("W1W2_R2R3_W3R1", ((("X", 0), ("Y", 0)), (("Y", 2), ("Z", 2)), (("Z", 0), ("X", 2))), True),
    ("W1W2_R2R3_R3W1", ((("X", 0), ("Y", 0)), (("Y", 2), ("Z", 2)), (("Z", 2), ("X", 0))), False),
    ("W1R2_R2R3_W3W1", ((("X", 0), ("Y", 2)), (("Y", 2), ("Z", 2)), (("Z", 0), ("X", 0))), False),
]


@pytest.mark.parametrize("perm", ["123", "132", "213", "231", "312", "321"])
@pytest.mark.parametrize("name,evs,bad", THREE, ids=[c[0] for c in THREE])
def test_rlock_three_way(mode: str, name: str, evs: Any, bad: bool, perm: str) -> None:
    """DO_TESTCASE_6x1RRB("rlock W1R2/W2R3/W3R1") and ("rlock W1W2/R2R3/W3R1") fail,
    DO_TESTCASE_6x1RR("rlock W1W2/R2R3/R3W1") and ("rlock W1R2/R2R3/W3W1") do not, in every
    order of the three events (GENERATE_PERMUTATIONS_3_EVENTS). The cycle X->Y->Z is strong
    unless some -(SR)-> is followed by -(S*)->... i.e. some link ending in a recursive read is
    followed by one starting from a shared hold. The event that comes last closes it."""
    s = Stream()
    order = [evs[int(c) - 1] for c in perm]
    for (a, ma), (b, mb) in order:
        s.thread().lock(a, ma).lock(b, mb).unlock(b).unlock(a)
    closing = order[-1][1][0]
    ring = ["X", "Y", "Z"]
    i = ring.index(closing)
    expected = [cycle(*(ring[i:] + ring[:i]), threads=(0, 1, 2))] if bad else []
    check(s, expected, mode)


def test_strong_cycle_behind_a_weak_one(mode: str) -> None:
    """DESIGN.md: the kernel's __bfs marks a class visited the first time it meets it, even through
    an edge that cannot continue a strong path. X -(ER)-> Y then X -> W -> Y; Y -(SN)-> X. Through
    X -(ER)-> Y the cycle is not strong (a recursive read of Y followed by Y held shared); through W
    it is: X -> W -> Y -> X must be found."""
    s = Stream()
    t0, t1, t2 = s.thread(), s.thread(), s.thread()
    t0.lock("X").read_lock("Y").unlock("Y").unlock("X")
    t1.lock("X").lock("W").lock("Y").unlock("Y").unlock("W").unlock("X")
    t2.down_read("Y").lock("X").unlock("X").unlock("Y")
    check(s, [cycle("X", "W", "Y", threads=(1, 2))], mode,
          edges={("X", "Y"): ("ER",), ("X", "W"): ("EN",), ("W", "Y"): ("EN",), ("Y", "X"): ("SN",)})


def test_later_cycles_sharing_edges(mode: str) -> None:
    """Unlike lockdep (which turns itself off after its first report) the service keeps the closing
    edge and goes on: ABBA, then A -> C and C -> B close the second cycle B -> A -> C -> B. It runs
    through the inversion B -> A, so it is that finding's witness, not a new finding."""
    s = Stream()
    ts = [s.thread() for _ in range(4)]
    ts[0].lock_unlock("A", "B")
    ts[1].lock_unlock("B", "A")
    ts[2].lock_unlock("A", "C")
    ts[3].lock_unlock("C", "B")
    res = check(s, [cycle("A", "B", threads=(0, 1), also=(2, 3))], mode)
    (a,) = res.eng.alerts()
    assert a.count == 2 and a.inversion == ("B", "A")
    assert [tuple(w.locks) for w in a.witnesses] == [("A", "B"), ("B", "A", "C")]
    assert "inversion B -> A: 2 cycle(s) closed through it (this one first), 2 kept" in a.render()


def test_cycle_without_a_known_inversion_is_a_new_finding(mode: str) -> None:
    """Grouping never hides a deadlock: ABBA (inversion B -> A), then C -> D and D -> C, a cycle
    through none of it: a second finding."""
    s = Stream()
    ts = [s.thread() for _ in range(4)]
    ts[0].lock_unlock("A", "B")
    ts[1].lock_unlock("B", "A")
    ts[2].lock_unlock("C", "D")
    ts[3].lock_unlock("D", "C")
    check(s, [cycle("A", "B", threads=(0, 1)), cycle("C", "D", threads=(2, 3))], mode)


def test_cycle_through_two_inversions_is_a_witness_of_the_older(mode: str) -> None:
    """Two inversions, then a cycle that needs both: A -> B, B -> A (inversion 1); C -> D, D -> C
    (inversion 2); then A -> D and C -> B close B -> A -> D -> C -> B, which runs through both
    (the order alone has no path B ~> C): a witness of the older one, B -> A."""
    s = Stream()
    ts = [s.thread() for _ in range(6)]
    ts[0].lock_unlock("A", "B")
    ts[1].lock_unlock("B", "A")
    ts[2].lock_unlock("C", "D")
    ts[3].lock_unlock("D", "C")
    ts[4].lock_unlock("A", "D")
    ts[5].lock_unlock("C", "B")
    res = check(s, [cycle("A", "B", threads=(0, 1), also=(3, 4, 5)), cycle("C", "D", threads=(2, 3))], mode)
    first, second = sorted(res.eng.alerts(), key=lambda a: a.seq)
    assert (first.count, second.count) == (2, 1)


def test_same_cycle_closed_again_is_one_finding(mode: str) -> None:
    """A finding is identified by its cycle's edge set, whichever edge closed it and on whichever
    host: ABBA, then the same two orders again on more threads: one alert, and the later batches
    return nothing new."""
    s = Stream()
    ts = [s.thread() for _ in range(4)]
    ts[0].lock_unlock("A", "B")
    ts[1].lock_unlock("B", "A")
    ts[2].lock_unlock("B", "A")
    ts[3].lock_unlock("A", "B")
    res = run_mode(s, mode)
    got = res.eng.alerts()
    assert [alert_identity(a) for a in got] == [("circular", edge_set(("A", "B")))]
    assert tuple(got[0].locks) == ("A", "B")
    if mode == "segments":
        assert [len(b) for b in res.returned] == [0, 1, 0, 0]


# ---------------------------------------------------------------------------------------------
# trylocks
# ---------------------------------------------------------------------------------------------

def test_no_edge_into_a_trylock(mode: str) -> None:
    """A trylock never waits, so lockdep adds no dependency into it (kernel/locking/lockdep.c
    validate_chain(): "Trylock needs to maintain the stack of held locks, but it does not add
    new dependencies, because trylock can be done in any order."); it is still held."""
    s = Stream()
    s.thread().lock("A").trylock("B").unlock("B").unlock("A")
    check(s, [], mode, edges={})


def test_edges_extend_down_through_trylocks(mode: str) -> None:
    """lockdep's check_prevs_add(): "Stop after the first non-trylock entry, as non-trylock
    entries have added their own direct dependencies already": after a trylock on top of the
    stack the walk continues below it, down to and including the first lock that was not a trylock. A, trylock B,
    trylock C, lock D: C->D, B->D and A->D, but not Z->D (Z is under A). Then D ... A on another
    thread closes A -> D -> A."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("Z").lock("A").trylock("B").trylock("C").lock("D")
    t0.unlock("D").unlock("C").unlock("B").unlock("A").unlock("Z")
    t1.lock("D").lock("A").unlock("A").unlock("D")
    check(s, [cycle("A", "D", threads=(0, 1))], mode,
          edges={("Z", "A"): ("EN",), ("C", "D"): ("EN",), ("B", "D"): ("EN",), ("A", "D"): ("EN",),
                 ("D", "A"): ("EN",)})


def test_trylock_ABBA_closing_trylock_is_not_a_deadlock(mode: str) -> None:
    """A then B | B then trylock(A): the second thread cannot block on A, so no B -> A and no cycle
    (ww_test_try_* / "trylock never blocks")."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock_unlock("A", "B")
    t1.lock("B").trylock("A").unlock("A").unlock("B")
    check(s, [], mode, edges={("A", "B"): ("EN",)})


def test_trylock_ABBA_first_order_trylock_is_not_a_deadlock(mode: str) -> None:
    """A then trylock(B) | B then A: the first thread never waits for B, no A -> B, no cycle."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("A").trylock("B").unlock("B").unlock("A")
    t1.lock_unlock("B", "A")
    check(s, [], mode, edges={("B", "A"): ("EN",)})


def test_trylock_is_held_and_released(mode: str) -> None:
    """A trylock is pushed (its release matches; no bad_unlock) and not checked for recursion
    (a trylock of a held lock just fails in real life, so a successful one is no AA)."""
    s = Stream()
    s.thread().lock("A").trylock("A", instance=2).unlock("A").unlock("A")
    check(s, [], mode, edges={})


# ---------------------------------------------------------------------------------------------
# subclasses (lockdep's nesting annotations)
# ---------------------------------------------------------------------------------------------

def test_nested_subclass_is_another_class(mode: str) -> None:
    """mutex_lock_nested(&b, SINGLE_DEPTH_NESTING) under a: A and A/1 are different classes
    (lockdep-design "Exception: Nested data dependencies leading to nested locking"), so no
    recursive finding, and a dependency A -> A/1."""
    s = Stream()
    s.thread().lock("A", instance=1).lock_nested("A", 1, instance=2).unlock("A", instance=2).unlock("A", instance=1)
    check(s, [], mode, edges={("A", "A/1"): ("EN",)})


def test_inverted_nesting_is_ABBA(mode: str) -> None:
    """A then A/1 in one thread, A/1 then A in another: a real ABBA between the two classes."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("A").lock_nested("A", 1).unlock("A").unlock("A")
    t1.lock_nested("A", 1).lock("A").unlock("A").unlock("A")
    check(s, [cycle("A", "A/1", threads=(0, 1))], mode)


def test_same_subclass_twice_is_recursive(mode: str) -> None:
    """Two acquisitions of A/1 in one thread: the same class, recursive (named A/1)."""
    s = Stream()
    s.thread().lock_nested("A", 1, instance=1).lock_nested("A", 1, instance=2)
    check(s, [F("recursive", ("A/1",), (0,))], mode)


def test_release_ignores_the_subclass(mode: str) -> None:
    """mutex_unlock() carries no nesting annotation: a plain release of "A" releases A/1."""
    s = Stream()
    s.thread().lock_nested("A", 1).unlock("A").lock("B").unlock("B")
    check(s, [], mode, edges={})


# ---------------------------------------------------------------------------------------------
# irq state
# ---------------------------------------------------------------------------------------------

IRQS = {"hard": HARDIRQ, "soft": SOFTIRQ}


def in_irq(t: Any, irq: str) -> Any:
    return t.hardirq() if irq == "hard" else t.softirq(hardirqs_off=True)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("order", ["12", "21"])
def test_irqsafe1(mode: str, locktype: str, irq: str, order: str) -> None:
    """irqsafe1_{hard,soft}_*: "irqs-on + irq-safe-A": A taken in irq context (E1) and with that
    irq enabled (E2), either order. An inconsistent {IN-X-W} -> {X-ON-W} usage: the irq can come
    in while A is held and spin on it. DO_TESTCASE_3: spin and wlock fail, rlock does not (a
    recursive reader in the irq can always get a read-held lock). rsem (mode 1) is still a read:
    usage bits only conflict when one of them is a write (semantics.md)."""
    m = LOCKTYPES[locktype]
    s = Stream()
    t0, t1 = s.thread(), s.thread()

    def e1() -> None:
        with in_irq(t0, irq):
            t0.lock("A", m).unlock("A")

    def e2() -> None:
        t1.lock("A", m).unlock("A")

    for e in (e1, e2) if order == "12" else (e2, e1):
        e()
    expected = [F("inconsistent_state", ("A",), (), IRQS[irq], also=(0, 1))] if m == 0 else []
    check(s, expected, mode)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("perm", ["123", "321", "213"])
def test_irqsafe3(mode: str, locktype: str, irq: str, perm: str) -> None:
    """irqsafe3_*: "safe-A + unsafe-B #1": E1 LOCK(A) LOCK(B) with irqs on; E2 LOCK(B); E3 A in irq.
    A is both irq-safe and irq-enabled (inconsistent_state) and the irq-safe A leads to the
    irq-unsafe B (irq_inversion A ~> B). DO_TESTCASE_6x6 row: spin/wlock fail, rlock not."""
    m = LOCKTYPES[locktype]
    s = Stream()
    t = [s.thread() for _ in range(3)]

    def e1() -> None:
        t[0].lock("A", m).lock("B", m).unlock("B").unlock("A")

    def e2() -> None:
        t[1].lock("B", m).unlock("B")

    def e3() -> None:
        with in_irq(t[2], irq):
            t[2].lock("A", m).unlock("A")

    for c in perm:
        (e1, e2, e3)[int(c) - 1]()
    x = IRQS[irq]
    expected = [F("inconsistent_state", ("A",), (), x, also=(0, 2)),
                F("irq_inversion", ("A", "B"), (0,), x, also=(1, 2))] if m == 0 else []
    check(s, expected, mode)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("perm", ["123", "132", "213", "231", "312", "321"])
def test_irqsafe4(mode: str, locktype: str, irq: str, perm: str) -> None:
    """irqsafe4_*: "safe-A + unsafe-B #2": E1 with irqs disabled LOCK(A) LOCK(B); E2 LOCK(B) with
    irqs on (B irq-unsafe); E3 A in irq (A irq-safe). The irq may interrupt a holder of B and spin
    on A while A's holder waits for B: irq_inversion, path A -> B, in every order."""
    m = LOCKTYPES[locktype]
    s = Stream()
    t = [s.thread() for _ in range(3)]

    def e1() -> None:
        with t[0].irqs_disabled():
            t[0].lock("A", m).lock("B", m).unlock("B").unlock("A")

    def e2() -> None:
        t[1].lock("B", m).unlock("B")

    def e3() -> None:
        with in_irq(t[2], irq):
            t[2].lock("A", m).unlock("A")

    for c in perm:
        (e1, e2, e3)[int(c) - 1]()
    expected = [F("irq_inversion", ("A", "B"), (0,), IRQS[irq], also=(1, 2))] if m == 0 else []
    check(s, expected, mode)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("variant", ["spin", "wlock", "rlock"])
def test_irq_lock_inversion(mode: str, irq: str, variant: str) -> None:
    """irq_inversion_*: "irq lock-inversion" (DO_TESTCASE_6x6RW): E1 irqs off WL(A) LOCK(B);
    E2 LOCK(B) irqs on; E3 RL(A) in irq. CPU1 write-holds A and wants B; CPU2 holds B, the irq
    read-locks A: deadlock. spin/wlock fail; rlock (LOCK = read_lock) does not: B is then only
    read with irqs on, and an irq read of A plus a process read of B never conflict."""
    lm = {"spin": 0, "wlock": 0, "rlock": 2}[variant]
    s = Stream()
    t = [s.thread() for _ in range(3)]
    with t[0].irqs_disabled():
        t[0].write_lock("A").lock("B", lm).unlock("B").unlock("A")
    t[1].lock("B", lm).unlock("B")
    with in_irq(t[2], irq):
        t[2].read_lock("A").unlock("A")
    expected = [F("irq_inversion", ("A", "B"), (0,), IRQS[irq], also=(1, 2))] if lm == 0 else []
    check(s, expected, mode)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("variant", ["wlock", "rlock"])
def test_irq_read_recursion(mode: str, irq: str, variant: str) -> None:
    """irq_read_recursion_*: E1 irqs off WL(A); E2 RL(A) irqs on; E3 in irq LOCK(A), L(B).
    DO_TESTCASE_2RW: wlock fails (A written in irq, read with irqs on: inconsistent), rlock
    does not (A only read in irq and read with irqs on)."""
    lm = {"wlock": 0, "rlock": 2}[variant]
    s = Stream()
    t = [s.thread() for _ in range(3)]
    with t[0].irqs_disabled():
        t[0].write_lock("A").unlock("A")
    t[1].read_lock("A").unlock("A")
    with in_irq(t[2], irq):
        t[2].lock("A", lm).lock("B").unlock("B").unlock("A")
    expected = [F("inconsistent_state", ("A",), (), IRQS[irq], also=(1, 2))] if lm == 0 else []
    check(s, expected, mode)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("variant", ["wlock", "rlock"])
@pytest.mark.parametrize("rule", ["5.10", "pre-5.10"])
def test_irq_read_recursion2(mode: str, irq: str, variant: str, rule: str) -> None:
    """irq_read_recursion2_*: E1 irqs off L(B) LOCK(A); E2 RL(A) irqs on; E3 L(B) in irq.
    B is irq-safe (written in irq) and leads to A, read with irqs on.

    wlock: B -(EN)-> A: irq_inversion, as lockdep (DO_TESTCASE_2RW: wlock fails), either rule.

    rlock: B -(ER)-> A. Since 5.10 (usage_match() with ->only_xr) lockdep ignores A's read-ON
    usage when the path ends in a recursive read, and the selftest expects no report: a
    recursive reader never waits for a reader. Before 5.10 usage bits conflicted unless both
    were reads, whatever the path, so IN-W(B) ~> ON-R(A) was an irq_inversion (Engine
    irq_rule="pre-5.10")."""
    lm = {"wlock": 0, "rlock": 2}[variant]
    s = Stream()
    t = [s.thread() for _ in range(3)]
    with t[0].irqs_disabled():
        t[0].lock("B").lock("A", lm).unlock("A").unlock("B")
    t[1].read_lock("A").unlock("A")
    with in_irq(t[2], irq):
        t[2].lock("B").unlock("B")
    found = lm == 0 or rule == "pre-5.10"
    check(s, [F("irq_inversion", ("B", "A"), (0,), IRQS[irq], also=(1, 2))] if found else [], mode,
          irq_rule=rule)


@pytest.mark.parametrize("irq", sorted(IRQS))
@pytest.mark.parametrize("variant", ["wlock", "rlock"])
@pytest.mark.parametrize("rule", ["5.10", "pre-5.10"])
def test_irq_read_recursion3(mode: str, irq: str, variant: str, rule: str) -> None:
    """irq_read_recursion3_*: E1 irqs off WL(B) LOCK(A); E2 RL(A) irqs on; E3 RL(B) in irq.
    A is read with irqs on, B read in irq, B -> A.

    rlock: B -(ER)-> A: no report, as lockdep (the path ends in a recursive read, so A's read-ON
    usage drops out).

    wlock: B -(EN)-> A: lockdep since 5.10 reports it (the selftest expects FAILURE): CPU0
    read-holds A, CPU1 write-holds B and waits to write A, the irq on CPU0 read-locks B and
    waits for CPU1: deadlock. The path leaves B held exclusive and ends non-recursive, so both
    read usages count. Before 5.10 two read usage bits never conflicted: no finding."""
    lm = {"wlock": 0, "rlock": 2}[variant]
    s = Stream()
    t = [s.thread() for _ in range(3)]
    with t[0].irqs_disabled():
        t[0].write_lock("B").lock("A", lm).unlock("A").unlock("B")
    t[1].read_lock("A").unlock("A")
    with in_irq(t[2], irq):
        t[2].read_lock("B").unlock("B")
    found = lm == 0 and rule == "5.10"
    check(s, [F("irq_inversion", ("B", "A"), (0,), IRQS[irq], also=(1, 2))] if found else [], mode,
          irq_rule=rule)


@pytest.mark.parametrize("irq", sorted(IRQS))
def test_irq_read_in_irq_held_shared_on_the_path(mode: str, irq: str) -> None:
    """Since 5.10 a safe class's read IN usage counts only where the path leaves it held
    exclusive (usage_accumulate() masks the read bits of an ->only_xr entry): B read in irq,
    B held shared while A is taken, A written with irqs on. The irq's read of B never waits for
    the process's read of B, so no inversion; with B write-held on another path it is one."""
    s = Stream()
    t = [s.thread() for _ in range(4)]
    with t[0].irqs_disabled():
        t[0].read_lock("B").lock("A").unlock("A").unlock("B")
    t[1].lock("A").unlock("A")
    with in_irq(t[2], irq):
        t[2].read_lock("B").unlock("B")
    check(s, [], mode)
    with t[3].irqs_disabled():
        t[3].write_lock("B").lock("A").unlock("A").unlock("B")
    check(s, [F("irq_inversion", ("B", "A"), (3,), IRQS[irq], also=(0, 1, 2))], mode)


# (rows of the issue: (tid, op, lock, mode, irq); op 2 = trylock; irq 13 = in hardirq, irqs off)
TRY_IN_IRQ = [(0, 2, "A", 0, 13), (0, 1, "A", 0, 13)]
PLAIN_IN_IRQ = [(0, 0, "A", 0, 13), (0, 1, "A", 0, 13)]


def rows_stream(*parts: list[tuple[int, int, str, int, int]]) -> Stream:
    s = Stream()
    threads: dict[int, Any] = {}
    for part in parts:
        for tid, op, lock, m, irq in part:
            t = threads.get(tid) or threads.setdefault(tid, s.thread())
            if op == 1:
                t.unlock(lock, irq=irq)
            elif op == 2:
                t.trylock(lock, m, irq=irq)
            else:
                t.lock(lock, m, irq=irq)
    return s


@pytest.mark.parametrize("first", ["trylock", "lock"])
def test_trylock_in_irq_is_not_used_in_irq(mode: str, first: str) -> None:
    """lockdep's mark_usage() sets IN-HARDIRQ/IN-SOFTIRQ only `if (!hlock->trylock)`: a trylock
    in irq context cannot spin on the lock, so it makes no irq-safe class. A trylocked in
    hardirq, then A taken with irqs on: no finding; with a plain lock in the irq:
    inconsistent_state {IN-HARDIRQ-W} -> {HARDIRQ-ON-W}."""
    s = rows_stream(TRY_IN_IRQ if first == "trylock" else PLAIN_IN_IRQ, [(1, 0, "A", 0, 0), (1, 1, "A", 0, 0)])
    expected = [] if first == "trylock" else [F("inconsistent_state", ("A",), (), HARDIRQ, also=(0, 1))]
    check(s, expected, mode)


@pytest.mark.parametrize("first", ["trylock", "lock"])
def test_trylock_in_irq_makes_no_irq_inversion(mode: str, first: str) -> None:
    """A trylocked in hardirq; A -> B with irqs off; B taken with irqs on. A is not hardirq-safe
    (the trylock), so no irq_inversion A -> B; with a plain lock in the irq there is one."""
    s = rows_stream(TRY_IN_IRQ if first == "trylock" else PLAIN_IN_IRQ,
                    [(1, 0, "A", 0, 12), (1, 0, "B", 0, 12), (1, 1, "B", 0, 12), (1, 1, "A", 0, 12)],
                    [(2, 0, "B", 0, 0), (2, 1, "B", 0, 0)])
    expected = [] if first == "trylock" else [F("irq_inversion", ("A", "B"), (1,), HARDIRQ, also=(0, 2))]
    check(s, expected, mode)


def test_trylock_with_irqs_on_still_marks_irq_unsafe(mode: str) -> None:
    """The trylock exception is only for "used in irq": a trylock with irqs enabled marks
    HARDIRQ-ON (mark_usage's `if (!hlock->hardirqs_off)` has no trylock test), so A taken in
    hardirq then trylocked with irqs on is inconsistent."""
    s = rows_stream(PLAIN_IN_IRQ, [(1, 2, "A", 0, 0), (1, 1, "A", 0, 0)])
    check(s, [F("inconsistent_state", ("A",), (), HARDIRQ, also=(0, 1))], mode)


def test_hardirq_unsafe_softirq_safe(mode: str) -> None:
    """hardirq_deadlock_softirq_not_deadlock: mutex_A -> lock_C -> lock_D is softirq-unsafe ->
    softirq-safe (no deadlock: the direction is wrong), lock_A -> lock_B -> lock_C -> lock_D is
    hardirq-safe -> hardirq-unsafe: one irq_inversion, HARDIRQ, with that path. Each block of the
    selftest is its own thread here."""
    s = Stream()
    t = [s.thread() for _ in range(7)]
    t[0].lock("mutex_A")
    with t[0].irqs_disabled():
        t[0].lock("lock_C").unlock("lock_C")
    t[0].unlock("mutex_A")
    with t[1].hardirq():
        t[1].lock("lock_A").unlock("lock_A")
    with t[2].irqs_disabled():
        t[2].lock("lock_A").lock("lock_B").unlock("lock_B").unlock("lock_A")
    with t[3].irqs_disabled():
        t[3].lock("lock_B").lock("lock_C").unlock("lock_C").unlock("lock_B")
    with t[4].softirq(hardirqs_off=True):
        t[4].lock("lock_D").unlock("lock_D")
    with t[5].bh_disabled():
        t[5].lock("lock_D").unlock("lock_D")
    with t[6].irqs_disabled():
        t[6].lock("lock_C").lock("lock_D").unlock("lock_D").unlock("lock_C")
    check(s, [F("irq_inversion", ("lock_A", "lock_B", "lock_C", "lock_D"), (2, 3, 6), HARDIRQ, also=(1, 5))],
          mode)


def test_irq_context_starts_a_new_chain(mode: str) -> None:
    """lockdep's chain heads: a lock taken in hard-irq context while the interrupted task holds A
    does not depend on A (the irq is not waiting "under" A), so no A -> B."""
    s = Stream()
    t = s.thread()
    t.lock("A")
    with t.hardirq():
        t.lock("B").lock("C").unlock("C").unlock("B")
    t.unlock("A")
    check(s, [], mode, edges={("B", "C"): ("EN",)})


# ---------------------------------------------------------------------------------------------
# depth limit
# ---------------------------------------------------------------------------------------------

def test_depth_overflow(mode: str) -> None:
    """MAX_LOCK_DEPTH: with max_lock_depth=4, L4 and L5 are beyond the limit: counted
    (depth_overflows), no dependency, not pushed; their releases are absorbed (no bad_unlock).
    After that the thread works normally; releasing L4 once more is a bad_unlock."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    for i in range(6):
        t0.lock(f"L{i}")
    for i in reversed(range(6)):
        t0.unlock(f"L{i}")
    t0.lock_unlock("L3", "M")
    t1.lock_unlock("L0", "L1")
    t0.unlock("L4")
    res = check(s, [F("bad_unlock", ("L4",), (0,))], mode, max_lock_depth=4,
                edges={("L0", "L1"): ("EN",), ("L1", "L2"): ("EN",), ("L2", "L3"): ("EN",), ("L3", "M"): ("EN",)})
    st = res.eng.stats()
    assert st["depth_overflows"] == 2
    assert st["events"] == len(s.rows)
    assert st["edges"] == 4


def test_depth_overflow_default_is_48(mode: str) -> None:
    """lockdep's MAX_LOCK_DEPTH is 48: 48 nested locks are fine, the 49th overflows."""
    s = Stream()
    t = s.thread()
    for i in range(49):
        t.lock(f"N{i:02d}")
    for i in reversed(range(49)):
        t.unlock(f"N{i:02d}")
    res = check(s, [], mode)
    assert res.eng.stats()["depth_overflows"] == 1
    assert len(res.oracle.edges()) == 47


# ---------------------------------------------------------------------------------------------
# fleet-specific (not mode-parametrized: they are about hosts)
# ---------------------------------------------------------------------------------------------

def test_cross_host_abba_hosts() -> None:
    """The reason for the service: A -> B only ever on web-1, B -> A only on db-2."""
    eng = make_engine()
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock_unlock("A", "B")
    t1.lock_unlock("B", "A")
    assert eng.ingest(events(s.rows[:4]), host="web-1") == []
    new = eng.ingest(events(s.rows[4:]), host="db-2")
    assert [(a.kind, tuple(a.locks), tuple(a.hosts)) for a in new] == [("circular", ("A", "B"), ("db-2", "web-1"))]


def test_same_tid_on_two_hosts_is_two_threads() -> None:
    """A thread is (host, tid): tid 7 on host a and tid 7 on host b are different tasks."""
    eng = make_engine()
    rows = [("a", 7, 0, "Q", 0, 0, 0, 0), ("b", 7, 1, "Q", 0, 0, 0, 0), ("a", 7, 1, "Q", 0, 0, 0, 0)]
    eng.ingest(events(rows), host="relay")
    got = eng.alerts()
    assert [(a.kind, tuple(a.locks), tuple(a.hosts)) for a in got] == [("bad_unlock", ("Q",), ("b",))]


def test_null_host_means_the_batch_host() -> None:
    """A null in the host column: the host the batch was ingested for."""
    eng = make_engine()
    rows = [("a", 1, 0, "A", 0, 0, 0, 0), ("a", 1, 0, "B", 0, 0, 0, 0),
            ("zz", 2, 0, "B", 0, 0, 0, 0), ("zz", 2, 0, "A", 0, 0, 0, 0)]
    new = eng.ingest(events(rows, null_hosts="zz"), host="batch-host")
    assert [(a.kind, tuple(a.hosts)) for a in new] == [("circular", ("a", "batch-host"))]


def test_thread_state_survives_batches() -> None:
    """A thread's held stack carries over from one batch to the next (and across ingest calls for
    the same host)."""
    eng = make_engine()
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("A")
    t1.lock("B")
    t0.lock("B")
    t1.lock("A")
    for e in s.rows:
        eng.ingest(events([e]), host="h")
    assert [tuple(a.locks) for a in eng.alerts()] == [("A", "B")]
    assert eng.chain("A", "B") == ["A", "B"]
    assert eng.chain("B", "A") == ["B", "A"]
    assert eng.chain("A", "nope") is None


def test_release_from_the_middle_reacquires_the_locks_above(mode: str) -> None:
    """docs/semantics.md, Release: the locks above a lock released from the middle are
    re-acquired, as lockdep's __lock_release does through reacquire_held_locks. lock A,
    read_lock C, lock B, unlock C: B is re-acquired on top of A, which records A -> B besides
    A -> C and C -> B; with t1's B -> A that is a strong ABBA (A -(EN)-> B -(EN)-> A), which only
    the re-acquisition reveals (A -(ER)-> C -(SN)-> B cannot continue a strong path)."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.lock("A").read_lock("C").lock("B").unlock("C").unlock("B").unlock("A")
    t1.lock_unlock("B", "A")
    res = run_mode(s, mode)
    assert engine_edges(res.eng) == {("A", "C"): ("ER",), ("C", "B"): ("SN",), ("A", "B"): ("EN",),
                                     ("B", "A"): ("EN",)}
    assert [(a.kind, set(a.locks)) for a in res.eng.alerts()] == [("circular", {"A", "B"})]


@pytest.mark.parametrize("rule", ["5.10", "pre-5.10"])
def test_irq_inversion_of_a_class_with_itself_weak_cycle(mode: str, rule: str) -> None:
    """E hardirq-safe (written in hardirq) and hardirq-unsafe (read with irqs on), and
    E -(SN)-> A -(ER)-> E: not a strong cycle (no circular finding), but a strong path from E back
    to E. A is an irq_inversion (E ~> A). Under the pre-5.10 rule, by the letter of semantics.md
    ("U ... reachable by a strong path of one or more dependencies from an X-safe class S"), E is
    one too, E ~> A ~> E, besides its inconsistent_state (oracle.IRQ_INVERSION_SELF); since 5.10
    the path ends in a recursive read of E, so E's read-ON usage drops out and it is not."""
    s = Stream()
    t0, t1 = s.thread(), s.thread()
    t0.down_read("E").lock("A").read_lock("E").unlock("E").unlock("A").unlock("E")
    with t1.hardirq():
        t1.lock("E").unlock("E")
    expected = [F("inconsistent_state", ("E",), (), HARDIRQ, also=(0, 1)),
                F("irq_inversion", ("E", "A"), (0,), HARDIRQ, also=(1,))]
    if rule == "pre-5.10":
        expected.append(F("irq_inversion", ("E", "A", "E"), (0,), HARDIRQ, also=(1,)))
    check(s, expected, mode, irq_rule=rule)


def test_irq_inversion_of_a_class_with_itself_strong_cycle(mode: str) -> None:
    """As ..._weak_cycle, with E -(EN)-> A -(EN)-> E, a strong cycle (so also a circular finding):
    E reaches itself by a strong path, so irq_inversion E ~> A ~> E by the same rule.
    (Regression: the engine once reported the weak-cycle case and not this one.)"""
    s = Stream()
    t0, t1, t2 = s.thread(), s.thread(), s.thread()
    t0.lock_unlock("E", "A")
    t1.lock_unlock("A", "E")
    with t2.hardirq():
        t2.lock("E").unlock("E")
    check(s, [cycle("E", "A", threads=(0, 1)),
              F("inconsistent_state", ("E",), (), HARDIRQ, also=(0, 1, 2)),
              F("irq_inversion", ("E", "A"), (0,), HARDIRQ, also=(0, 1, 2)),
              F("irq_inversion", ("E", "A", "E"), (0, 1), HARDIRQ, also=(2,))], mode)


def test_next_batch_after_abba_with_irq_usage() -> None:
    """Any batch after one whose findings are a circular A <-> C, irq_inversions and an
    inconsistent_state must be applied normally. (Regression: the next ingest() of anything made
    the core allocate without bound - the OOM killer ended the test session; memory_guard turns
    a relapse into a MemoryError.)"""
    eng = make_engine()
    rows1 = [("h0", 11, 0, "A", 0, 0, 0, 0), ("h0", 11, 0, "C", 0, 0, 0, 0),
             ("h0", 12, 0, "C", 0, 0, 0, 1 | 4),
             ("h0", 13, 0, "C", 0, 0, 0, 0), ("h0", 13, 0, "A", 0, 0, 0, 0)]
    with memory_guard():
        first = {alert_identity(a) for a in eng.ingest(events(rows1), host="h0")}
        orc = Oracle().feed(rows1)
        assert first == orc.findings() | {("circular", edge_set(("A", "C")))}
        assert ("irq_inversion", "A", HARDIRQ) in first
        assert eng.ingest(events([("h0", 99, 0, "Q", 0, 0, 0, 0)]), host="h0") == []
        assert eng.stats()["events"] == 6


def test_irq_inversion_into_a_safe_class_on_a_cycle(mode: str) -> None:
    """B is softirq-safe and softirq-unsafe (an inconsistent_state); C is only softirq-safe;
    C -> A, A -> B and B -> A are taken with irqs off. C ~> B is an irq_inversion (semantics.md:
    B has a SOFTIRQ-ON bit and is reachable by a strong path from the SOFTIRQ-safe C whose
    IN-SOFTIRQ-W conflicts with it); B ~> A ~> B (itself) reads as one too. (Regression: the
    engine once missed irq_inversion(B) when all rows came in one batch.)"""
    s = Stream()
    t = [s.thread() for _ in range(4)]
    with t[0].softirq():
        t[0].lock("B").unlock("B")
    t[0].lock("B").unlock("B")
    with t[0].softirq():
        t[0].lock("C").unlock("C")
    for i, (a, b) in enumerate([("C", "A"), ("A", "B"), ("B", "A")], start=1):
        with t[i].irqs_disabled(), t[i].bh_disabled():
            t[i].lock_unlock(a, b)
    res = run_mode(s, mode)
    got = {alert_identity(a) for a in res.eng.alerts()}
    assert ("irq_inversion", "B", SOFTIRQ) in res.oracle.findings()
    assert "C" in res.oracle.irq_inversion_sources()[("B", SOFTIRQ)]
    assert ("irq_inversion", "B", SOFTIRQ) in got
