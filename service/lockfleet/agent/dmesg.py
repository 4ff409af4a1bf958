"""`lockfleet dmesg`: lockdep reports in kernel logs, turned into lock events for the engine.

Reads the text these functions of kernel/locking/lockdep.c print, in old and new kernels' forms:

- print_circular_bug (with print_circular_bug_header/_entry and print_circular_lock_scenario):
  `-> #k (name){usage}:` entries, #0 the lock being acquired, #N the one held. The existing
  chain is #0 -> #1 -> ... -> #N and the stack under `-> #k` is where #k was taken while holding
  #(k-1); the new dependency #N -> #0 (stack under `-> #0`) closes the cycle;
- print_deadlock_bug (recursive locking), print_usage_bug (inconsistent lock state),
  print_bad_irq_dependency (`X-safe -> X-unsafe lock order`), print_irq_inversion_bug (possible
  irq lock inversion dependency), print_unlock_imbalance_bug (bad unlock balance), and
  lockdep_sys_exit's "lock held when returning to user space" (parsed, no finding).

Lines may carry console timestamps (`[   13.007000]`), syzkaller caller ids (`[T1234]`, `[ C1]`;
lines of other callers are set apart, so interleaved output does not mix into a report), syslog
prefixes (`Jan  1 00:00:00 host kernel: `, ISO dates, `dmesg -x` levels) or nothing; lines the
reader does not know are skipped, and a truncated report gives what it holds. Nothing raises on
any text.

Each report becomes lock events (CONTRACT section 2) that make the real `lockfleet.Engine` find
what lockdep found: per dependency one synthetic thread (acquire held, acquire taken, release
both) whose `site` is the report's stack for it, with modes from rlock/usage/stack evidence and
irqs marked off (no usage bits); irq reports add the acquisitions that set the conflicting usage
bits. All reports of all files go into one engine, so cycles that no single report shows are found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..alerts.model import Alert
from ..engine import Engine
from .names import Normalizer, RulesError

DEFAULT_TARGET = "127.0.0.1:50551"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
ACQUIRE, RELEASE, TRY_ACQUIRE = 0, 1, 2
HARDIRQ, SOFTIRQ, HARDIRQS_OFF, SOFTIRQS_OFF = 1, 2, 4, 8
IRQS_OFF = HARDIRQS_OFF | SOFTIRQS_OFF  # marks no irq usage: dependencies only
MAX_LINE = 4096

# ---------------------------------------------------------------------------------- line prefixes

_SYSLOG = re.compile(r"^(?:<\d{1,3}>)?(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d"
                     r"(?:[.,]\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?) (\S+) ([^\s:\[]+)(?:\[\d{1,10}\])?: ?")
_LEVEL = re.compile(r"^(?:<\d{1,3}>|[a-z]{2,8} *:[a-z]{3,6} *: )")
_QUOTE = re.compile(r"^(?:> ?)+")                     # a report quoted in a mail
_STAMP = re.compile(r"^\[ *(\d{1,10})\.(\d{1,9})\]|^\[\.\.\.\]")  # `[...]`: a stamp a mail elided
_HUMAN_STAMP = re.compile(r"^\[[A-Z][a-z]{2} ([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
_CALLER = re.compile(r"^ ?\[ *([TC]\d{1,10})\]")


@dataclass(frozen=True)
class Line:
    no: int            # 1-based line number in the file
    text: str          # the kernel's text, prefixes removed, stripped
    ts_ns: int = 0     # console timestamp (s since boot) or dmesg -T wall time; 0 when none
    stream: str = ""   # syslog host and caller id: lines of one report share it
    host: str = ""     # syslog host, "" when none


def split_line(no: int, raw: str) -> Line | None:
    """One log line without its prefixes; None for a syslog line that is not the kernel's."""
    s, host, ts = raw.rstrip("\r\n"), "", 0
    if len(s) > MAX_LINE:
        return None  # printk lines are shorter: this is not the kernel's
    m = _QUOTE.match(s)
    if m:
        s = s[m.end():]
    m = _SYSLOG.match(s)
    if m:
        if m.group(2) != "kernel":
            return None
        host, s = m.group(1), s[m.end():]
    m = _LEVEL.match(s)
    if m:
        s = s[m.end():]
    m = _STAMP.match(s)
    if m:
        if m.group(1):
            ts = int(m.group(1)) * 1_000_000_000 + int(m.group(2).ljust(9, "0"))
        s = s[m.end():]
    else:
        m = _HUMAN_STAMP.match(s)
        if m:
            try:
                when = datetime.strptime(m.group(1), "%b %d %H:%M:%S %Y").replace(tzinfo=timezone.utc)
                ts = int(when.timestamp()) * 1_000_000_000
            except ValueError:
                pass
            s = s[m.end():]
    caller = ""
    m = _CALLER.match(s)
    if m:
        caller, s = m.group(1), s[m.end():]
    return Line(no=no, text=s.strip(), ts_ns=ts, stream=f"{host}\0{caller}", host=host)


# ---------------------------------------------------------------------------------- reports

