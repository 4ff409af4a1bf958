"""A finding as the kernel's lockdep would print it, followed by the fleet's evidence for it.

Each kind mirrors the function in kernel/locking/lockdep.c that prints it:

- circular: print_circular_bug (header and the chain entries, as print_circular_bug_entry)
  and print_circular_lock_scenario;
- recursive: print_deadlock_bug and print_deadlock_scenario;
- bad_unlock: print_unlock_imbalance_bug;
- inconsistent_state: print_usage_bug and print_usage_bug_scenario;
- irq_inversion: print_bad_irq_dependency, print_irq_lock_scenario and
  print_shortest_lock_dependencies (with print_lock_class_header);
- every list of held locks: lockdep_print_held_locks, each line as print_lock.

A finding read from a kernel log (`Alert.printed`) is not rebuilt: its report is printed again
line for line as the kernel printed it (sites, held-lock list, irq flags, usage strings and wait
types as they were), each section the log did not hold said to be unknown, an incomplete report
said to be incomplete.

Console timestamps, the irq event stamp, class keys and the final "stack backtrace:" are left
out: the service has none of them. The kernel's version line names lockfleet instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .. import __version__ as _VERSION
from ..events import EXCLUSIVE, HARDIRQ, HARDIRQS_OFF, SOFTIRQ, SOFTIRQS_OFF
from .evidence import Link, Occurrence, Printed

if TYPE_CHECKING:  # the model imports this module to give Alert its render()
    from .model import Alert

UNKNOWN = "<unknown>"
_CPU1 = " " * 31  # the column where print_*_scenario starts its CPU1 entries
_TABLE = ["       CPU0                    CPU1", "       ----                    ----"]


def render(alert: Alert) -> str:
    """The report for `alert`: the kernel's text for its kind, a blank line, the fleet section."""
    if alert.printed is not None:
        kernel = _as_printed(alert.printed)
    else:
        kernel = _KINDS.get(alert.kind, _other)(alert)
    while kernel and not kernel[-1]:
        kernel.pop()
    return "\n".join(kernel + [""] + _fleet(alert)) + "\n"


# ---- a report read from a kernel log: as printed ---------------------------------------------

# The sections of a lockdep report, in the order the kernel prints them, and what each holds.
SECTIONS = {
    "header": "the report's banner and headline",
    "task": "the task line and the lock it names",
    "holding": "the lock the task already holds",
    "other_lock": "the other lock of the inversion",
    "transition": "the usage transition",
    "safe": "the irq-safe lock and where it became irq-safe",
    "unsafe": "the irq-unsafe lock and where it became irq-unsafe",
    "registered": "where the earlier usage was registered",
    "chain": "the existing dependency chain",
    "scenario": "the locking scenario",
    "held_list": "the list of locks held",
    "deps": "the dependencies between the locks",
    "backtrace": "the stack backtrace",
}
SECTION_ORDER = {
    "circular": ("header", "task", "holding", "chain", "scenario", "held_list", "backtrace"),
    "recursive": ("header", "task", "holding", "scenario", "held_list", "backtrace"),
    "bad_unlock": ("header", "task", "held_list", "backtrace"),
    "inconsistent_state": ("header", "transition", "task", "registered", "scenario", "held_list", "backtrace"),
    "irq_inversion": ("header", "task", "holding", "other_lock", "safe", "unsafe", "scenario", "held_list",
                      "deps", "backtrace"),
    "held_lock_freed": ("header", "task", "held_list", "backtrace"),
}


def _unknown(section: str) -> str:
    return f"<unknown: {SECTIONS.get(section, section)} was not printed>"


def _as_printed(p: Printed) -> list[str]:
    """The report's own lines as printed; each missing section said unknown where it belongs."""
    order = SECTION_ORDER.get(p.kind, ())
    rank = {name: i for i, name in enumerate(order)}
    pending = sorted(p.missing, key=lambda m: rank.get(m, len(order)))
    out: list[str] = []
    for section, lines in p.sections:
        while pending and section in rank and rank.get(pending[0], len(order)) < rank[section]:
            out.append(_unknown(pending.pop(0)))
        out += lines
    out += [_unknown(m) for m in pending]
    if p.incomplete:
        out += ["", f"<incomplete report: {p.incomplete}>"]
    return out


