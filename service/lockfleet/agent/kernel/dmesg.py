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

Each report becomes lock events (docs/contract.md section 2) that make the real `lockfleet.Engine` find
what lockdep found: per dependency one synthetic thread (acquire held, acquire taken, release
both) whose `site` is the report's stack for it, with modes from rlock/usage/stack evidence and
irqs marked off (no usage bits); irq reports add the acquisitions that set the conflicting usage
bits. All reports of all files go into one engine, so cycles that no single report shows are found.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...engine import IRQ_RULE_DEFAULT, Engine
from ...errors import InputError
from ...events import (
    ACQUIRE,
    EXCLUSIVE,
    HARDIRQ,
    HARDIRQS_OFF,
    IRQS_OFF,
    RECURSIVE_READ,
    RELEASE,
    SCHEMA,
    SHARED,
    SOFTIRQ,
    SOFTIRQS_OFF,
    TRY_ACQUIRE,
    USAGE_IRQ,
)
from ...findings.model import Alert, Link, Occurrence, Printed, Usage, finding_id
from .class_names import Normalizer

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
    raw: str = ""      # the kernel's text with its own leading spaces (for printing it again)


def split_line(no: int, raw: str) -> Line | None:
    """One log line without its prefixes; None for a syslog line that is not the kernel's."""
    s, host, ts, prefixed = raw.rstrip("\r\n"), "", 0, False
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
        s, prefixed = s[m.end():], True
    else:
        m = _HUMAN_STAMP.match(s)
        if m:
            try:
                when = datetime.strptime(m.group(1), "%b %d %H:%M:%S %Y").replace(tzinfo=UTC)
                ts = int(when.timestamp()) * 1_000_000_000
            except ValueError:
                pass
            s, prefixed = s[m.end():], True
    caller = ""
    m = _CALLER.match(s)
    if m:
        caller, s, prefixed = m.group(1), s[m.end():], True
    own = s.rstrip()
    if prefixed and own.startswith(" "):
        own = own[1:]  # the one space a timestamp or caller id is followed by
    return Line(no=no, text=s.strip(), ts_ns=ts, stream=f"{host}\0{caller}", host=host, raw=own.expandtabs())


# ---------------------------------------------------------------------------------- reports

_KINDS = {
    "possible circular locking dependency detected": "circular",
    "possible recursive locking detected": "recursive",
    "inconsistent lock state": "inconsistent_state",
    "possible irq lock inversion dependency detected": "irq_inversion",
    "bad unlock balance detected": "bad_unlock",
    "held lock freed": "held_lock_freed",
    "lock held when returning to user space": "held_returning_to_user",
}
# the whole line, as each kernel prints it: `WARNING: ...`, `[ INFO: ... ]`, `[ BUG: ...! ]`
_HEADLINE = re.compile(r"^(?:WARNING: |INFO: |BUG: |\[ (?:INFO|BUG): )?(?P<what>" + "|".join(map(re.escape, _KINDS))
                       + r"|(?:HARD|SOFT)IRQ(?:-READ)?-safe -> (?:HARD|SOFT)IRQ(?:-READ)?-unsafe lock order detected)"
                       r"!?(?: \])?$")