_KINDS = {
    "possible circular locking dependency detected": "circular",
    "possible recursive locking detected": "recursive",
    "inconsistent lock state": "inconsistent_state",
    "possible irq lock inversion dependency detected": "irq_inversion",
    "bad unlock balance detected": "bad_unlock",
    "lock held when returning to user space": "held_returning_to_user",
}
# the whole line, as each kernel prints it: `WARNING: ...`, `[ INFO: ... ]`, `[ BUG: ...! ]`
_HEADLINE = re.compile(r"^(?:WARNING: |INFO: |BUG: |\[ (?:INFO|BUG): )?(?P<what>" + "|".join(map(re.escape, _KINDS))
                       + r"|(?:HARD|SOFT)IRQ(?:-READ)?-safe -> (?:HARD|SOFT)IRQ(?:-READ)?-unsafe lock order detected)"
                       r"!?(?: \])?$")

_N = r"(?P<name>(?:(?!\)\{).)+)"                       # a class name: may hold parentheses
_U = r"\{(?P<usage>[^{}]*)\}(?:-\{[^{}]*\})?"          # `{+.+.}` and newer kernels' `-{2:2}`
_LOCK = re.compile(rf"^(?P<slot>#\d{{1,4}}:\s+)?(?:(?P<inst>[0-9a-f]{{8,16}})\s+)?\({_N}\){_U}, at: (?P<site>.*)$")
_LOCK_NAME = re.compile(rf"^\({_N}\){_U}$")
_ENTRY = re.compile(rf"^-> #(?P<k>\d{{1,6}}) \({_N}\){_U}:?$")
_BLOCK = re.compile(rf"^-> \({_N}\){_U}(?: ops: \d+)? \{{$")
_SCENARIO_OP = re.compile(r"^(lock|rlock|sync)\((.+)\);$")
_FRAME = re.compile(r"^(?:\[<?[0-9a-fA-F]{4,16}>?\]\s*)*(?P<unreliable>\?\s+)?(?P<fn>[A-Za-z_.$][\w.$]*)"
                    r"(?:(?P<off>\+0x[0-9a-f]+/0x[0-9a-f]+)(?:\s+\[[\w.-]+\])?(?:\s+\S+:\d+)?|\s+\S+\.[chS]:\d+)"
                    r"(?:\s+\[inline\])?$")
_MARK_CHAIN = re.compile(r"^the existing dependency chain \(in reverse order\) is:$")
_TASK = r"(?P<task>\S.*?)(?: \[(?P<ctx>HC\d{1,9}\[\d{1,9}\]:SC\d{1,9}\[\d{1,9}\]:HE\d:SE\d)\])?"
_MARKS = [(name, re.compile(rx)) for name, rx in (
    ("acquire", rf"^{_TASK} is trying to acquire(?: lock)?:$"),
    ("takes", rf"^{_TASK} takes:$"),
    ("changed", rf"^{_TASK} just changed the state of lock:$"),
    ("release", rf"^{_TASK} is trying to release lock \((?P<name>.+)\) at:$"),
    ("leaving", rf"^{_TASK} is leaving the kernel with locks still held!$"),
    ("holding", r"^(?:but task is already holding lock|and this task is already holding):$"),
    ("safe", r"^but this new dependency connects an? (?P<irq>\S+)-irq-safe lock:$"),
    ("unsafe", r"^to an? (?P<irq>\S+)-irq-unsafe lock:$"),
    ("safe_at", r"^\.\.\. which became \S+-irq-safe at:$"),
    ("unsafe_at", r"^\.\.\. which became \S+-irq-unsafe at:$"),
    ("forwards", r"^but this lock took another, (?P<irq>\S+)-unsafe lock in the past:$"),
    ("backwards", r"^but this lock was taken by another, (?P<irq>\S+)-safe lock in the past:$"),
    ("transition", r"^inconsistent \{(?P<a>[^}]*)\} -> \{(?P<b>[^}]*)\} usage\.$"),
    ("registered", r"^\{[^}]*\} state was registered at:$"),
    ("chain", _MARK_CHAIN.pattern),
    ("chain_exists", r"^Chain exists of:$"),
    ("scenario", r"^Possible (?:interrupt )?unsafe locking scenario:$"),
    ("deadlock", r"^\*\*\* DEADLOCK \*\*\*$"),
    ("held_list", r"^(?:\d{1,4} locks? held by .*|no locks held by .*):$"),
    ("deps_back", r"^the dependencies between \S+-irq-safe lock and the holding lock:$"),
    ("deps_fwd", r"^the dependencies between the lock to be acquired"),
    ("deps_inv", r"^the shortest dependencies between 2nd lock and 1st lock:$"),
    ("acquired_at", r"^\.\.\. acquired at:$"),
    ("usage_at", r"^(?:[A-Z]+-)?[A-Z_]+(?:-[A-Z]+)*(?:-[WR])? at:$|^INITIAL (?:READ )?USE at:$"),
    ("end", r"^(?:stack backtrace:|Call Trace:|-+\[ cut here \]-+)$"),
)]


@dataclass
class Lock:
    """A lock as a report names it: class name as printed, usage chars, where taken, address."""

    name: str
    usage: str = ""
    site: str = ""
    instance: int = 0


@dataclass
class Entry:
    """`-> #k (name){usage}:` and the stack printed under it."""

    k: int
    lock: Lock
    frames: list[str] = field(default_factory=list)
    ts_ns: int = 0


@dataclass
class Block:
    """One class of print_shortest_lock_dependencies, with its `... acquired at:` stack."""

    lock: Lock
    frames: list[str] | None = None  # None: no `acquired at` printed