# ---- pieces shared by every kind -------------------------------------------------------------


def _frames(site: str) -> list[str]:
    frames = [f.strip() for f in site.split("\n") if f.strip()]
    # An agent that sent no site leaves nothing to print, but the kernel always prints a frame
    # there, so say it is unknown rather than leave a hole in the report.
    return frames or [UNKNOWN]


def _trace(site: str, spaces: int) -> list[str]:
    """A stack, one frame a line, as print_lock_trace(trace, spaces - 1) indents it."""
    return [" " * spaces + f for f in _frames(site)]


def _task(o: Occurrence) -> str:
    return o.task or UNKNOWN


def _name(a: Alert, lock: str) -> str:
    """print_lock_name without its leading space: `(name){usage}`; a usage that comes with its
    braces is one a kernel log printed (with its wait type, `{+.+.}-{3:3}`), kept as it was."""
    usage = a.usage_strings.get(lock) or "...."
    return f"({lock}){usage}" if usage.startswith("{") else f"({lock}){{{usage}}}"


def _lock_line(a: Alert, o: Occurrence) -> str:
    """print_lock: instance, class and usage, and where the lock was taken (the first frame)."""
    return f"{o.instance & 0xFFFF_FFFF_FFFF_FFFF:016x} {_name(a, o.lock)}, at: {_frames(o.site)[0]}"


def _lock_op(o: Occurrence) -> str:
    return "lock" if o.mode == EXCLUSIVE else "rlock"


def _header(title: str, width: int = 0) -> list[str]:
    # The kernel's banners are fixed strings; most are as wide as the title, one is not.
    width = width or len(title)
    return ["=" * width, title, f"lockfleet {_VERSION}", "-" * width]


def _held_list(a: Alert, held: Sequence[Occurrence], task: str) -> list[str]:
    if not held:
        return [f"no locks held by {task}."]
    n = len(held)
    lines = [f"{n} lock{'s' if n > 1 else ''} held by {task}:"]
    return lines + [f" #{i}: {_lock_line(a, o)}" for i, o in enumerate(held)]


def _irq_context(irq: int) -> str:
    """The kernel's `[HC..:SC..:HE..:SE..]`, rebuilt from the event's irq mask."""
    hc, sc = int(bool(irq & HARDIRQ)), int(bool(irq & SOFTIRQ))
    he = 0 if irq & (HARDIRQ | HARDIRQS_OFF) else 1
    se = 0 if irq & (SOFTIRQ | SOFTIRQS_OFF) else 1
    return f"[HC{hc}[{hc}]:SC{sc}[{sc}]:HE{he}:SE{se}]"


def _locks(a: Alert) -> tuple[str, ...]:
    """The finding's locks, never empty, so a half-filled alert still renders."""
    if a.locks:
        return a.locks
    if a.links:
        return tuple(link.held for link in a.links)
    if a.trigger is not None:
        return (a.trigger.lock,)
    return (UNKNOWN,)


def _link(a: Alert, i: int) -> Link | None:
    return a.links[i] if 0 <= i < len(a.links) else None


def _site(link: Link | None) -> str:
    return link.first_taken.site if link else ""


# ---- circular: print_circular_bug ------------------------------------------------------------


def _circular(a: Alert) -> list[str]:
    locks = _locks(a)
    n = len(locks) - 1
    closing = a.links[-1] if a.links else None
    new = closing.first_taken if closing else Occurrence(lock=locks[0])
    held = closing.first_held if closing else Occurrence(lock=locks[n])
    task = _task(new)
    out = _header("WARNING: possible circular locking dependency detected")
    out += [f"{task} is trying to acquire lock:", _lock_line(a, new), ""]
    out += ["but task is already holding lock:", _lock_line(a, held), ""]
    out += ["which lock already depends on the new lock.", "", ""]
    out += ["the existing dependency chain (in reverse order) is:"]
    for k in range(n, -1, -1):
        # Entry #k shows how locks[k] was taken: under locks[k-1], or, for #0, under locks[n]
        # by the acquisition that closed the cycle.
        link = _link(a, k - 1) if k else closing
        out += ["", f"-> #{k} {_name(a, locks[k])}:"] + _trace(_site(link), 7)
    out += ["", "other info that might help us debug this:", ""]
    out += _circular_scenario(locks, new, held)
    return out + _held_list(a, a.held or (held,), task)


