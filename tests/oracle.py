"""A plain, slow, obviously-correct restatement of docs/semantics.md, for the tests.

Nothing here is clever: held stacks are Python lists, the dependency graph is a dict of
pairs, cycles are found by enumerating simple paths, and a cycle's strongness is decided by
trying kind assignments. The graphs the tests build are small (a dozen classes at most), so
this is fast enough.

Feed it rows in order, each `(host, tid, op, lock, mode, subclass, instance, irq)` (a tuple, a
`Row`, or a dict with those keys; missing optional fields default to 0):

    orc = Oracle()
    orc.feed(rows)
    orc.edges()              # {(held, taken): ("EN", ...)}      kinds sorted
    orc.kinds[(h, t)]        # {kind: arrival seq}               the first arrival of each kind
    orc.arrivals             # [Arrival(seq, row, held, taken, kind, host)] in arrival order
    orc.closing_arrivals()   # the arrivals that made a strong simple cycle through their pair
    orc.has_strong_cycle()   # does the graph hold a strong simple cycle?
    orc.strong_cycles()      # all strong simple cycles (each as a tuple, rotated to its min)
    orc.findings()           # {("recursive", cls), ("bad_unlock", cls),
                             #  ("inconsistent_state", cls, X), ("irq_inversion", U, X)}

Class names are printed as lockdep prints them: `name`, or `name/subclass` when subclass > 0.

The rule book has a few places where two readings are possible; the choices made here are
marked `AMBIGUITY:` below, so that a disagreement with the engine can be traced to one.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

ACQUIRE, RELEASE, TRY_ACQUIRE = 0, 1, 2
EXCLUSIVE, SHARED, RECURSIVE_READ = 0, 1, 2
IRQ_IN_HARD, IRQ_IN_SOFT, IRQ_HARD_OFF, IRQ_SOFT_OFF = 1, 2, 4, 8
HARDIRQ, SOFTIRQ = "HARDIRQ", "SOFTIRQ"
KINDS = ("EN", "ER", "SN", "SR")

# OPEN QUESTION for docs/semantics.md. The rule book's Release section only removes the released
# entry. The engine (ext/lockfleet/_core.pyx `_release`) does what lockdep's __lock_release does: when the
# released lock is not the top of the stack, the locks above it are re-acquired
# (reacquire_held_locks), and each re-acquisition is validated like an acquisition, so it gets
# dependencies from the locks now below it (no usage marks, no recursion check; the release row
# is their evidence). E.g. lock A, lock C, lock B, unlock C adds A -> B.
# With True the oracle follows the engine, so the property tests check everything else; the
# scenario test_release_from_the_middle_adds_no_dependency pins the rule book's reading.
REACQUIRE_ON_RELEASE = True

# AMBIGUITY in docs/semantics.md, irq_inversion: "a class U with an X-ON bit that is reachable by
# a strong path of one or more dependencies from an X-safe class S whose IN-X bit conflicts with
# it". Read literally, S may be U itself when U is on a strong path back to itself (a cycle): such
# a class is always an inconsistent_state too, and lockdep never reports it as an inversion. The
# oracle follows the letter (True), and so does the engine (since 9077e2a; before, it reported
# some of these and not others).
IRQ_INVERSION_SELF = True


class Row(NamedTuple):
    host: str
    tid: int
    op: int
    lock: str
    mode: int = 0
    subclass: int = 0
    instance: int = 0
    irq: int = 0


class Arrival(NamedTuple):
    seq: int        # global arrival order, 0-based
    row: int        # index of the row (0-based, over everything fed) that made it
    held: str
    taken: str
    kind: str
    host: str


def as_row(r: Any) -> Row:
    if isinstance(r, Row):
        return r
    if isinstance(r, dict):
        return Row(
            r["host"], int(r["tid"]), int(r["op"]), r["lock"],
            int(r.get("mode") or 0), int(r.get("subclass") or 0),
            int(r.get("instance") or 0), int(r.get("irq") or 0),
        )
    return Row(*r)


def class_name(name: str, subclass: int) -> str:
    """lockdep's `__print_lock_name`: `name`, or `name/n` for subclass n > 0."""
    return name if subclass == 0 else f"{name}/{subclass}"