@dataclass
class Report:
    kind: str
    headline: str
    path: str = ""
    line: int = 0
    host: str = ""
    ts_ns: int = 0
    task: str = ""
    irq: int | None = None             # the `[HC0[0]:SC0[0]:HE1:SE1]` context, as an irq mask
    acquire: Lock | None = None        # being acquired (circular, recursive, irq), or changing state
    held: Lock | None = None           # already held
    release: Lock | None = None        # bad_unlock
    entries: list[Entry] = field(default_factory=list)   # as printed, #N first
    chain_exists: list[str] = field(default_factory=list)
    scenario: list[tuple[str, str]] = field(default_factory=list)  # (lock|rlock|sync, name) in order
    held_locks: list[Lock] = field(default_factory=list)
    irq_class: str = ""                # "HARDIRQ", "SOFTIRQ-READ", ...
    transition: tuple[str, str] = ("", "")  # inconsistent_state: {a} -> {b}
    safe: Lock | None = None
    unsafe: Lock | None = None
    safe_frames: list[str] = field(default_factory=list)   # where safe became safe / {a} registered
    unsafe_frames: list[str] = field(default_factory=list)
    forwards: bool | None = None       # irq inversion bug: this lock is the safe one
    deps: dict[str, list[Block]] = field(default_factory=dict)  # "back", "fwd", "inv"

    def cycle(self) -> list[str]:
        """circular: the chain's names as printed, #0 first (what the entries show, in order)."""
        seen: dict[int, str] = {}
        for e in self.entries:
            seen.setdefault(e.k, e.lock.name)
        return [seen[k] for k in sorted(seen)]


class _Builder:
    """Reads the lines of one stream into one report at a time."""

    def __init__(self, report: Report) -> None:
        self.r = report
        self.expect = ""                        # which lock the next lock line names
        self.frames: list[str] | None = None    # where frame lines go
        self.section = ""
        self.done = False

    def feed(self, ln: Line) -> None:
        r, s = self.r, ln.text
        if self.done:
            return
        if not s:
            self.frames = None
            return
        for mark, rx in _MARKS:
            m = rx.match(s)
            if m:
                self._mark(mark, m, ln)
                return
        m = _ENTRY.match(s)
        if m:
            e = Entry(int(m.group("k")), Lock(m.group("name"), m.group("usage")), ts_ns=ln.ts_ns)
            r.entries.append(e)
            self.frames, self.expect, self.section = e.frames, "", "chain"
            return
        m = _BLOCK.match(s)
        if m and self.section in ("back", "fwd", "inv"):
            r.deps.setdefault(self.section, []).append(Block(Lock(m.group("name"), m.group("usage"))))
            self.frames = None
            return
        m = _LOCK.match(s)
        if m:
            lock = Lock(m.group("name"), m.group("usage"), _frame_text(m.group("site")),
                        int(m.group("inst"), 16) if m.group("inst") else 0)
            if self.section == "held_list" or m.group("slot"):
                r.held_locks.append(lock)
            elif self.expect in ("acquire", "held"):
                setattr(r, self.expect, lock)
                self.expect = ""
            return
        m = _LOCK_NAME.match(s)
        if m and self.expect in ("safe", "unsafe"):
            setattr(r, self.expect, Lock(m.group("name"), m.group("usage")))
            self.expect = ""
            return
        if self.section == "scenario":
            m = _SCENARIO_OP.match(s)
            if m:
                r.scenario.append((m.group(1), m.group(2)))
            return
        if self.expect == "chain_exists" and " --> " in s:
            r.chain_exists = [n.strip() for n in s.split(" --> ")]
            self.expect = ""
            return
        m = _FRAME.match(s)
        if m:
            if self.expect == "release_at" and r.release is not None:
                r.release.site = _frame_text(s)
                self.expect = ""
            elif self.frames is not None and not m.group("unreliable"):
                self.frames.append(_frame_text(s))

    def _mark(self, mark: str, m: re.Match[str], ln: Line) -> None:
        r = self.r
        self.frames = None
        if mark == "leaving":
            r.task = r.task or m.group("task")
        elif mark in ("acquire", "takes", "changed", "release"):
            r.task = r.task or m.group("task")
            if m.group("ctx") and r.irq is None:
                r.irq = _irq_mask(m.group("ctx"))
            self.expect = "acquire"
            if mark == "release":
                r.release, self.expect = Lock(m.group("name")), "release_at"
        elif mark == "holding":
            self.expect = "held"
        elif mark in ("safe", "unsafe"):
            r.irq_class = r.irq_class or m.group("irq")
            self.expect = mark
        elif mark in ("safe_at", "registered"):
            self.frames = r.safe_frames
        elif mark == "unsafe_at":
            self.frames = r.unsafe_frames
        elif mark in ("forwards", "backwards"):
            r.irq_class, r.forwards = m.group("irq"), mark == "forwards"
            self.expect = "unsafe" if mark == "forwards" else "safe"
        elif mark == "transition":
            r.transition = (m.group("a").upper(), m.group("b").upper())
        elif mark in ("chain", "scenario", "held_list"):
            self.section, self.expect = mark, ""
        elif mark == "chain_exists":
            self.expect = "chain_exists"
        elif mark == "deadlock":
            self.section = ""
        elif mark.startswith("deps_"):
            self.section = mark[5:]
        elif mark == "acquired_at":
            blocks = r.deps.get(self.section)
            if blocks:
                blocks[-1].frames = self.frames = []
        elif mark == "end":
            self.done = True