def _circular_scenario(locks: Sequence[str], new: Occurrence, held: Occurrence) -> list[str]:
    source, target = locks[0], locks[-1]
    # The kernel's `parent` is the lock the held one was taken under; in a 2-lock cycle that is
    # the source itself, and only then is there no chain to show.
    parent = locks[-2] if len(locks) > 1 else source
    out = []
    if len(locks) > 2:
        out += ["Chain exists of:", f"  {source} --> {parent} --> {target}", ""]
    out += [" Possible unsafe locking scenario:", "", *_TABLE]
    out += [f"  {_lock_op(held)}({target});", f"{_CPU1}lock({parent});", f"{_CPU1}lock({target});"]
    out += [f"  {_lock_op(new)}({source});"]
    return out + ["", " *** DEADLOCK ***", ""]


# ---- recursive: print_deadlock_bug -----------------------------------------------------------


def _recursive(a: Alert) -> list[str]:
    new = a.trigger or Occurrence(lock=_locks(a)[0])
    prev = next((o for o in reversed(a.held) if o.lock == new.lock), None) or Occurrence(lock=new.lock)
    task = _task(new)
    out = _header("WARNING: possible recursive locking detected")
    out += [f"{task} is trying to acquire lock:", _lock_line(a, new), ""]
    out += ["but task is already holding lock:", _lock_line(a, prev), ""]
    out += ["other info that might help us debug this:", " Possible unsafe locking scenario:", ""]
    out += ["       CPU0", "       ----", f"  lock({prev.lock});", f"  lock({new.lock});"]
    out += ["", " *** DEADLOCK ***", "", " May be due to missing lock nesting notation", ""]
    return out + _held_list(a, a.held or (prev,), task)


# ---- bad_unlock: print_unlock_imbalance_bug --------------------------------------------------


def _bad_unlock(a: Alert) -> list[str]:
    release = a.trigger or Occurrence(lock=_locks(a)[0])
    task = _task(release)
    out = _header("WARNING: bad unlock balance detected!")
    out += [f"{task} is trying to release lock ({release.lock}) at:"]
    # The kernel prints the one release address; a whole stack, when the agent sent one, is
    # kept because here nothing else (no stack backtrace) shows where the release came from.
    out += _frames(release.site)
    out += ["but there are no more locks to release!", "", "other info that might help us debug this:"]
    return out + _held_list(a, a.held, task)


# ---- inconsistent_state: print_usage_bug -----------------------------------------------------


def _inconsistent_state(a: Alert) -> list[str]:
    lock = _locks(a)[0]
    irq = a.irq_state or "HARDIRQ"
    prev = a.usages[0] if a.usages else None
    new = a.usages[1] if len(a.usages) > 1 else None
    prev_bit = prev.usage if prev else f"IN-{irq}-W"
    new_bit = new.usage if new else f"{irq}-ON-W"
    this = a.trigger or (new.first if new else Occurrence(lock=lock))
    task = _task(this)
    out = _header("WARNING: inconsistent lock state")
    out += [f"inconsistent {{{prev_bit}}} -> {{{new_bit}}} usage."]
    out += [f"{task} {_irq_context(this.irq)} takes:", _lock_line(a, this)]
    out += [f"{{{prev_bit}}} state was registered at:", *_trace(prev.first.site if prev else "", 2)]
    out += ["", "other info that might help us debug this:", " Possible unsafe locking scenario:", ""]
    out += ["       CPU0", "       ----", f"  lock({lock});", "  <Interrupt>", f"    lock({lock});"]
    out += ["", " *** DEADLOCK ***", ""]
    return out + _held_list(a, a.held, task)