def kind_of(held_mode: int, new_mode: int) -> str:
    """E/S: was the held lock exclusive; R/N: is the new acquisition a recursive read."""
    return ("E" if held_mode == EXCLUSIVE else "S") + ("R" if new_mode == RECURSIVE_READ else "N")


def blocks(k1: str, k2: str) -> bool:
    """True when `-(k1)-> X -(k2)->` is NOT a strong step: k1 ends in a recursive read of X
    and k2 starts from X held shared (two recursive readers never block each other)."""
    return k1[1] == "R" and k2[0] == "S"


def pareto(kinds: Iterable[str]) -> list[str]:
    """Drop kinds that another kind of the same pair dominates. A kind is only ever harmful by
    ending in R (towards the next link) or starting with S (towards the previous one), so
    E beats S and N beats R: replacing a chosen kind by one that dominates it never creates a
    violation. This only shrinks the brute force below; it changes no answer."""
    ks = set(kinds)

    def dominated(k: str) -> bool:
        return any(
            o != k and (o[0] == "E" or k[0] == "S") and (o[1] == "N" or k[1] == "R") for o in ks
        )

    return sorted(k for k in ks if not dominated(k))


def assignment_is_strong(kind_sets: list[Iterable[str]], wrap: bool) -> tuple[str, ...] | None:
    """Try every choice of one kind per link; return a choice with no `-(xR)-> -(Sx)->` step
    (including last->first when `wrap`), or None. Brute force, as the rule book says."""
    sets = [pareto(s) for s in kind_sets]
    if any(not s for s in sets):
        return None
    n = len(sets)
    for choice in itertools.product(*sets):
        steps = range(n) if wrap else range(n - 1)
        if all(not blocks(choice[i], choice[(i + 1) % n]) for i in steps):
            return choice
    return None


@dataclass
class Held:
    cls: str
    name: str
    mode: int
    trylock: bool
    instance: int
    ctx: int                # irq & 3 of the acquisition
    phantom: bool = False   # an acquisition beyond max_lock_depth: not held, only absorbs its release
    row: int = 0


# ---------------------------------------------------------------------------------------------
# usage bits (lockdep's mark_usage), as the table in docs/semantics.md
# ---------------------------------------------------------------------------------------------

def usage_bits(mode: int, irq: int, trylock: bool = False) -> list[str]:
    """A trylock never marks "used in irq" (lockdep's mark_usage: `if (!hlock->trylock)`), only
    the irqs-enabled bits."""
    rw = "W" if mode == EXCLUSIVE else "R"
    bits = []
    hard_on = not (irq & IRQ_IN_HARD) and not (irq & IRQ_HARD_OFF)
    if irq & IRQ_IN_HARD and not trylock:
        bits.append(f"IN-HARDIRQ-{rw}")
    if hard_on:
        bits.append(f"HARDIRQ-ON-{rw}")
    if irq & IRQ_IN_SOFT and not trylock:
        bits.append(f"IN-SOFTIRQ-{rw}")
    if hard_on and not (irq & IRQ_IN_SOFT) and not (irq & IRQ_SOFT_OFF):
        bits.append(f"SOFTIRQ-ON-{rw}")
    return bits


def conflicts(bit_a: str, bit_b: str) -> bool:
    """Usage bits of one class conflict unless both are reads (inconsistent_state; and every
    irq_inversion under the pre-5.10 rule)."""
    return not (bit_a.endswith("-R") and bit_b.endswith("-R"))


IRQ_RULES = ("5.10", "pre-5.10")