_N = r"(?P<name>(?:(?!\)\{).)+)"                       # a class name: may hold parentheses
_U = r"(?P<printed>\{(?P<usage>[^{}]*)\}(?:-\{[^{}]*\})?)"  # `{+.+.}` and newer kernels' `-{2:2}`
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
    ("freeing", rf"^{_TASK} is freeing memory (?P<mem>\S+), with a lock still held there!$"),
    ("holding", r"^(?:but task is already holding lock|and this task is already holding):$"),
    ("safe", r"^but this new dependency connects an? (?P<irq>\S+)-irq-safe lock:$"),
    ("unsafe", r"^to an? (?P<irq>\S+)-irq-unsafe lock:$"),
    ("safe_at", r"^\.\.\. which became \S+-irq-safe at:$"),
    ("unsafe_at", r"^\.\.\. which became \S+-irq-unsafe at:$"),
    ("forwards", r"^but this lock took another, (?P<irq>\S+)-unsafe lock in the past:$"),
    ("backwards", r"^but this lock was taken by another, (?P<irq>\S+)-safe lock in the past:$"),
    ("transition", r"^inconsistent \{(?P<a>[^}]*)\} -> \{(?P<b>[^}]*)\} usage\.$"),
    ("registered", r"^\{(?P<bit>[^}]*)\} state was registered at:$"),
    ("chain", _MARK_CHAIN.pattern),
    ("other_info", r"^other info that might help us debug this:$"),
    ("chain_exists", r"^Chain exists of:$"),
    ("scenario", r"^Possible (?:interrupt )?unsafe locking scenario:$"),
    ("deadlock", r"^\*\*\* DEADLOCK \*\*\*$"),
    ("held_list", r"^(?:(?P<n>\d{1,4}) locks? held by .*:|no locks held by .*[.:])$"),
    ("deps_back", r"^the dependencies between (?P<irq>\S+)-irq-safe lock and the holding lock:$"),
    ("deps_fwd", r"^the dependencies between the lock to be acquired(?: and (?P<irq>\S+)-irq-unsafe lock:)?$"),
    ("deps_inv", r"^the shortest dependencies between 2nd lock and 1st lock:$"),
    ("acquired_at", r"^\.\.\. acquired at:$"),
    ("usage_at", r"^(?:[A-Z]+-)?[A-Z_]+(?:-[A-Z]+)*(?:-[WR])? at:$|^INITIAL (?:READ )?USE at:$"),
    ("end", r"^(?:stack backtrace:|Call Trace:|-+\[ cut here \]-+)$"),
)]
# the section of the report (alerts.render.SECTIONS) each mark opens
_SECTION_OF = {
    "acquire": "task", "takes": "task", "changed": "task", "release": "task", "leaving": "task", "freeing": "task",
    "holding": "holding", "safe": "safe", "safe_at": "safe", "unsafe": "unsafe", "unsafe_at": "unsafe",
    "forwards": "other_lock", "backwards": "other_lock", "transition": "transition", "registered": "registered",
    "chain": "chain", "chain_exists": "scenario", "scenario": "scenario", "deadlock": "scenario",
    "held_list": "held_list", "deps_back": "deps", "deps_fwd": "deps", "deps_inv": "deps",
}
# marks after which the lines are a stack trace
_TRACE_MARKS = {"registered", "safe_at", "unsafe_at", "acquired_at", "usage_at", "release"}
# fixed lines of the kernel's reports that carry nothing to parse (kept when printing it again)
_FIXED = re.compile(
    r"^(?:which lock already depends on the new lock\.|and interrupts could create inverse lock ordering between them\."
    r"|but there are no more locks to release!|May be due to missing lock nesting notation"
    r"|which would create a new lock dependency:|and \S+-irq-unsafe lock:|CPU0(?:\s+CPU1)?|-{4}(?:\s+-{4})?"
    r"|<Interrupt>|local_irq_disable\(\);|\}|\.\.\.|\.\.\. key\s+at: .*"
    r"|irq event stamp: \d+|(?:hard|soft)irqs last\s+(?:en|dis)abled at \(\d+\): .*"
    r"|\(.+\)\{[^{}]*\}(?:-\{[^{}]*\})? -> \(.+\)\{[^{}]*\}(?:-\{[^{}]*\})?)$")
_BANNER = re.compile(r"^(?:=+|-+)$")
_IDENT = re.compile(r"^\S+ #\S+(?: .*)?$|^(?:Not tainted|Tainted: .*)$")   # print_kernel_ident


@dataclass
class Lock:
    """A lock as a report names it: class name as printed, usage chars, where taken, address."""

    name: str
    usage: str = ""
    site: str = ""
    instance: int = 0
    printed: str = ""  # the usage as printed, with the wait type: `{+.+.}-{3:3}`


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
    kind: str                          # "" for a report without its header whose kind is not told yet
    headline: str
    path: str = ""
    line: int = 0
    host: str = ""
    ts_ns: int = 0
    task: str = ""
    irq: int | None = None             # the `[HC0[0]:SC0[0]:HE1:SE1]` context, as an irq mask
    acquire: Lock | None = None        # being acquired (circular, recursive, irq), or changing state, or freed
    held: Lock | None = None           # already held
    release: Lock | None = None        # bad_unlock
    entries: list[Entry] = field(default_factory=list)   # as printed, #N first
    chain_exists: list[str] = field(default_factory=list)
    scenario: list[tuple[str, str]] = field(default_factory=list)  # (lock|rlock|sync, name) in order
    interrupt: bool = False            # the scenario has an `<Interrupt>`
    irqs_off: bool = False             # ... and a `local_irq_disable();`
    held_locks: list[Lock] = field(default_factory=list)
    held_count: int | None = None      # what `N locks held by` says (0: `no locks held by`)
    irq_class: str = ""                # "HARDIRQ", "SOFTIRQ-READ", ...
    transition: tuple[str, str] = ("", "")  # inconsistent_state: {a} -> {b}
    registered: str = ""               # the usage of `{X} state was registered at:`
    safe: Lock | None = None
    unsafe: Lock | None = None
    safe_frames: list[str] = field(default_factory=list)   # where safe became safe / {a} registered
    unsafe_frames: list[str] = field(default_factory=list)
    forwards: bool | None = None       # irq inversion bug: this lock is the safe one
    deps: dict[str, list[Block]] = field(default_factory=dict)  # "back", "fwd", "inv"
    headless: bool = False             # the log lost the report's header
    ended: bool = False                # `stack backtrace:` (or the like) was reached
    deadlock: bool = False             # the scenario's `*** DEADLOCK ***` was printed
    lines: list[tuple[str, str]] = field(default_factory=list)  # (section, the kernel's text) as printed
    incomplete: str = ""               # why the report is not whole ("" when it is)

    def cycle(self) -> list[str]:
        """circular: the chain's names as printed, #0 first (what the entries show, in order)."""
        seen: dict[int, str] = {}
        for e in self.entries:
            seen.setdefault(e.k, e.lock.name)
        return [seen[k] for k in sorted(seen)]

    def sections(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.lines))