def _irq_mask(ctx: str) -> int:
    """`HC0[0]:SC1[1]:HE1:SE0` (print_irqtrace_events' context) -> the `irq` column's mask."""
    hc, sc, he, se = (int(x) for x in re.findall(r"(?:HC|SC|HE|SE)(\d+)", ctx))
    return (HARDIRQ if hc else 0) | (SOFTIRQ if sc else 0) | (0 if he else HARDIRQS_OFF) | (0 if se else SOFTIRQS_OFF)


def _frame_text(site: str) -> str:
    """A frame without addresses: `func+0x2d/0x300` (and what follows it on the line)."""
    return re.sub(r"^(?:\[<?[0-9a-fA-F]+>?\]\s*)+", "", site.strip())


def _kind(text: str) -> tuple[str, str] | None:
    """(kind, headline) when the line is a lockdep report's headline."""
    m = _HEADLINE.match(text) if len(text) < 120 else None
    if m is None:
        return None
    what = m.group("what")
    return _KINDS.get(what, "irq_inversion"), what


def parse_text(text: str, path: str = "", host: str = "") -> list[Report]:
    """Every lockdep report in a log, in the order their headlines appear. Never raises.

    `host` given is every report's host; else a syslog prefix's host, else ""."""
    open_: dict[str, _Builder] = {}
    reports: list[Report] = []
    for no, raw in enumerate(text.splitlines(), 1):
        ln = split_line(no, raw)
        if ln is None:
            continue
        builder = open_.get(ln.stream)
        found = _kind(ln.text)
        headless = found is None and _MARK_CHAIN.match(ln.text) is not None and (
            builder is None or builder.done or builder.r.kind != "circular" or bool(builder.r.entries))
        if found is not None or headless:
            kind, headline = found or ("circular", "possible circular locking dependency detected")
            rep = Report(kind=kind, headline=headline, path=path, line=no, host=host or ln.host, ts_ns=ln.ts_ns)
            reports.append(rep)
            builder = open_[ln.stream] = _Builder(rep)
            if not headless:
                continue
        if builder is not None:
            builder.feed(ln)
    for r in reports:
        if r.forwards is not None and r.acquire is not None:  # the lock that just changed state
            if r.forwards:
                r.safe = r.safe or r.acquire
            else:
                r.unsafe = r.unsafe or r.acquire
    return reports


# ---------------------------------------------------------------------------------- modes

_INTERNAL = {"lock_acquire", "__lock_acquire", "validate_chain", "check_prev_add", "check_prevs_add",
             "check_noncircular", "lock_sync", "lock_acquired"}
_READ = {"down_read", "down_read_killable", "down_read_interruptible", "down_read_nested", "down_read_trylock",
         "down_read_non_owner", "__down_read", "__down_read_common", "__down_read_killable", "__down_read_trylock",
         "rwsem_down_read_slowpath", "rwsem_down_read_failed", "percpu_down_read", "__percpu_down_read",
         "percpu_down_read_trylock", "cpus_read_lock", "get_online_cpus", "sb_start_write", "__sb_start_write",
         "sb_start_pagefault", "sb_start_intwrite", "mmap_read_lock", "mmap_read_lock_killable",
         "inode_lock_shared", "i_mmap_lock_read", "anon_vma_lock_read", "filemap_invalidate_lock_shared"}
_RECURSIVE_READ = {"_raw_read_lock", "_raw_read_lock_bh", "_raw_read_lock_irq", "_raw_read_lock_irqsave",
                   "__raw_read_lock", "__raw_read_lock_bh", "__raw_read_lock_irq", "__raw_read_lock_irqsave",
                   "_raw_read_trylock", "queued_read_lock", "queued_read_lock_slowpath", "rcu_read_lock",
                   "rcu_read_lock_bh", "rcu_read_lock_sched", "rcu_lock_acquire", "srcu_read_lock",
                   "__srcu_read_lock", "lock_map_acquire_read"}


def _stack_mode(frames: list[str]) -> int | None:
    """The mode the stack's lock primitive takes: 1 rwsem/percpu-rwsem read, 2 rwlock/RCU read."""
    looked = 0
    for frame in frames:
        fn = frame.split("+", 1)[0].split(" ", 1)[0].split(".", 1)[0]
        if fn in _INTERNAL:
            continue
        if fn in _RECURSIVE_READ:
            return 2
        if fn in _READ:
            return 1
        looked += 1
        if looked == 3:
            break
    return None


def _read_only(usage: str) -> bool:
    """lockdep's usage chars (write, read per irq state): only read usage ever seen."""
    if len(usage) not in (4, 6) or any(c not in ".-+?" for c in usage):
        return False
    return all(c == "." for c in usage[0::2]) and any(c != "." for c in usage[1::2])


def _taken_mode(frames: list[str], usage: str, op: str = "") -> int:
    mode = _stack_mode(frames)
    if op == "rlock":
        return mode or 1
    if mode is not None:
        return mode
    return 1 if _read_only(usage) else 0


def _held_mode(usage: str, op: str = "") -> int:
    return 1 if op == "rlock" or _read_only(usage) else 0


