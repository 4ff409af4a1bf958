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
import sys
from dataclasses import dataclass, replace
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
from .dmesg_reports import (  # noqa: F401 - parse_text, split_line, Line... are this module's API too
    Block,
    Entry,
    Line,
    Lock,
    Report,
    _state,
    missing_sections,
    parse_text,
    split_line,
)

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