class _Builder:
    """Reads the lines of one stream into one report at a time."""

    def __init__(self, report: Report) -> None:
        self.r = report
        self.expect = ""                        # which lock the next lock line names
        self.frames: list[str] | None = None    # where frame lines go
        self.trace = False                      # frame lines here are a stack the report prints
        self.section = ""
        self.part = "header" if not report.headless else ""   # the printed section lines go to
        self.done = False

    def _keep(self, ln: Line) -> None:
        self.r.lines.append((self.part or "header", ln.raw))

    def feed(self, ln: Line) -> None:
        r, s = self.r, ln.text
        if self.done:
            return
        if not s:
            self.frames, self.trace = None, False
            if r.lines:
                self._keep(ln)
            return
        for mark, rx in _MARKS:
            m = rx.match(s)
            if m:
                self._mark(mark, m, ln)
                return
        m = _ENTRY.match(s)
        if m:
            lock = Lock(m.group("name"), m.group("usage"), printed=m.group("printed"))
            e = Entry(int(m.group("k")), lock, ts_ns=ln.ts_ns)
            r.entries.append(e)
            self.frames, self.expect, self.section, self.trace, self.part = e.frames, "", "chain", True, "chain"
            self._keep(ln)
            return
        m = _BLOCK.match(s)
        if m and self.section in ("back", "fwd", "inv"):
            lock = Lock(m.group("name"), m.group("usage"), printed=m.group("printed"))
            r.deps.setdefault(self.section, []).append(Block(lock))
            self.frames, self.trace = None, False
            self._keep(ln)
            return
        m = _LOCK.match(s)
        if m:
            lock = Lock(m.group("name"), m.group("usage"), _frame_text(m.group("site")),
                        int(m.group("inst"), 16) if m.group("inst") else 0, m.group("printed"))
            if self.section == "held_list" or m.group("slot"):
                r.held_locks.append(lock)
            elif self.expect in ("acquire", "held"):
                setattr(r, self.expect, lock)
                self.expect = ""
            else:
                return  # another task's lock line
            self._keep(ln)
            return
        m = _LOCK_NAME.match(s)
        if m and self.expect in ("safe", "unsafe"):
            setattr(r, self.expect, Lock(m.group("name"), m.group("usage"), printed=m.group("printed")))
            self.expect = ""
            self._keep(ln)
            return
        if self.section == "scenario":
            m = _SCENARIO_OP.match(s)
            if m:
                r.scenario.append((m.group(1), m.group(2)))
                self._keep(ln)
                return
            if s in ("<Interrupt>", "local_irq_disable();"):
                r.interrupt = r.interrupt or s == "<Interrupt>"
                r.irqs_off = r.irqs_off or s == "local_irq_disable();"
        if self.expect == "chain_exists" and " --> " in s:
            r.chain_exists = [n.strip() for n in s.split(" --> ")]
            self.expect = ""
            self._keep(ln)
            return
        m = _FRAME.match(s)
        if m:
            if self.expect == "release_at" and r.release is not None:
                r.release.site = _frame_text(s)
                self.expect = ""
                self._keep(ln)
            elif self.trace or self.frames is not None:
                if self.frames is not None and not m.group("unreliable"):
                    self.frames.append(_frame_text(s))
                self._keep(ln)
            return
        if _FIXED.match(s) or (self.part == "header" and (_BANNER.match(s) or _IDENT.match(s))):
            self._keep(ln)
        # anything else is another task's output interleaved with the report: not the report's

    def _mark(self, mark: str, m: re.Match[str], ln: Line) -> None:
        r = self.r
        self.frames, self.trace = None, mark in _TRACE_MARKS
        if mark == "end":
            # another task's warning interleaved before the report's own body is not its end
            if "task" in r.sections() or "held_list" in r.sections() or r.headless:
                self.done = r.ended = True
            return
        if mark == "other_info":
            self.part = "held_list" if r.kind == "bad_unlock" else "scenario"
        else:
            self.part = _SECTION_OF.get(mark, self.part)
        self._keep(ln)
        if mark in ("leaving",):
            r.task = r.task or m.group("task")
        elif mark in ("acquire", "takes", "changed", "release", "freeing"):
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
            if mark == "registered":
                r.registered = m.group("bit").upper()
        elif mark == "unsafe_at":
            self.frames = r.unsafe_frames
        elif mark in ("forwards", "backwards"):
            r.irq_class, r.forwards = m.group("irq"), mark == "forwards"
            self.expect = "unsafe" if mark == "forwards" else "safe"
        elif mark == "transition":
            r.transition = (m.group("a").upper(), m.group("b").upper())
        elif mark in ("chain", "scenario", "held_list"):
            self.section, self.expect = mark, ""
            if mark == "held_list":
                r.held_count = int(m.group("n")) if m.group("n") else 0
        elif mark == "chain_exists":
            self.expect = "chain_exists"
        elif mark == "deadlock":
            self.section, r.deadlock = "", True
        elif mark.startswith("deps_"):
            self.section = mark[5:]
            if m.groupdict().get("irq"):
                r.irq_class = r.irq_class or m.group("irq")
        elif mark == "acquired_at":
            blocks = r.deps.get(self.section)
            if blocks:
                blocks[-1].frames = self.frames = []


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