# ---------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Acq:
    """One row of a synthetic thread."""

    op: int
    lock: str          # class name as printed
    mode: int = 0
    irq: int = IRQS_OFF
    site: str = ""
    instance: int = 0


@dataclass(frozen=True)
class Script:
    """One synthetic thread; `pair`: it makes one dependency (acquires two classes)."""

    ts_ns: int
    rows: tuple[Acq, ...]
    pair: bool = False


@dataclass(frozen=True)
class Edge:
    """A dependency `held -> taken` a report shows, with the stack that took `taken`."""

    held: Lock
    taken: Lock
    frames: tuple[str, ...]
    held_mode: int
    taken_mode: int
    ts_ns: int


def _edge(held: Lock, taken: Lock, frames: list[str] | None, ts_ns: int, held_op: str = "",
          taken_op: str = "") -> Edge:
    return Edge(held, taken, tuple(frames or ()), _held_mode(held.usage, held_op),
                _taken_mode(frames or [], taken.usage, taken_op), ts_ns)


def _pair(e: Edge) -> Script:
    h, t = e.held, e.taken
    return Script(e.ts_ns, (Acq(ACQUIRE, h.name, e.held_mode, site=h.site, instance=h.instance),
                            Acq(ACQUIRE, t.name, e.taken_mode, site="\n".join(e.frames) or t.site,
                                instance=t.instance),
                            Acq(RELEASE, t.name, instance=t.instance),
                            Acq(RELEASE, h.name, instance=h.instance)), pair=True)


def circular_edges(r: Report) -> list[Edge]:
    """The chain #0 -> #1 -> ... -> #N as far as the report holds it, then the new dependency
    #N -> #0 that closes the cycle (so the engine, like lockdep, names #0 first)."""
    by_k: dict[int, Entry] = {}
    for e in r.entries:
        by_k.setdefault(e.k, e)
    ops = [op for op, _ in r.scenario]
    held_op, taken_op = (ops[0], ops[-1]) if len(ops) >= 2 else ("", "")
    names = {k: Lock(e.lock.name, e.lock.usage) for k, e in by_k.items()}
    if 0 not in names and r.acquire is not None:
        names[0] = Lock(r.acquire.name, r.acquire.usage)
    edges = [_edge(names[k - 1], names[k], by_k[k].frames, by_k[k].ts_ns or r.ts_ns)
             for k in sorted(by_k) if k >= 1 and k - 1 in names]
    if r.acquire is not None and r.held is not None:
        e0 = by_k.get(0)
        frames = e0.frames if e0 is not None and e0.lock.name == r.acquire.name else []
        edges.append(_edge(r.held, r.acquire, frames, (e0.ts_ns if e0 else 0) or r.ts_ns, held_op, taken_op))
    # lockdep found a strong cycle: a recursive read of a lock then held shared cannot be in it,
    # so a read its stack made look recursive was a plain read
    for i, e in enumerate(edges):
        nxt = edges[(i + 1) % len(edges)]
        if e.taken_mode == 2 and nxt.held.name == e.taken.name and nxt.held_mode:
            edges[i] = Edge(e.held, e.taken, e.frames, e.held_mode, 1, e.ts_ns)
    return edges


def _connect(edges: list[Edge], start: Lock | None, end: Lock | None, ts_ns: int) -> list[Edge]:
    """A path from `start` to `end` through `edges`: where the report lost a piece of it, a direct
    edge stands in for it (it keeps what reaches what, which is what an irq finding needs)."""
    out = list(edges)
    if not out:
        return [_edge(start, end, None, ts_ns)] if start and end and start.name != end.name else []
    if start and out[0].held.name != start.name:
        out.insert(0, _edge(start, out[0].held, None, ts_ns))
    if end and out[-1].taken.name != end.name:
        out.append(_edge(out[-1].taken, end, None, ts_ns))
    return out


def irq_path(r: Report) -> list[Edge]:
    """The dependencies safe ~> unsafe an irq report prints, completed from its header."""
    ts = r.ts_ns
    if r.forwards is not None:     # print_irq_inversion_bug: one list, printed from the far end
        blocks = list(r.deps.get("inv", []))
        if r.forwards:             # unsafe .. safe; a block's stack took its own lock
            blocks.reverse()
            path = [_edge(a.lock, b.lock, b.frames, ts) for a, b in zip(blocks, blocks[1:])]
        else:                      # safe .. unsafe; a block's stack took the next lock under it
            path = [_edge(a.lock, b.lock, a.frames, ts) for a, b in zip(blocks, blocks[1:])]
        chain = r.chain_exists
        if not path and r.safe and r.unsafe and len(chain) == 3 and chain[0] == r.safe.name \
                and chain[2] == r.unsafe.name:   # safe --> middle --> unsafe: reachability
            path = _connect([], r.safe, Lock(chain[1]), ts) + _connect([], Lock(chain[1]), r.unsafe, ts)
        return _connect(path, r.safe, r.unsafe, ts)
    # print_bad_irq_dependency: safe ~> held (backwards), held -> acquired (new), acquired ~> unsafe
    back, fwd = r.deps.get("back", []), list(reversed(r.deps.get("fwd", [])))
    if r.held is None or r.acquire is None:
        return []
    if back and back[-1].lock.name != r.held.name:
        back = []
    if fwd and fwd[0].lock.name != r.acquire.name:
        fwd = []
    old_style = bool(back) and back[0].frames is not None  # before print_shortest_lock_dependencies_backwards
    head = [_edge(a.lock, b.lock, a.frames if old_style else b.frames, ts) for a, b in zip(back, back[1:])]
    tail = [_edge(a.lock, b.lock, b.frames, ts) for a, b in zip(fwd, fwd[1:])]
    new = _edge(r.held, r.acquire, fwd[0].frames if fwd else None, ts)
    return _connect(head, r.safe, r.held, ts) + _connect(tail, r.acquire, r.unsafe, ts) + [new]