def path_conflicts(s_in: Iterable[str], u_on: Iterable[str], first: str, last: str, rule: str) -> bool:
    """Do the safe class's IN bits and the unsafe class's ON bits conflict along a path whose
    first dependency has kind `first` and last has kind `last`?
    5.10: every pair conflicts, but a read IN bit counts only if the path leaves S held
    exclusive (first = Ex) and a read ON bit only if the path does not end in a recursive read
    (last = xN). pre-5.10: pairs conflict unless both are reads, whatever the path."""
    if rule == "pre-5.10":
        return any(conflicts(a, b) for a in s_in for b in u_on)
    s_ok = [a for a in s_in if a.endswith("-W") or first[0] == "E"]
    u_ok = [b for b in u_on if b.endswith("-W") or last[1] == "N"]
    return bool(s_ok and u_ok)


def in_bits(bits: Iterable[str], x: str) -> list[str]:
    return sorted(b for b in bits if b.startswith(f"IN-{x}-"))


def on_bits(bits: Iterable[str], x: str) -> list[str]:
    return sorted(b for b in bits if b.startswith(f"{x}-ON-"))


class Oracle:
    def __init__(self, max_lock_depth: int = 48, reacquire: bool | None = None, irq_rule: str = "5.10"):
        if irq_rule not in IRQ_RULES:
            raise ValueError(irq_rule)
        self.irq_rule = irq_rule
        self.max_lock_depth = max_lock_depth
        self.reacquire = REACQUIRE_ON_RELEASE if reacquire is None else reacquire
        self.nrows = 0
        self.stacks: dict[tuple[str, int], list[Held]] = defaultdict(list)
        self.overflowed: dict[tuple[str, int], list[Held]] = defaultdict(list)
        self.kinds: dict[tuple[str, str], dict[str, int]] = {}
        self.arrivals: list[Arrival] = []
        self.pair_hosts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)  # host -> first row
        self.recursive: dict[str, dict[str, int]] = {}    # class -> {host: first row}
        self.bad_unlock: dict[str, dict[str, int]] = {}   # class -> {host: first row}
        self.usage: dict[str, dict[str, int]] = defaultdict(dict)  # class -> {bit: first row}
        self.usage_hosts: dict[str, set[str]] = defaultdict(set)    # "cls|bit" -> hosts
        self.classes: set[str] = set()
        self.depth_overflows = 0
        self.overflow_log: list[tuple[int, str, int]] = []  # (row, host, tid)

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, rows: Iterable[Any]) -> Oracle:
        for r in rows:
            self.feed_row(r)
        return self

    def feed_row(self, r: Any) -> None:
        row = as_row(r)
        idx = self.nrows
        self.nrows += 1
        key = (row.host, row.tid)
        stack = self.stacks[key]
        if row.op == RELEASE:
            self._release(row, idx, key)
            return
        if row.op not in (ACQUIRE, TRY_ACQUIRE):
            raise ValueError(f"bad op {row.op}")
        cls = class_name(row.lock, row.subclass)
        real = stack
        ctx = row.irq & 3
        if len(real) >= self.max_lock_depth:
            # Depth limit: counted, adds nothing (no usage, no recursion check, no dependency),
            # not pushed; its release is absorbed.
            # AMBIGUITY: "adds nothing" read as: no usage bits and no recursive finding either.
            self.depth_overflows += 1
            self.overflow_log.append((idx, row.host, row.tid))
            self.overflowed[key].append(Held(cls, row.lock, row.mode, row.op == TRY_ACQUIRE,
                                             row.instance, ctx, phantom=True, row=idx))
            return
        self.classes.add(cls)
        for bit in usage_bits(row.mode, row.irq, row.op == TRY_ACQUIRE):
            self.usage[cls].setdefault(bit, idx)
            self.usage_hosts[f"{cls}|{bit}"].add(row.host)
        if row.op == ACQUIRE:
            same = [h for h in real if h.cls == cls]
            if same and not (row.mode == RECURSIVE_READ and all(h.mode in (SHARED, RECURSIVE_READ) for h in same)):
                self.recursive.setdefault(cls, {}).setdefault(row.host, idx)
            else:
                self._add_deps(real, cls, row.mode, ctx, row.host, idx)
        stack.append(Held(cls, row.lock, row.mode, row.op == TRY_ACQUIRE, row.instance, ctx, row=idx))

    def _add_deps(self, stack: list[Held], cls: str, mode: int, ctx: int, host: str, idx: int) -> None:
        """Rule 2: walk the stack from the top, stop at another irq context, skip L itself,
        stop after the first lock that was not a trylock."""
        for h in reversed(stack):
            if h.ctx != ctx:
                break
            if h.cls != cls:
                self._add_dep(h.cls, cls, kind_of(h.mode, mode), host, idx)
            if not h.trylock:
                break

    def _release(self, row: Row, idx: int, key: tuple[str, int]) -> None:
        # The most recently pushed held entry with the same name (any subclass), and the same
        # instance when both are nonzero.
        stack = self.stacks[key]
        for i in range(len(stack) - 1, -1, -1):
            h = stack[i]
            if h.name == row.lock and (row.instance == 0 or h.instance == 0 or h.instance == row.instance):
                above = stack[i + 1:]
                del stack[i:]
                for a in above:
                    if self.reacquire and not a.trylock:   # see REACQUIRE_ON_RELEASE
                        self._add_deps(stack, a.cls, a.mode, a.ctx, row.host, idx)
                    stack.append(a)
                return
        # Nothing held matches: the release of an acquisition beyond the depth limit is absorbed.
        # AMBIGUITY: the rule book says "its matching release"; here it must match by name (and
        # instance), the most recent overflowed one first. (The engine absorbs any unmatched
        # release while an overflowed acquisition of the thread is outstanding.)
        over = self.overflowed[key]
        for i in range(len(over) - 1, -1, -1):
            h = over[i]
            if h.name == row.lock and (row.instance == 0 or h.instance == 0 or h.instance == row.instance):
                del over[i]
                return
        # AMBIGUITY: a bad unlock is named by the released lock's name (a release carries no
        # nesting annotation); the tests release with subclass 0.
        self.bad_unlock.setdefault(class_name(row.lock, row.subclass), {}).setdefault(row.host, idx)

    def _add_dep(self, held: str, taken: str, kind: str, host: str, idx: int) -> None:
        pair = (held, taken)
        self.pair_hosts[pair].setdefault(host, idx)
        ks = self.kinds.setdefault(pair, {})
        if kind not in ks:
            seq = len(self.arrivals)
            ks[kind] = seq
            self.arrivals.append(Arrival(seq, idx, held, taken, kind, host))

    # -- the graph ------------------------------------------------------------------------------

    def edges(self) -> dict[tuple[str, str], tuple[str, ...]]:
        return {p: tuple(sorted(ks)) for p, ks in self.kinds.items()}

    def kinds_at(self, pair: tuple[str, str], upto: int | None = None) -> set[str]:
        ks = self.kinds.get(pair, {})
        return {k for k, s in ks.items() if upto is None or s <= upto}

    def succ(self, upto: int | None = None) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for (a, b) in sorted(self.kinds):
            if self.kinds_at((a, b), upto):
                out[a].append(b)
        return out

    def cycle_is_strong(self, cycle: Iterable[str], upto: int | None = None,
                        fixed: dict[tuple[str, str], set[str]] | None = None) -> bool:
        """Is `cycle` (locks[i] -> locks[i+1], last -> first) a simple cycle of the graph (as of
        arrival `upto`) with a kind choice that makes it strong? `fixed` restricts some pairs."""
        c = list(cycle)
        if len(c) < 2 or len(set(c)) != len(c):
            return False
        sets = []
        for i in range(len(c)):
            p = (c[i], c[(i + 1) % len(c)])
            ks = self.kinds_at(p, upto)
            if fixed and p in fixed:
                ks &= fixed[p]
            if not ks:
                return False
            sets.append(ks)
        return assignment_is_strong(sets, wrap=True) is not None

    def path_is_strong(self, path: Iterable[str], upto: int | None = None) -> bool:
        """A path of one or more dependencies, strong without the wrap-around."""
        p = list(path)
        if len(p) < 2:
            return False
        sets = [self.kinds_at((p[i], p[i + 1]), upto) for i in range(len(p) - 1)]
        if any(not s for s in sets):
            return False
        return assignment_is_strong(sets, wrap=False) is not None

    def find_strong_cycle(self, held: str, taken: str, closing_kinds: Iterable[str],
                          upto: int | None = None,
                          exclude: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset()
                          ) -> tuple[str, ...] | None:
        """A strong simple cycle through `held -> taken` whose kind on that pair is one of
        `closing_kinds`, using dependencies that had arrived by `upto`. Returned lockdep-style:
        `taken` first (the lock whose acquisition closes it), `held` last.

        `exclude`: pairs the path may not use (the inversions, for the order's cycles).

        Plain DFS over simple paths taken ~> held. While walking it keeps the set of
        (kind chosen on the closing pair, does the path so far end in R) that some valid
        choice of kinds reaches, and abandons a path when that set is empty (no extension can
        become strong then). Each candidate is confirmed by the brute force."""
        closing = {k for k in closing_kinds if k in self.kinds_at((held, taken), upto)}
        if not closing or held == taken:
            return None
        succ = self.succ(upto)
        start = frozenset((k, k[1] == "R") for k in closing)
        path = [taken]
        on_path = {taken}

        def dfs(node: str, states: frozenset) -> tuple[str, ...] | None:
            if node == held:
                if any(not (last_r and first[0] == "S") for first, last_r in states):  # the wrap-around
                    cyc = tuple(path)
                    if self.cycle_is_strong(cyc, upto, fixed={(held, taken): closing}):
                        return cyc
                return None
            for nxt in succ.get(node, ()):
                if nxt in on_path or (node, nxt) in exclude:
                    continue
                ks = self.kinds_at((node, nxt), upto)
                new = frozenset(
                    (first, k[1] == "R") for first, last_r in states for k in ks
                    if not (last_r and k[0] == "S")
                )
                if not new:
                    continue
                path.append(nxt)
                on_path.add(nxt)
                found = dfs(nxt, new)
                path.pop()
                on_path.discard(nxt)
                if found:
                    return found
            return None

        return dfs(taken, start)

    def closing_arrivals(self) -> list[Arrival]:
        """The arrivals (a new pair, or a new kind on a known pair) at which a strong simple
        cycle through that pair, using the arriving kind on it and only dependencies that had
        arrived by then, existed."""
        return [a for a in self.arrivals
                if self.find_strong_cycle(a.held, a.taken, {a.kind}, a.seq) is not None]

    def inversion_run(self) -> tuple[list[tuple[Arrival, tuple[str, ...]]], list[Arrival]]:
        """docs/semantics.md "Inversions": walking the arrivals in order, an arrival whose pair is
        not an inversion yet and that closes a strong cycle avoiding every inversion so far is an
        inversion (with that cycle); any other arrival that closes a strong cycle is a witness.
        Returns (inversions with their first cycle, witness arrivals)."""
        if getattr(self, "_inv_cache", (None,))[0] == len(self.arrivals):
            return self._inv_cache[1]
        inv: set[tuple[str, str]] = set()
        invs: list[tuple[Arrival, tuple[str, ...]]] = []
        wits: list[Arrival] = []
        for a in self.arrivals:
            pair = (a.held, a.taken)
            if pair not in inv:
                cyc = self.find_strong_cycle(a.held, a.taken, {a.kind}, a.seq, exclude=frozenset(inv))
                if cyc:
                    inv.add(pair)
                    invs.append((a, cyc))
                    continue
            if self.find_strong_cycle(a.held, a.taken, {a.kind}, a.seq) is not None:
                wits.append(a)
        self._inv_cache = (len(self.arrivals), (invs, wits))
        return invs, wits

    def has_strong_cycle(self, upto: int | None = None) -> bool:
        return any(self.find_strong_cycle(h, t, self.kinds_at((h, t), upto), upto) is not None
                   for (h, t) in sorted(self.kinds))

    def simple_cycles(self, upto: int | None = None) -> list[tuple[str, ...]]:
        """Every simple cycle of the pair graph, each once, rotated to start at its least class."""
        succ = self.succ(upto)
        nodes = sorted(set(succ) | {b for bs in succ.values() for b in bs})
        out = []
        for s in nodes:
            stack = [(s, [s])]
            while stack:
                node, path = stack.pop()
                for nxt in succ.get(node, ()):
                    if nxt == s:
                        out.append(tuple(path))
                    elif nxt > s and nxt not in path:
                        stack.append((nxt, path + [nxt]))
        return sorted(out)

    def strong_cycles(self, upto: int | None = None) -> list[tuple[str, ...]]:
        return [c for c in self.simple_cycles(upto) if self.cycle_is_strong(c, upto)]

    def closed_at(self, locks: Iterable[str]) -> list[int]:
        """The arrivals of the pair `locks[-1] -> locks[0]` (the closing link of an alert) at
        which the cycle `locks` was strong with what had arrived by then."""
        c = list(locks)
        if len(c) < 2:
            return []
        pair = (c[-1], c[0])
        return sorted(s for s in self.kinds.get(pair, {}).values() if self.cycle_is_strong(c, s))

    def cycle_hosts(self, locks: Iterable[str]) -> set[str]:
        c = list(locks)
        hosts: set[str] = set()
        for i in range(len(c)):
            hosts |= set(self.pair_hosts.get((c[i], c[(i + 1) % len(c)]), {}))
        return hosts

    # -- irq state --------------------------------------------------------------------------

    def inconsistent_states(self) -> set[tuple[str, str]]:
        out = set()
        for cls, bits in self.usage.items():
            for x in (HARDIRQ, SOFTIRQ):
                if any(conflicts(a, b) for a in in_bits(bits, x) for b in on_bits(bits, x)):
                    out.add((cls, x))
        return out

    def strong_walks(self, src: str, upto: int | None = None) -> dict[tuple[str, str, str], list[str]]:
        """Every class reachable from `src` by a strong path of one or more dependencies, by the
        kinds of the path's first and last dependency: plain BFS over (class, kind of the first
        dependency, kind of the last one) states, nothing pruned. Returns
        {(class, first kind, last kind): one such path (src first)}."""
        succ = self.succ(upto)
        start = (src, "", "")   # no dependency walked yet, anything may follow
        parent: dict[tuple[str, str, str], tuple[str, str, str] | None] = {start: None}
        q = deque([start])
        found: dict[tuple[str, str, str], list[str]] = {}
        while q:
            state = q.popleft()
            node, first, last = state
            for nxt in succ.get(node, ()):
                for k in sorted(self.kinds_at((node, nxt), upto)):
                    if last and blocks(last, k):
                        continue
                    ns = (nxt, first or k, k)
                    if ns in parent:
                        continue
                    parent[ns] = state
                    q.append(ns)
                    path, cur = [], ns
                    while cur is not None:
                        path.append(cur[0])
                        cur = parent[cur]
                    found[ns] = path[::-1]
        return found

    def strong_reach(self, src: str, upto: int | None = None) -> dict[str, list[str]]:
        """Classes reachable from `src` by a strong path of one or more dependencies, each with
        one such path (src first)."""
        out: dict[str, list[str]] = {}
        for (u, _f, _l), path in sorted(self.strong_walks(src, upto).items(), key=lambda kv: len(kv[1])):
            out.setdefault(u, path)
        return out

    def _inversions(self) -> dict[tuple[str, str], dict[str, list[str]]]:
        """{(U, X): {S: one path S ~> U}} for every X-safe S and X-unsafe U joined by a strong
        path along which their usage bits conflict (path_conflicts)."""
        out: dict[tuple[str, str], dict[str, list[str]]] = {}
        for x in (HARDIRQ, SOFTIRQ):
            for s in sorted(self.usage):
                s_in = in_bits(self.usage[s], x)
                if not s_in:
                    continue
                walks = sorted(self.strong_walks(s).items(), key=lambda kv: (len(kv[1]), kv[0]))
                for (u, first, last), path in walks:
                    if u == s and not IRQ_INVERSION_SELF:
                        continue
                    u_on = on_bits(self.usage.get(u, {}), x)
                    if path_conflicts(s_in, u_on, first, last, self.irq_rule):
                        out.setdefault((u, x), {}).setdefault(s, path)
        return out

    def irq_inversion_sources(self) -> dict[tuple[str, str], set[str]]:
        """{(U, X): every X-safe class S that makes U an irq_inversion}."""
        return {k: set(v) for k, v in self._inversions().items()}

    def irq_inversions(self) -> dict[tuple[str, str], list[str]]:
        """{(U, X): one path S ~> U} for every class U with an X-ON bit reachable by a strong
        path from an X-safe class S whose IN-X bit conflicts with it along that path."""
        return {k: v[min(v)] for k, v in self._inversions().items()}

    def irq_path_is_valid(self, path: Iterable[str], x: str) -> bool:
        """Is `path` (S first, U last) a strong path from an X-safe class to an X-unsafe one
        with usage bits that conflict along it (some strong choice of kinds)?"""
        p = list(path)
        if len(p) < 2 or (p[0] == p[-1] and not IRQ_INVERSION_SELF):
            return False
        sets = [sorted(self.kinds_at((p[i], p[i + 1]))) for i in range(len(p) - 1)]
        if any(not ks for ks in sets):
            return False
        s_in = in_bits(self.usage.get(p[0], {}), x)
        u_on = on_bits(self.usage.get(p[-1], {}), x)
        for choice in itertools.product(*sets):
            if any(blocks(choice[i], choice[i + 1]) for i in range(len(choice) - 1)):
                continue
            if path_conflicts(s_in, u_on, choice[0], choice[-1], self.irq_rule):
                return True
        return False

    # -- summary ------------------------------------------------------------------------------

    def findings(self) -> set[tuple]:
        """Every non-circular finding by identity."""
        out: set[tuple] = set()
        out |= {("recursive", c) for c in self.recursive}
        out |= {("bad_unlock", c) for c in self.bad_unlock}
        out |= {("inconsistent_state", c, x) for c, x in self.inconsistent_states()}
        out |= {("irq_inversion", u, x) for u, x in self.irq_inversions()}
        return out

    def finding_hosts(self, finding: tuple) -> set[str]:
        kind = finding[0]
        if kind == "recursive":
            return set(self.recursive[finding[1]])
        if kind == "bad_unlock":
            return set(self.bad_unlock[finding[1]])
        raise ValueError(kind)