_HEADLESS_START = re.compile(r"^(?:Chain exists of:|Possible (?:interrupt )?unsafe locking scenario:"
                             r"|other info that might help us debug this:|the dependencies between .*"
                             r"|the shortest dependencies between 2nd lock and 1st lock:)$")


def parse_text(text: str, path: str = "", host: str = "") -> list[Report]:
    """Every lockdep report in a log, in the order their headlines appear. Never raises.

    `host` given is every report's host; else a syslog prefix's host, else "". A report whose
    header the log lost starts at the first of its blocks the log holds (the dependency chain,
    the scenario, the dependency blocks) and is told apart by what they show."""
    open_: dict[str, _Builder] = {}
    last: dict[str, Line] = {}
    reports: list[Report] = []
    for no, raw in enumerate(text.splitlines(), 1):
        ln = split_line(no, raw)
        if ln is None:
            continue
        builder = open_.get(ln.stream)
        before, last[ln.stream] = last.get(ln.stream), ln
        found = _kind(ln.text)
        idle = builder is None or builder.done
        headless = found is None and (
            (_MARK_CHAIN.match(ln.text) is not None
             and (builder is None or builder.done or builder.r.kind != "circular" or bool(builder.r.entries)))
            or (idle and (_ENTRY.match(ln.text) is not None or _HEADLESS_START.match(ln.text) is not None)))
        if found is not None or headless:
            if found is not None:
                kind, headline = found
            elif _MARK_CHAIN.match(ln.text) or _ENTRY.match(ln.text):
                kind, headline = "circular", ""
            else:
                kind, headline = "", ""
            rep = Report(kind=kind, headline=headline, path=path, line=no, host=host or ln.host, ts_ns=ln.ts_ns,
                         headless=found is None)
            reports.append(rep)
            builder = open_[ln.stream] = _Builder(rep)
            if not headless:
                if before is not None and before.text and _BANNER.match(before.text):
                    rep.lines.append(("header", before.raw))
                rep.lines.append(("header", ln.raw))
                continue
        if builder is not None:
            builder.feed(ln)
    for r in reports:
        if r.forwards is not None and r.acquire is not None:  # the lock that just changed state
            if r.forwards:
                r.safe = r.safe or r.acquire
            else:
                r.unsafe = r.unsafe or r.acquire
        if r.headless:
            _rebuild_headless(r)
        r.incomplete = _incomplete(r)
    # a block start with nothing of a lockdep report after it (`other info that might help us
    # debug this:` also opens e.g. "suspicious RCU usage") is not a report
    return [r for r in reports if r.kind or r.scenario or r.entries or r.deps or r.chain_exists]