_USAGE_BITS = {  # usage bit -> (irq mask that sets that bit and no other, mode)
    "IN-HARDIRQ-W": (HARDIRQ | IRQS_OFF, 0), "IN-HARDIRQ-R": (HARDIRQ | IRQS_OFF, 1),
    "HARDIRQ-ON-W": (SOFTIRQS_OFF, 0), "HARDIRQ-ON-R": (SOFTIRQS_OFF, 1),
    "IN-SOFTIRQ-W": (SOFTIRQ | IRQS_OFF, 0), "IN-SOFTIRQ-R": (SOFTIRQ | IRQS_OFF, 1),
    "SOFTIRQ-ON-W": (0, 0), "SOFTIRQ-ON-R": (0, 1),  # softirqs on implies hardirqs on, as in lockdep
}


def _marks(irq: int, mode: int) -> set[str]:
    """The usage bits an acquisition marks (docs/semantics.md, lockdep's mark_usage)."""
    rw = "R" if mode else "W"
    hard_on = not irq & (HARDIRQ | HARDIRQS_OFF)
    bits = {f"IN-HARDIRQ-{rw}"} if irq & HARDIRQ else set()
    bits |= {f"HARDIRQ-ON-{rw}"} if hard_on else set()
    bits |= {f"IN-SOFTIRQ-{rw}"} if irq & SOFTIRQ else set()
    return bits | ({f"SOFTIRQ-ON-{rw}"} if hard_on and not irq & (SOFTIRQ | SOFTIRQS_OFF) else set())


def _usage(lock: Lock, bit: str, frames: list[str], ts_ns: int, context: int | None = None) -> Script:
    irq, mode = _USAGE_BITS[bit]
    if context is not None and bit in _marks(context, mode):
        irq = context  # the context the report shows, when it sets that bit
    return Script(ts_ns, (Acq(ACQUIRE, lock.name, mode, irq, "\n".join(frames) or lock.site, lock.instance),
                          Acq(RELEASE, lock.name, instance=lock.instance)))


def _irq_bits(r: Report) -> tuple[str, str]:
    """(safe usage bit, unsafe usage bit) of an irq report, from its irq class and the usages."""
    state = "SOFTIRQ" if r.irq_class.upper().startswith("SOFTIRQ") else "HARDIRQ"
    col = 0 if state == "HARDIRQ" else 2
    su = r.safe.usage if r.safe is not None and len(r.safe.usage) in (4, 6) else ""
    uu = r.unsafe.usage if r.unsafe is not None and len(r.unsafe.usage) in (4, 6) else ""
    # the irq class names the usage of the safe lock, or of the other one when it is unsafe
    read = "-READ" in r.irq_class.upper()
    safe_read = su[col] not in "-?" and su[col + 1] in "-?" if su else read and r.forwards is not True
    unsafe_read = uu[col] not in "+?" and uu[col + 1] in "+?" if uu else read and r.forwards is True
    unsafe_read = unsafe_read and not safe_read  # two reads never conflict
    return f"IN-{state}-{'R' if safe_read else 'W'}", f"{state}-ON-{'R' if unsafe_read else 'W'}"


def report_scripts(r: Report) -> list[Script]:
    """The synthetic threads that make the engine find what the report shows."""
    ts = r.ts_ns
    if r.kind == "circular":
        return [_pair(e) for e in circular_edges(r)]
    if r.kind == "recursive" and r.acquire is not None:
        held = r.held or r.acquire
        # the held locks in their order, the others as trylocks: shown as held, adding no dependency
        stack = list(r.held_locks)
        first = next((i for i, lk in enumerate(stack) if lk.name == held.name), None)
        if first is None:
            stack, first = [*stack, held], len(stack)
        rows = [Acq(ACQUIRE if i == first else TRY_ACQUIRE, lk.name, site=lk.site, instance=lk.instance)
                for i, lk in enumerate(stack)]
        rows.append(Acq(ACQUIRE, r.acquire.name, site=r.acquire.site, instance=r.acquire.instance))
        return [Script(ts, (*rows, *(Acq(RELEASE, a.lock, instance=a.instance) for a in reversed(rows))))]
    if r.kind == "bad_unlock" and r.release is not None:
        ctx = [lk for lk in r.held_locks if lk.name != r.release.name]
        return [Script(ts, (*(Acq(TRY_ACQUIRE, lk.name, site=lk.site, instance=lk.instance) for lk in ctx),
                            Acq(RELEASE, r.release.name, site=r.release.site),
                            *(Acq(RELEASE, lk.name, instance=lk.instance) for lk in reversed(ctx))))]
    if r.kind == "inconsistent_state" and r.acquire is not None:
        a, b = r.transition
        if a in _USAGE_BITS and b in _USAGE_BITS:
            return [_usage(r.acquire, a, r.safe_frames, ts), _usage(r.acquire, b, [], ts, r.irq)]
    if r.kind == "irq_inversion":
        if r.safe is not None and r.unsafe is not None:
            safe_bit, unsafe_bit = _irq_bits(r)
            return ([_usage(r.safe, safe_bit, r.safe_frames, ts), _usage(r.unsafe, unsafe_bit, r.unsafe_frames, ts)]
                    + [_pair(e) for e in irq_path(r)])
    return []