def edge_set(locks: Iterable[str]) -> frozenset[tuple[str, str]]:
    """A cycle's identity: its set of (held, taken) pairs."""
    c = list(locks)
    return frozenset((c[i], c[(i + 1) % len(c)]) for i in range(len(c)))


def alert_identity(alert: Any) -> tuple:
    """The identity of an engine Alert, comparable with Oracle.findings() (and, for a cycle,
    with edge_set)."""
    kind = alert.kind
    locks = tuple(alert.locks)
    if kind == "circular":
        return ("circular", edge_set(locks))
    if kind in ("recursive", "bad_unlock"):
        assert len(set(locks)) == 1, f"{kind} alert names more than one class: {locks}"
        return (kind, locks[0])
    if kind in ("inconsistent_state", "irq_inversion"):
        return (kind, locks[-1], alert.irq_state)
    raise AssertionError(f"unknown alert kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# The oracle behind the Engine's API, so that the test harness itself can be checked against
# it (LOCKFLEET_TEST_ENGINE=oracle). It is not a second engine: it is slow and keeps no evidence.
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OracleAlert:
    id: str
    kind: str
    locks: tuple[str, ...]
    hosts: tuple[str, ...]
    irq_state: str = ""
    seq: int = 0


def _finding_id(kind: str, identity: Any) -> str:
    import hashlib

    if isinstance(identity, frozenset):
        identity = sorted(identity)
    return f"{kind}-" + hashlib.sha1(repr(identity).encode()).hexdigest()[:16]


class OracleEngine:
    def __init__(self, max_lock_depth: int = 48, irq_rule: str = "5.10"):
        self.orc = Oracle(max_lock_depth, irq_rule=irq_rule)
        self._alerts: dict[Any, OracleAlert] = {}
        self._paths: dict[Any, tuple[str, ...]] = {}
        self.events = 0

    @staticmethod
    def rows_of(batch: Any, host: str) -> list[Row]:
        cols = set(batch.schema.names)
        d = batch.to_pydict()
        n = batch.num_rows

        def col(name: str, default: Any) -> list[Any]:
            return [default if v is None else v for v in d[name]] if name in cols else [default] * n

        hosts = col("host", host)
        return [Row(h, t, o, lk, m, s, i, q) for h, t, o, lk, m, s, i, q in zip(
            hosts, d["tid"], d["op"], d["lock"], col("mode", 0), col("subclass", 0),
            col("instance", 0), col("irq", 0))]

    def _raise(self, key: Any, kind: str, locks: tuple[str, ...], irq_state: str = "") -> OracleAlert | None:
        if key in self._alerts:
            return None
        a = OracleAlert(_finding_id(kind, key[1:] if kind != "circular" else key[1]), kind, locks,
                        (), irq_state, len(self._alerts) + 1)
        self._alerts[key] = a
        return a

    def ingest(self, batch: Any, host: str = "") -> list[OracleAlert]:
        orc = self.orc
        new: list[OracleAlert] = []
        for row in self.rows_of(batch, host):
            self.events += 1
            before = len(orc.arrivals)
            rec, bad = set(orc.recursive), set(orc.bad_unlock)
            orc.feed_row(row)
            if len(orc.arrivals) > before:
                for a, cyc in orc.inversion_run()[0]:
                    x = self._raise(("circular", (a.held, a.taken)), "circular", cyc)
                    if x:
                        new.append(x)
            for c in set(orc.recursive) - rec:
                new.append(self._raise(("recursive", c), "recursive", (c,)))
            for c in set(orc.bad_unlock) - bad:
                new.append(self._raise(("bad_unlock", c), "bad_unlock", (c,)))
        for c, x in sorted(orc.inconsistent_states()):
            a = self._raise(("inconsistent_state", c, x), "inconsistent_state", (c,), x)
            if a:
                new.append(a)
        for (u, x), path in sorted(orc.irq_inversions().items()):
            a = self._raise(("irq_inversion", u, x), "irq_inversion", tuple(path), x)
            if a:
                new.append(a)
        return [self._with_hosts(k, a) for k, a in self._alerts.items() if a in new]

    def _with_hosts(self, key: Any, a: OracleAlert) -> OracleAlert:
        import dataclasses

        orc = self.orc
        if a.kind == "circular":
            hosts = orc.cycle_hosts(a.locks)
        elif a.kind == "irq_inversion":
            hosts = set()
            for i in range(len(a.locks) - 1):
                hosts |= set(orc.pair_hosts.get((a.locks[i], a.locks[i + 1]), {}))
        elif a.kind == "inconsistent_state":
            hosts = set()
            for b in orc.usage.get(a.locks[0], {}):
                if a.irq_state in b:
                    hosts |= orc.usage_hosts[f"{a.locks[0]}|{b}"]
        else:
            hosts = orc.finding_hosts(key)
        return dataclasses.replace(a, hosts=tuple(sorted(hosts)))

    def alerts(self) -> list[OracleAlert]:
        return [self._with_hosts(k, a) for k, a in self._alerts.items()]

    def edges(self) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(h, t, ks) for (h, t), ks in sorted(self.orc.edges().items())]

    def chain(self, a: str, b: str) -> list[str] | None:
        succ = self.orc.succ()
        prev: dict[str, str | None] = {a: None}
        q = deque([a])
        while q:
            n = q.popleft()
            if n == b:
                out = []
                cur: str | None = n
                while cur is not None:
                    out.append(cur)
                    cur = prev[cur]
                return out[::-1]
            for m in succ.get(n, ()):
                if m not in prev:
                    prev[m] = n
                    q.append(m)
        return None

    def stats(self) -> dict[str, int]:
        return {"events": self.events, "locks": len(self.orc.classes), "edges": len(self.orc.kinds),
                "alerts": len(self._alerts), "depth_overflows": self.orc.depth_overflows}