def _rebuild_headless(r: Report) -> None:
    """A report without its header: its kind and locks from the blocks the log holds."""
    if not r.kind:
        if r.entries:
            r.kind = "circular"
        elif r.deps.get("back") or r.deps.get("fwd") or r.deps.get("inv") or r.irqs_off:
            r.kind = "irq_inversion"
        elif r.interrupt:
            r.kind = "inconsistent_state"
        elif len(r.scenario) == 2 and r.scenario[0][1] == r.scenario[1][1]:
            r.kind = "recursive"
    ops = [name for _op, name in r.scenario]
    if r.kind == "circular":
        cyc = r.cycle()
        if cyc and r.acquire is None and r.held is None and sorted(e.k for e in r.entries) == list(range(len(cyc))):
            # print_circular_bug's entries run #N (held) .. #0 (being acquired): the closing
            # dependency #N -> #0 is the one the header would have named
            r.acquire, r.held = Lock(cyc[0], r.entries[-1].lock.usage), Lock(cyc[-1], r.entries[0].lock.usage)
    elif r.kind == "irq_inversion":
        back, fwd = r.deps.get("back", []), r.deps.get("fwd", [])
        if back and fwd:   # print_bad_irq_dependency: safe .. held, then unsafe .. to be acquired
            r.safe = r.safe or back[0].lock
            r.held = r.held or back[-1].lock
            r.unsafe = r.unsafe or fwd[0].lock
            r.acquire = r.acquire or fwd[-1].lock
        elif r.irqs_off and r.interrupt and len(ops) == 5:
            # lock(unsafe); local_irq_disable(); lock(safe); lock(middle); <Interrupt> lock(safe);
            r.unsafe, r.safe = r.unsafe or Lock(ops[0]), r.safe or Lock(ops[1])
            if ops[2] not in (ops[0], ops[1]):
                r.chain_exists = r.chain_exists or [ops[1], ops[2], ops[0]]
            r.forwards = False if r.forwards is None else r.forwards
        if not r.irq_class and r.registered:
            r.irq_class = _state(r.registered)
    elif r.kind == "inconsistent_state":
        if r.acquire is None and ops:
            r.acquire = Lock(ops[0])
    elif r.kind == "recursive":
        if r.acquire is None and ops:
            r.acquire, r.held = Lock(ops[-1]), Lock(ops[0])


def _state(usage: str) -> str:
    """The irq state a usage names: `IN-HARDIRQ-W` -> HARDIRQ, `{IN-NMI}` -> NMI; "" for INITIAL USE."""
    u = usage.upper().strip("{}")
    if u.startswith("INITIAL") or not u:
        return ""
    u = re.sub(r"^IN-|^ENABLED-|-ON(?=-|$)|-(?:W|R|READ)$", "", u)
    return re.sub(r"-(?:W|R|READ)$", "", u)


def _required(r: Report) -> tuple[str, ...]:
    """The sections the kernel prints for this report's kind (alerts.render.SECTIONS)."""
    if r.kind == "irq_inversion" and r.forwards is not None:
        return ("header", "task", "other_lock", "scenario", "held_list")
    return {
        "circular": ("header", "task", "holding", "chain", "scenario", "held_list"),
        "recursive": ("header", "task", "holding", "scenario", "held_list"),
        "bad_unlock": ("header", "task", "held_list"),
        "inconsistent_state": ("header", "transition", "task", "registered", "scenario", "held_list"),
        "irq_inversion": ("header", "task", "holding", "safe", "unsafe", "scenario", "held_list", "deps"),
        "held_lock_freed": ("header", "task", "held_list"),
    }.get(r.kind, ())


def missing_sections(r: Report) -> list[str]:
    have = set(r.sections())
    return [s for s in _required(r) if s not in have]