# ---- irq_inversion: print_bad_irq_dependency -------------------------------------------------


def _new_dependency(a: Alert) -> int:
    """Index in `links` of the dependency lockdep would be adding (its prev -> next).

    The trigger's acquisition when it is one of the path's, else the dependency seen last."""
    if not a.links:
        return -1
    if a.trigger is not None:
        for i, link in enumerate(a.links):
            if link.taken == a.trigger.lock:
                return i
    return max(range(len(a.links)), key=lambda i: (a.links[i].first_taken.ts_ns, i))


def _usage_site(a: Alert, lock: str, in_irq: bool) -> str:
    """Where `lock` became irq-safe (an IN- bit) or irq-unsafe (an -ON- bit), "" if unknown."""
    want = [u for u in a.usages if u.usage.startswith("IN-") == in_irq]
    use = next((u for u in want if u.lock == lock), want[0] if want else None)
    return use.first.site if use else ""


def _irq_inversion(a: Alert) -> list[str]:
    irq = a.irq_state or "HARDIRQ"
    locks = _locks(a)
    if a.links and len(locks) != len(a.links) + 1:
        # The links are the path; a `locks` that disagrees with them cannot be indexed by them.
        locks = (a.links[0].held, *(link.taken for link in a.links))
    safe, unsafe = locks[0], locks[-1]
    j = _new_dependency(a)
    link = _link(a, j)
    if link:
        prev_lock, next_lock, prev, new = link.held, link.taken, link.first_held, link.first_taken
    else:
        prev_lock, next_lock = locks[-2] if len(locks) > 1 else safe, unsafe
        prev, new = Occurrence(lock=prev_lock), Occurrence(lock=next_lock)
    if a.trigger is not None and a.trigger.lock == next_lock:
        new = a.trigger
    middle = next_lock if prev_lock == safe else prev_lock
    safe_site, unsafe_site = _usage_site(a, safe, True), _usage_site(a, unsafe, False)
    task = _task(new)

    out = _header(f"WARNING: {irq}-safe -> {irq}-unsafe lock order detected", 53)
    out += [f"{task} {_irq_context(new.irq)} is trying to acquire:", _lock_line(a, new), ""]
    out += ["and this task is already holding:", _lock_line(a, prev)]
    out += ["which would create a new lock dependency:", f" {_name(a, prev.lock)} -> {_name(a, new.lock)}", ""]
    out += [f"but this new dependency connects a {irq}-irq-safe lock:", f" {_name(a, safe)}", ""]
    out += [f"... which became {irq}-irq-safe at:", *_trace(safe_site, 2), ""]
    out += [f"to a {irq}-irq-unsafe lock:", f" {_name(a, unsafe)}", ""]
    # The lone "..." is the kernel's own, printed before this trace.
    out += [f"... which became {irq}-irq-unsafe at:", "...", *_trace(unsafe_site, 2)]
    out += ["", "other info that might help us debug this:", ""]
    if middle != unsafe:
        out += ["Chain exists of:", f"  {safe} --> {middle} --> {unsafe}", ""]
    out += [" Possible interrupt unsafe locking scenario:", "", *_TABLE]
    out += [f"  lock({unsafe});", f"{_CPU1}local_irq_disable();", f"{_CPU1}lock({safe});", f"{_CPU1}lock({middle});"]
    out += ["  <Interrupt>", f"    lock({safe});", "", " *** DEADLOCK ***", ""]
    out += _held_list(a, a.held or (prev,), task)

    # Both halves of the path print from their far end (the leaf of the kernel's BFS) towards
    # the new dependency, each lock with the acquisition that links it one step nearer to it.
    out += ["", f"the dependencies between {irq}-irq-safe lock and the holding lock:"]
    for i in range(j + 1 if link else 0):
        out += _class_block(a, locks[i], j - i, _link(a, i))
    out += ["", f"the dependencies between the lock to be acquired and {irq}-irq-unsafe lock:"]
    for i in range(len(locks) - 1, j if link else len(locks) - 1, -1):
        out += _class_block(a, locks[i], i - j - 1, _link(a, i - 1))
    return out