EVENT_SCHEMA = pa.schema([
    ("ts_ns", pa.int64()), ("tid", pa.int64()), ("op", pa.uint8()), ("lock", pa.string()),
    ("mode", pa.uint8()), ("subclass", pa.uint8()), ("instance", pa.uint64()), ("irq", pa.uint8()),
    ("site", pa.string()), ("task", pa.string()), ("host", pa.string()),
])


def _utf8(s: str) -> str:
    return s if s.isascii() else s.encode("utf-8", "replace").decode("utf-8")


def to_batch(reports: list[Report], normalizer: Normalizer | None = None, host: str = "localhost") -> pa.RecordBatch:
    """Every report's synthetic threads as one batch of lock events (tids 1, 2, ... in order)."""
    norm = normalizer or Normalizer()
    cols: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}
    tid = 0
    for r in reports:
        for script in report_scripts(r):
            rows = [(a, *norm(a.lock)) for a in script.rows]
            rows = [(a, name, sub) for a, name, sub in rows if name]
            if script.pair and len({(name, sub) for a, name, sub in rows if a.op == ACQUIRE}) != 2:
                continue  # a lock lost to the rules, or two classes the rules made one
            if not rows:
                continue
            tid += 1
            for a, name, sub in rows:
                cols["ts_ns"].append(min(max(script.ts_ns, 0), 2**63 - 1))
                cols["tid"].append(tid)
                cols["op"].append(a.op)
                cols["lock"].append(_utf8(name))
                cols["mode"].append(a.mode)
                cols["subclass"].append(sub)
                cols["instance"].append(a.instance & 0xFFFF_FFFF_FFFF_FFFF)
                cols["irq"].append(a.irq)
                cols["site"].append(_utf8(a.site))
                cols["task"].append(_utf8(r.task))
                cols["host"].append(_utf8(r.host or host))
    return pa.RecordBatch.from_pydict(cols, schema=EVENT_SCHEMA)


# ---------------------------------------------------------------------------------- the command

class DmesgError(Exception):
    """Bad input, said in one line."""


@dataclass
class Log:
    path: str
    host: str
    sha256: str
    reports: list[Report]