def _incomplete(r: Report) -> str:
    """Why a report is not whole, in words; "" when it is."""
    if r.kind == "held_returning_to_user":
        return ""
    why = []
    if not r.kind:
        why.append("its header was not printed and its blocks do not tell which kind of report it is")
    missing = missing_sections(r)
    if missing:
        from ...findings.render import SECTIONS

        why.append("the log does not hold " + ", ".join(SECTIONS.get(m, m) for m in missing))
    if r.kind == "circular" and r.entries:
        ks = sorted({e.k for e in r.entries})
        if ks != list(range(ks[-1] + 1)):
            why.append(f"the dependency chain is cut: entries {', '.join(f'#{k}' for k in ks)} of #0..#{ks[-1]}")
    if r.held_count is not None and r.held_count != len(r.held_locks):
        why.append(f"the held-locks list names {r.held_count} lock(s) but shows {len(r.held_locks)}")
    if "scenario" in r.sections() and r.scenario and not r.deadlock:
        why.append("the locking scenario is cut")
    if r.kind == "bad_unlock" and r.release is not None and not r.release.site:
        why.append("the release site was not printed")
    return "; ".join(why)


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
    """One synthetic thread; `pair`: it makes one dependency (acquires two classes); `own`: the
    report's task took it (the other dependencies a report shows were taken by tasks it does not
    name, so their events carry no task)."""

    ts_ns: int
    rows: tuple[Acq, ...]
    pair: bool = False
    own: bool = True


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
    for i, edge in enumerate(edges):
        nxt = edges[(i + 1) % len(edges)]
        if edge.taken_mode == RECURSIVE_READ and nxt.held.name == edge.taken.name and nxt.held_mode:
            edges[i] = Edge(edge.held, edge.taken, edge.frames, edge.held_mode, 1, edge.ts_ns)
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
    return _connect(head, r.safe, r.held, ts) + [new] + _connect(tail, r.acquire, r.unsafe, ts)


def _marks(irq: int, mode: int) -> set[str]:
    """The usage bits an acquisition marks (docs/semantics.md, lockdep's mark_usage)."""
    rw = "R" if mode else "W"
    hard_on = not irq & (HARDIRQ | HARDIRQS_OFF)
    bits = {f"IN-HARDIRQ-{rw}"} if irq & HARDIRQ else set()
    bits |= {f"HARDIRQ-ON-{rw}"} if hard_on else set()
    bits |= {f"IN-SOFTIRQ-{rw}"} if irq & SOFTIRQ else set()
    return bits | ({f"SOFTIRQ-ON-{rw}"} if hard_on and not irq & (SOFTIRQ | SOFTIRQS_OFF) else set())


def _usage(lock: Lock, bit: str, frames: list[str], ts_ns: int, context: int | None = None) -> Script:
    irq, mode = USAGE_IRQ[bit], SHARED if bit.endswith("-R") else EXCLUSIVE
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
        edges = circular_edges(r)
        closing = r.acquire is not None and r.held is not None
        return [replace(_pair(e), own=closing and i == len(edges) - 1) for i, e in enumerate(edges)]
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
        if a in USAGE_IRQ and b in USAGE_IRQ:
            return [_usage(r.acquire, a, r.safe_frames, ts), _usage(r.acquire, b, [], ts, r.irq)]
    if r.kind == "irq_inversion":
        if r.safe is not None and r.unsafe is not None:
            safe_bit, unsafe_bit = _irq_bits(r)
            return ([_usage(r.safe, safe_bit, r.safe_frames, ts), _usage(r.unsafe, unsafe_bit, r.unsafe_frames, ts)]
                    + [replace(_pair(e), own=e.taken is r.acquire) for e in irq_path(r)])
    return []


# ---------------------------------------------------------------------------------- each report's own finding

def _kind_of(held_mode: int, taken_mode: int) -> str:
    return ("E" if held_mode == EXCLUSIVE else "S") + ("R" if taken_mode == RECURSIVE_READ else "N")


def _link(e: Edge, r: Report, norm: Normalizer, task: str = "") -> Link:
    held, taken = norm.printed(e.held.name), norm.printed(e.taken.name)
    return Link(held, taken, (_kind_of(e.held_mode, e.taken_mode),),
                Occurrence(held, e.held_mode, site=e.held.site, instance=e.held.instance, host=r.host),
                Occurrence(taken, e.taken_mode, site="\n".join(e.frames) or e.taken.site, instance=e.taken.instance,
                           host=r.host, task=task, ts_ns=e.ts_ns, irq=(r.irq or 0) if task else 0),
                count=1, hosts=(r.host,), last_ts_ns=e.ts_ns)


def _printed(r: Report) -> Printed:
    sections: list[tuple[str, list[str]]] = []
    for section, text in r.lines:
        if sections and sections[-1][0] == section:
            sections[-1][1].append(text)
        else:
            sections.append((section, [text]))
    while sections and not any(sections[-1][1]):
        sections.pop()
    while sections and not sections[-1][1][-1]:
        sections[-1][1].pop()  # the blank line before `stack backtrace:`
    return Printed(r.kind, tuple((s, tuple(lines)) for s, lines in sections), tuple(missing_sections(r)),
                   r.incomplete, (f"{r.path}:{r.line}",))