def _class_block(a: Alert, lock: str, depth: int, link: Link | None) -> list[str]:
    """print_lock_class_header for one lock, then how it was acquired."""
    pad = " " * depth
    out = [f"{pad}-> {_name(a, lock)} {{"]
    for u in a.usages:
        if u.lock == lock:
            head = f"{pad}   {u.usage} at:"
            # The kernel counts the depth twice in this indent; so does its output.
            out += [head, *_trace(u.first.site, len(head) + depth + 1)]
    out += [f"{pad} }}", f"{pad} ... acquired at:", *_trace(_site(link), 3), ""]
    return out


def _other(a: Alert) -> list[str]:
    """A kind this renderer does not know: still a report, never an exception."""
    out = _header(f"WARNING: lockfleet finding of kind {a.kind or UNKNOWN}")
    return out + [f"locks: {', '.join(_locks(a))}"]


_KINDS = {
    "circular": _circular,
    "recursive": _recursive,
    "bad_unlock": _bad_unlock,
    "inconsistent_state": _inconsistent_state,
    "irq_inversion": _irq_inversion,
}


# ---- the fleet section -----------------------------------------------------------------------


def _time(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    try:
        stamp = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return f"{ts_ns} ns"
    return f"{stamp}.{ns:09d}Z"


def _times(count: int) -> str:
    return f"{count} time{'' if count == 1 else 's'}"


def _hosts(hosts: Sequence[str], count: int = 0) -> str:
    if count > len(hosts):   # past the hosts kept by name, the rest were counted by a sketch
        return f"~{count} host(s) (estimated): {', '.join(hosts)} and about {count - len(hosts)} more"
    return f"{len(hosts)} host(s): {', '.join(hosts) or 'none'}"


def _evidence(link: Link) -> str:
    o = link.first_taken
    first = f"first taken on {o.host or UNKNOWN} by {_task(o)} at {_time(o.ts_ns)}"
    return f"{first}, {_times(link.count)} on {_hosts(link.hosts, link.host_count)}"


def _fleet(a: Alert) -> list[str]:
    if a.printed is not None:
        srcs = a.printed.sources
        return [f"lockfleet: read from {len(srcs)} report(s) ({a.id}): {', '.join(srcs) or UNKNOWN}",
                f"  {_hosts(a.hosts)}"]
    out = [f"lockfleet: fleet evidence for this finding ({a.id}):"]
    if a.kind == "circular" and a.links:
        # Numbered as the chain entries above: #k is the acquisition whose stack entry #k shows.
        n = len(_locks(a)) - 1
        for k in range(n, -1, -1):
            link = _link(a, k - 1) if k else a.links[-1]
            if link:
                out.append(f"  #{k} {link.held} -> {link.taken}: {_evidence(link)}")
        if a.inversion is not None:
            out.append(f"  inversion {a.inversion[0]} -> {a.inversion[1]}: {a.count} cycle(s) closed through it "
                       f"(this one first), {len(a.witnesses)} kept: lockfleet alerts --witnesses {a.id}")
    else:
        out += [f"  {link.held} -> {link.taken}: {_evidence(link)}" for link in a.links]
        if a.trigger is not None:
            o = a.trigger
            out.append(f"  first on {o.host or UNKNOWN} by {_task(o)} at {_time(o.ts_ns)}")
        out.append(f"  {_times(a.count)} on {_hosts(a.hosts, a.host_count)}")
    if a.links:
        host, what = a.single_host(), "cycle" if a.kind == "circular" else "path"
        hosts = ", ".join(a.hosts or sorted({h for link in a.links for h in link.hosts}))
        if host:
            out.append(f"  every link was taken on host {host} alone")
        elif a.hosts_unnamed():
            out.append(f"  no host named for every link of the {what} (a link's hosts past the first "
                       f"few are counted, not named): named hosts {hosts}")
        else:
            out.append(f"  no single host took the whole {what}: it exists only across hosts {hosts}")
    return out