def read_log(path: str, host: str | None = None) -> Log:
    """Read and parse one log (`-` is stdin); each report's host: `host`, else its syslog host,
    else the file's name without its extension."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise DmesgError(f"{path}: no such file") from None
    except OSError as exc:
        raise DmesgError(f"{path}: cannot read: {exc.strerror or exc}") from None
    file_host = host or (Path(path).stem if path != "-" else "") or "stdin"
    reports = parse_text(data.decode("utf-8", errors="replace"), path=path, host=host or "")
    for r in reports:
        r.host = r.host or file_host
    return Log(path, file_host, hashlib.sha256(data).hexdigest(), reports)


def analyze(logs: list[Log], normalizer: Normalizer | None = None) -> Engine:
    """All reports of all logs in one engine, in order."""
    eng = Engine()
    for log in logs:
        batch = to_batch(log.reports, normalizer, log.host)
        if batch.num_rows:
            eng.ingest(batch, host=log.host)
    return eng


def findings(logs: list[Log], normalizer: Normalizer | None = None) -> list[Alert]:
    """The merged graph's alerts, then each report's own cycle where the merged graph showed
    another cycle for it (the merged graph makes one finding per inversion; a report whose cycle
    closed there through another report's inversion is only its witness), with that report's
    evidence alone. Such a report-own finding is identified by its cycle's dependencies, as the
    report itself is."""
    alerts = analyze(logs, normalizer).alerts()
    cycles = {_cycle_key(a) for a in alerts if a.kind == "circular"}
    for log in logs:
        for r in log.reports:
            if r.kind != "circular":
                continue
            for a in analyze([Log(log.path, log.host, log.sha256, [r])], normalizer).alerts():
                key = _cycle_key(a)
                if a.kind != "circular" or key in cycles:
                    continue
                cycles.add(key)
                digest = hashlib.sha1(("circular\n" + "\n".join(sorted("\0".join(p) for p in key))).encode())
                alerts.append(replace(a, id="circular-" + digest.hexdigest()[:16], seq=len(alerts) + 1))
    return alerts


def _cycle_key(a: Alert) -> frozenset[tuple[str, str]]:
    return frozenset((link.held, link.taken) for link in a.links)


def _sources(logs: list[Log], norm: Normalizer) -> tuple[dict[tuple[str, str], set[str]], list[frozenset[tuple[str, str]]]]:
    """Each dependency's reports (`path:line`), and each circular report's own cycle."""
    where: dict[tuple[str, str], set[str]] = {}
    cycles = []
    for log in logs:
        for r in log.reports:
            if r.kind != "circular":
                continue
            pairs = {(norm.printed(e.held.name), norm.printed(e.taken.name)) for e in circular_edges(r)}
            pairs = {(a, b) for a, b in pairs if a != b and a and b}  # as to_batch keeps them
            for pair in pairs:
                where.setdefault(pair, set()).add(f"{r.path}:{r.line}")
            cycles.append(frozenset(pairs))
    return where, cycles


def main_dmesg(paths: list[str], json_out: bool, push_target: str | None = None, host: str | None = None,
               *, rules: str | None = None, normalize: bool = True) -> int:
    """`lockfleet dmesg FILE... [--json] [--push --target HOST:PORT] [--host NAME] [--rules FILE]
    [--no-normalize]`: print (or push) what the logs' lockdep reports make; returns the exit status."""
    try:
        norm = Normalizer.from_options(rules, defaults=normalize)
        logs = [read_log(p, host) for p in paths]
    except (DmesgError, RulesError) as exc:
        print(f"lockfleet dmesg: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if push_target is not None:
            return _push(logs, norm, push_target, host, json_out)
        alerts = findings(logs, norm)
        if json_out:
            print(json.dumps({"alerts": [a.to_dict() for a in alerts]}, indent=2))
            return EXIT_OK
        where, cycles = _sources(logs, norm)
        for a in alerts:
            pairs = frozenset((link.held, link.taken) for link in a.links)
            if a.kind == "circular" and pairs not in cycles:
                seen = sorted({s for p in pairs for s in where.get(p, ())})
                print(f"lockfleet: no single report shows this cycle; its dependencies come from "
                      f"{', '.join(seen) or 'the reports'}")
            print(a.render())
        print(_summary(logs, alerts))
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the contract: any other failure is status 1, one line
        from .channel import AgentError, Refused

        status = EXIT_USAGE if isinstance(exc, Refused) and exc.code == "INVALID_ARGUMENT" else EXIT_FAILURE
        text = " ".join(str(exc).split()) if isinstance(exc, AgentError) else f"{type(exc).__name__}: {exc}"
        print(f"lockfleet dmesg: {text}", file=sys.stderr)
        return status


def _summary(logs: list[Log], alerts: list[Alert]) -> str:
    kinds: dict[str, int] = {}
    for log in logs:
        for r in log.reports:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
    n = sum(kinds.values())
    what = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return (f"lockfleet dmesg: {n} lockdep report(s) in {len(logs)} file(s)" + (f" ({what})" if what else "")
            + f"; {len(alerts)} finding(s)")


def _push(logs: list[Log], norm: Normalizer, target: str, host: str | None, json_out: bool) -> int:
    from .push import push_batches

    pushed = []
    for log in logs:
        batch = to_batch(log.reports, norm, log.host)
        # the same log, host and rules are the same stream: pushing again applies nothing twice
        stream_id = hashlib.sha256(f"dmesg\0{log.host}\0{norm.fingerprint()}\0{log.sha256}".encode()).hexdigest()[:32]
        result = push_batches(target, log.host, stream_id, [batch] if batch.num_rows else [])
        pushed.append({"file": log.path, "host": log.host, "reports": len(log.reports), "events": batch.num_rows,
                       "duplicates": result.duplicates, "new_alerts": list(result.new_alerts)})
    if json_out:
        print(json.dumps({"pushed": pushed}, indent=2))
    else:
        for p in pushed:
            print(f"pushed {p['events']} events from {p['reports']} report(s) in {p['file']} for host {p['host']} "
                  f"to {target}" + (f"; new alerts: {', '.join(p['new_alerts'])}" if p["new_alerts"] else ""))
    return EXIT_OK


def _hostport(text: str) -> str:
    from ..address import hostport_arg

    return hostport_arg(text)


def add_dmesg_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `lockfleet dmesg` on the `lockfleet` sub-parsers; its `func` runs it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "dmesg", help="read lockdep reports from kernel logs and print the cycles of their merged graph",
        description="Read kernel logs (dmesg, console or syslog, with or without timestamps) holding lockdep "
                    "reports, merge the dependency chains of all reports into one graph and print the cycles, "
                    "including cycles that no single report shows, and the other findings the reports make "
                    "(recursive locking, irq inversion, inconsistent lock state, bad unlock balance).")
    p.add_argument("files", nargs="+", metavar="FILE", help="kernel logs to read ('-' for stdin)")
    p.add_argument("--json", action="store_true", help='print {"alerts": [alert.to_dict(), ...]} instead')
    p.add_argument("--host", default=None, metavar="NAME",
                   help="the host the logs come from (default: a syslog line's host, else the file's name)")
    p.add_argument("--rules", default=None, metavar="FILE",
                   help="more name rules, one `regex<TAB>replacement` a line, applied after the built-in ones")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep class names as printed (no built-in rules: `#N` per-boot suffixes stay)")
    p.add_argument("--push", action="store_true", help="send the events to the service instead of printing")
    p.add_argument("--target", metavar="HOST:PORT", type=_hostport, default=None,
                   help=f"with --push: address of the lockfleet service (default: {DEFAULT_TARGET})")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    target = (args.target or DEFAULT_TARGET) if args.push else None
    return main_dmesg(args.files, args.json, target, args.host, rules=args.rules, normalize=not args.no_normalize)