def own_finding(r: Report, norm: Normalizer) -> Alert | None:
    """The finding the report itself states, as lockdep stated it (its locks, its kind, its text),
    or None when the log does not hold enough of it to name its locks."""
    p = norm.printed
    trigger_lock = r.release if r.kind == "bad_unlock" else r.acquire
    trigger = None
    if trigger_lock is not None and p(trigger_lock.name):
        trigger = Occurrence(p(trigger_lock.name), site=trigger_lock.site, instance=trigger_lock.instance,
                             host=r.host, task=r.task, ts_ns=r.ts_ns, irq=r.irq or 0)
    held = tuple(Occurrence(p(lk.name), site=lk.site, instance=lk.instance, host=r.host, task=r.task)
                 for lk in r.held_locks)
    links: tuple[Link, ...] = ()
    usages: tuple[Usage, ...] = ()
    irq_state = ""
    if r.kind == "circular":
        cyc = r.cycle()
        if len(cyc) < 2 or sorted({e.k for e in r.entries}) != list(range(len(cyc))):
            return None
        if r.acquire is None or r.held is None or r.acquire.name != cyc[0] or r.held.name != cyc[-1]:
            return None
        locks = tuple(p(n) for n in cyc)
        if not all(locks) or len(set(locks)) != len(locks):
            return None  # the name rules made two classes of the cycle one
        edges = circular_edges(r)
        links = tuple(_link(e, r, norm, r.task if i == len(edges) - 1 else "") for i, e in enumerate(edges))
        ident = "\n".join(sorted(f"{a}\0{b}" for a, b in zip(locks, locks[1:] + locks[:1])))
    elif r.kind in ("recursive", "bad_unlock", "held_lock_freed"):
        if trigger is None:
            return None
        locks = (trigger.lock,)
        ident = trigger.lock
    elif r.kind == "inconsistent_state":
        a, b = r.transition if any(r.transition) else (r.registered, "")
        irq_state = _state(b) or _state(a)
        if trigger is None or not irq_state:
            return None
        locks = (trigger.lock,)
        ident = f"{irq_state}\0{trigger.lock}"
        usages = tuple(Usage(trigger.lock, bit, occ) for bit, occ in (
            (a, Occurrence(trigger.lock, site="\n".join(r.safe_frames), host=r.host)), (b, trigger)) if bit)
    elif r.kind == "irq_inversion":
        irq_state = _state(r.irq_class)
        path = irq_path(r)
        if path:
            locks = tuple(p(n) for n in [e.held.name for e in path] + [path[-1].taken.name])
            links = tuple(_link(e, r, norm, r.task if e.taken is r.acquire else "") for e in path)
        elif r.safe is not None and r.unsafe is not None:
            locks = (p(r.safe.name), p(r.unsafe.name))
        else:
            return None
        if not all(locks) or not irq_state:
            return None
        ident = f"{irq_state}\0{locks[0]}\0{locks[-1]}"
    else:
        return None
    return Alert(id=finding_id(r.kind, ident), kind=r.kind, locks=locks, hosts=(r.host,), links=links,
                 trigger=trigger, held=held, usages=usages, irq_state=irq_state, count=1, first_ts_ns=r.ts_ns,
                 printed=_printed(r))


def _merge(a: Alert, b: Alert) -> Alert:
    """One finding shown by two reports: the first report's text, every source and host."""
    assert a.printed is not None and b.printed is not None
    printed = replace(a.printed, sources=a.printed.sources + b.printed.sources)
    return replace(a, hosts=tuple(sorted(set(a.hosts) | set(b.hosts))), count=a.count + b.count, printed=printed,
                   first_ts_ns=min(a.first_ts_ns, b.first_ts_ns))


def _utf8(s: str) -> str:
    return s if s.isascii() else s.encode("utf-8", "replace").decode("utf-8")


def to_batch(reports: list[Report], normalizer: Normalizer | None = None, host: str = "localhost") -> pa.RecordBatch:
    """Every report's synthetic threads as one batch of lock events (tids 1, 2, ... in order)."""
    norm = normalizer or Normalizer()
    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
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
                cols["task"].append(_utf8(r.task) if script.own else "")
                cols["host"].append(_utf8(r.host or host))
    return pa.RecordBatch.from_pydict(cols, schema=SCHEMA)


# ---------------------------------------------------------------------------------- the command

class DmesgError(InputError):
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


def analyze(logs: list[Log], normalizer: Normalizer | None = None, irq_rule: str = IRQ_RULE_DEFAULT) -> Engine:
    """All reports of all logs in one engine, in order."""
    eng = Engine(irq_rule=irq_rule, exact_hosts=max(4, len({log.host for log in logs})))   # name every host
    for log in logs:
        batch = to_batch(log.reports, normalizer, log.host)
        if batch.num_rows:
            eng.ingest(batch, host=log.host)
    return eng


