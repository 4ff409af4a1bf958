"""The finding as users see it: plain, immutable values built by the engine from the core's
evidence, rendered by `render.py`, made of the evidence in `evidence.py`, serialised by `to_dict()`.

Nothing here knows how findings are found; the engine fills these in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .evidence import EXCLUSIVE, RECURSIVE_READ, SHARED, Link, Occurrence, Printed, Usage, Witness
from .render import render

# held_lock_freed comes only from kernel logs (`lockfleet dmesg`): lockdep's print_freed_lock_bug
KINDS = ("circular", "recursive", "bad_unlock", "irq_inversion", "inconsistent_state", "held_lock_freed")

__all__ = ["EXCLUSIVE", "KINDS", "RECURSIVE_READ", "SHARED", "Alert", "Link", "Occurrence", "Printed", "Usage",
           "Witness", "dependencies", "finding_id", "matches"]


def finding_id(kind: str, ident: str) -> str:
    """`<kind>-<16 hex digits>`: a SHA-1 over the kind and the finding's identity (docs/semantics.md;
    the engine's records use the same formula)."""
    return kind + "-" + hashlib.sha1(f"{kind}\n{ident}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """A finding. For `circular`, `locks[i]` is held while `locks[i+1]` is acquired and the last
    is held while the first is acquired; `locks[0]` is the lock whose acquisition closed the
    cycle (lockdep's `#0`) and `links[i]` is `locks[i] -> locks[i+1]`, the last link closing.

    For the other kinds, `trigger` is the acquisition or release lockdep would have reported on,
    `held` the task's held locks at that moment (outermost first), `links` the dependency path
    (irq_inversion: safe lock ~> unsafe lock) and `usages` the irq usages that conflict.
    """

    id: str
    kind: str
    locks: tuple[str, ...]
    hosts: tuple[str, ...]
    links: tuple[Link, ...] = ()
    trigger: Occurrence | None = None
    held: tuple[Occurrence, ...] = ()
    usages: tuple[Usage, ...] = ()
    # lockdep's `{+.+.}` usage string per lock named in the report
    usage_strings: dict[str, str] = field(default_factory=dict)
    # irq_inversion / inconsistent_state: "HARDIRQ" or "SOFTIRQ"
    irq_state: str = ""
    count: int = 1            # times the finding was met: a circular one, its witnesses (cycles
                              # closed through its inversion, its own first); the others, the
                              # acquisitions or releases that raised it; from kernel logs
                              # (`printed`), for every kind: the reports that show it
    first_ts_ns: int = 0
    seq: int = 0              # order in which findings were raised, 1-based
    # circular: the inversion (held, taken), the dependency whose arrival first closed the cycle
    inversion: tuple[str, str] | None = None
    # circular: the witnesses kept with their evidence (the first few; `count` counts them all)
    witnesses: tuple[Witness, ...] = ()
    printed: Printed | None = None  # read from a kernel log: the report as it was printed
    # how many hosts make up the finding: len(hosts) while every one is named (0 says so), else
    # an estimate (a dependency's hosts past the first few are counted, not named)
    host_count: int = 0

    def render(self) -> str:
        return render(self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "locks": list(self.locks),
            "hosts": list(self.hosts),
            "host_count": self.host_count or len(self.hosts),
            "count": self.count,
            "first_ts_ns": self.first_ts_ns,
            "seq": self.seq,
            "links": [link.to_dict() for link in self.links],
            "single_host": self.single_host(),
        }
        if self.trigger is not None:
            d["trigger"] = _occ_dict(self.trigger)
        if self.held:
            d["held"] = [_occ_dict(o) for o in self.held]
        if self.usages:
            d["usages"] = [
                {"lock": u.lock, "usage": u.usage, **{"first": _occ_dict(u.first)}} for u in self.usages
            ]
        if self.irq_state:
            d["irq_state"] = self.irq_state
        if self.inversion is not None:
            d["inversion"] = {"held": self.inversion[0], "taken": self.inversion[1]}
            d["witnesses"] = self.count
            d["witnesses_kept"] = len(self.witnesses)
        if self.printed is not None:
            d["report"] = {"sources": list(self.printed.sources), "missing": list(self.printed.missing),
                           "incomplete": self.printed.incomplete,
                           "text": [line for _s, lines in self.printed.sections for line in lines]}
        return d

    def single_host(self) -> str | None:
        """The one host that took every link of the finding by itself, if there is one among the
        named hosts (a link's hosts past the first few are counted, not named: see
        `hosts_unnamed`)."""
        if not self.links:
            return self.hosts[0] if len(self.hosts) == 1 else None
        common = set(self.links[0].hosts)
        for link in self.links[1:]:
            common &= set(link.hosts)
        return min(common) if common else None

    def hosts_unnamed(self) -> bool:
        """Whether some link has hosts that are counted but not named (so "no single host took
        it" cannot be told from the names)."""
        return any(link.host_count > len(link.hosts) for link in self.links)


def matches(alert: Alert, kind: str = "", host: str = "", lock: str = "", since_ns: int = 0,
            until_ns: int = 0) -> bool:
    """Whether a finding passes the filters people list findings by (each empty/0: any): its kind,
    one of its hosts, one of its locks, and its first event time in [since_ns, until_ns)."""
    return not ((kind and alert.kind != kind) or (lock and lock not in alert.locks)
                or (host and host not in alert.hosts)
                or (since_ns and alert.first_ts_ns < since_ns)
                or (until_ns and alert.first_ts_ns >= until_ns))


def dependencies(alert: Alert) -> list[tuple[str, str]]:
    """The (held, taken) dependencies a finding rests on: its links, or for a cycle given only by
    its locks, each lock to the next and the last to the first."""
    if alert.links:
        return [(link.held, link.taken) for link in alert.links]
    if alert.kind == "circular" and len(alert.locks) > 1:
        locks = list(alert.locks)
        return list(zip(locks, locks[1:] + locks[:1]))
    return []


def _occ_dict(o: Occurrence) -> dict[str, Any]:
    return {
        "lock": o.lock,
        "mode": o.mode,
        "trylock": o.trylock,
        "instance": o.instance,
        "site": o.site,
        "host": o.host,
        "task": o.task,
        "tid": o.tid,
        "ts_ns": o.ts_ns,
        "irq": o.irq,
    }
