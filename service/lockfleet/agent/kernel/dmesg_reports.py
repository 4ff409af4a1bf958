"""Lockdep reports read out of kernel-log text (the reading half of `lockfleet dmesg`, dmesg.py).

Splits lines from their prefixes (console timestamps, syzkaller caller ids, syslog prefixes,
`dmesg -x` levels, mail quoting), recognises the reports kernel/locking/lockdep.c prints (see
dmesg.py's header for the list) and collects each into a `Report`: its locks, chain entries,
held-lock blocks, stacks and scenario. Nothing here knows events or findings; nothing raises on
any text.
"""


from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ...events import (
    HARDIRQ,
    HARDIRQS_OFF,
    SOFTIRQ,
    SOFTIRQS_OFF,
)

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