def findings(logs: list[Log], normalizer: Normalizer | None = None, irq_rule: str = IRQ_RULE_DEFAULT) -> list[Alert]:
    """Every report's own finding, as the report stated it (one per finding: reports that show the
    same one are its sources), whatever the order of the logs; then what only the merged graph
    shows: cycles no single report shows, and irq findings through dependencies of several
    reports. `count` is, for every kind, the number of reports the finding is read from (for a
    merged-graph finding: the reports its dependencies come from)."""
    norm = normalizer or Normalizer()
    own: dict[str, Alert] = {}
    for log in logs:
        for r in log.reports:
            a = own_finding(r, norm)
            if a is not None:
                own[a.id] = _merge(own[a.id], a) if a.id in own else a
    alerts = [replace(a, seq=i + 1) for i, a in enumerate(own.values())]
    where = report_sources(logs, norm)
    printed_usage = _printed_usages(logs, norm)
    own_irq = {(a.irq_state, a.locks[-1]) for a in alerts if a.kind == "irq_inversion"}
    own_cycles = {_cycle_key(a) for a in alerts if a.kind == "circular"}
    for a in analyze(logs, norm, irq_rule).alerts():
        if a.id in own or a.kind not in ("circular", "irq_inversion", "inconsistent_state"):
            continue
        if a.kind == "circular" and _cycle_key(a) in own_cycles:
            continue  # a report's own cycle (the merged graph may know it as another inversion)
        if a.kind == "irq_inversion" and (a.irq_state, a.locks[-1]) in own_irq:
            continue
        srcs = {s for link in a.links for s in where.get((link.held, link.taken), ())}
        usage = {lock: printed_usage[lock] for lock in a.locks if lock in printed_usage}
        alerts.append(replace(a, count=len(srcs), seq=len(alerts) + 1, usage_strings=usage))
    return alerts


def _cycle_key(a: Alert) -> frozenset[tuple[str, str]]:
    return frozenset((link.held, link.taken) for link in a.links)


def report_sources(logs: list[Log], norm: Normalizer) -> dict[tuple[str, str], set[str]]:
    """Each dependency the reports show, with its reports (`path:line`)."""
    where: dict[tuple[str, str], set[str]] = {}
    for log in logs:
        for r in log.reports:
            if r.kind == "circular":
                edges = circular_edges(r)
            elif r.kind == "irq_inversion":
                edges = irq_path(r)
            else:
                continue
            for e in edges:
                pair = (norm.printed(e.held.name), norm.printed(e.taken.name))
                if pair[0] and pair[1] and pair[0] != pair[1]:
                    where.setdefault(pair, set()).add(f"{r.path}:{r.line}")
    return where


def _printed_usages(logs: list[Log], norm: Normalizer) -> dict[str, str]:
    """Each class's usage as the reports printed it (`{+.+.}-{3:3}`), the first one seen."""
    out: dict[str, str] = {}
    for log in logs:
        for r in log.reports:
            locks = [r.acquire, r.held, r.safe, r.unsafe, *(e.lock for e in r.entries), *r.held_locks,
                     *(b.lock for bs in r.deps.values() for b in bs)]
            for lk in locks:
                if lk is not None and lk.printed:
                    out.setdefault(norm.printed(lk.name), lk.printed)
    return out


def incomplete_reports(logs: list[Log], alerts: list[Alert]) -> list[dict[str, Any]]:
    """The reports the logs hold only in part, why, and the finding each still gave (or None)."""
    by_source = {s: a.id for a in alerts if a.printed is not None for s in a.printed.sources}
    out = []
    for log in logs:
        for r in log.reports:
            if r.incomplete:
                src = f"{r.path}:{r.line}"
                out.append({"file": r.path, "line": r.line, "kind": r.kind or "unknown", "reason": r.incomplete,
                            "finding": by_source.get(src)})
    return out


def summary(logs: list[Log], alerts: list[Alert], incomplete: int = 0) -> str:
    kinds: dict[str, int] = {}
    for log in logs:
        for r in log.reports:
            kinds[r.kind or "unknown"] = kinds.get(r.kind or "unknown", 0) + 1
    n = sum(kinds.values())
    what = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return (f"lockfleet dmesg: {n} lockdep report(s) in {len(logs)} file(s)" + (f" ({what})" if what else "")
            + f"; {len(alerts)} finding(s)" + (f"; {incomplete} incomplete report(s)" if incomplete else ""))


