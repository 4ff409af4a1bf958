"""The evidence a finding is made of: acquisitions as first seen (`Occurrence`), lock-order
dependencies (`Link`), irq usages (`Usage`), witness cycles (`Witness`) and reports as a kernel
log printed them (`Printed`). Plain, immutable values; `model.Alert` holds them, `render` prints
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..events import EXCLUSIVE, RECURSIVE_READ, SHARED  # lock modes, as in the `mode` column

__all__ = ["EXCLUSIVE", "RECURSIVE_READ", "SHARED", "Link", "Occurrence", "Printed", "Usage", "Witness"]


@dataclass(frozen=True)
class Occurrence:
    """One acquisition (or release) of a lock, as first seen: enough to print a lockdep line."""

    lock: str                 # class name as printed: `name` or `name/subclass`
    mode: int = EXCLUSIVE     # 0 exclusive, 1 shared, 2 recursive read
    trylock: bool = False
    instance: int = 0         # lock address, 0 when unknown
    site: str = ""            # a frame or a stack, frames joined by "\n"; "" when unknown
    host: str = ""
    task: str = ""            # as a report shows it, e.g. "test_progs/246"; may be ""
    tid: int = 0
    ts_ns: int = 0
    irq: int = 0              # the `irq` column's bit mask at that moment


@dataclass(frozen=True)
class Link:
    """One lock-order dependency `held -> taken` with its first evidence and its counters."""

    held: str
    taken: str
    kinds: tuple[str, ...]    # lockdep's edge kinds seen on this pair: "EN", "ER", "SN", "SR"
    first_held: Occurrence    # the held lock, as held when the dependency was first made
    first_taken: Occurrence   # the acquisition that made the dependency (host, task, time, site)
    count: int = 1            # times the dependency was taken
    hosts: tuple[str, ...] = ()  # sorted names of the hosts that took it: every one, up to the
                                 # core's first few per dependency (docs/semantics.md, "Hosts")
    last_ts_ns: int = 0
    host_count: int = 0       # hosts that took it: exact while every one is named, else the
                              # named ones plus a sketch's estimate of the rest (0: len(hosts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "held": self.held,
            "taken": self.taken,
            "kinds": list(self.kinds),
            "host": self.first_taken.host,
            "task": self.first_taken.task,
            "ts_ns": self.first_taken.ts_ns,
            "held_site": self.first_held.site,
            "taken_site": self.first_taken.site,
            "count": self.count,
            "hosts": list(self.hosts),
            "host_count": self.host_count or len(self.hosts),
            "last_ts_ns": self.last_ts_ns,
        }


@dataclass(frozen=True)
class Usage:
    """A lock class's irq usage bit, lockdep style (e.g. `IN-HARDIRQ-W`, `HARDIRQ-ON-W`), with
    the first acquisition that set it."""

    lock: str
    usage: str
    first: Occurrence


@dataclass(frozen=True)
class Printed:
    """A lockdep report as a kernel log printed it, for a finding read from a log: its own lines
    (prefixes removed, other tasks' interleaved lines left out) in the kernel's sections, so that
    it is printed again exactly, never rebuilt from a graph.

    `sections` holds (section, lines) in printed order; `missing` names the sections the kernel
    prints for this kind that the log does not hold (printed as unknown); `incomplete` says why
    the report is not whole ("" when it is); `sources` are the `file:line` of every report that
    showed this finding."""

    kind: str
    sections: tuple[tuple[str, tuple[str, ...]], ...]
    missing: tuple[str, ...] = ()
    incomplete: str = ""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Witness:
    """One cycle that closed through a circular finding's inversion (the first is the cycle the
    inversion itself closed): `locks` as in Alert.locks, `links` its dependencies in that order,
    the last the arrival that closed it."""

    locks: tuple[str, ...]
    links: tuple[Link, ...]
    hosts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"locks": list(self.locks), "hosts": list(self.hosts),
                "closing": self.links[-1].to_dict() if self.links else None,
                "links": [link.to_dict() for link in self.links]}
