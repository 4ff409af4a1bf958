"""Suppression: "known, accepted". A suppressed finding is still listed, marked, but never published.

Two sources:

- recorded suppressions (`lockfleet suppress ID --reason ...`), one per finding id, with a reason,
  an author and a time, kept in `<data-dir>/suppressions.json` (replaced atomically on each change);
- blessed lock orders, like FreeBSD WITNESS's blessed pairs: a file of lines `A -> B` (`#`
  comments), each saying the dependency A -> B is accepted. A finding whose dependencies include a
  blessed one (a cycle through it, an irq path along it) is suppressed with the reason
  `blessed order A -> B`. Lock class names may themselves hold "->" (`&sb->s_type->i_mutex_key`):
  the separator is an arrow with blanks around it.

Suppression is decided when a publication would be made: a publication already in the outbox
before the suppression was recorded is still delivered.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..findings.model import Alert, dependencies
from ..store.jsonfiles import read_json, write_json_atomic

FILE_VERSION = 1
MAX_REASON = 2000
_ARROW = re.compile(r"\s+->\s+")
_COMMENT = re.compile(r"(^|\s)#.*$")


@dataclass(frozen=True)
class Suppression:
    id: str
    reason: str
    author: str = ""
    ts_ns: int = 0
    blessed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SuppressionError(InputError):
    """A suppression that cannot be recorded (empty id or reason), or a malformed blessed file."""


class Suppressions:
    """The recorded suppressions of one data dir; thread-safe; every change is durable when it returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._by_id: dict[str, Suppression] = {}
        self.version = 0      # bumps on every change (the publisher rescans then)

    def load(self) -> Suppressions:
        doc = read_json(self.path, {"version": FILE_VERSION, "suppressions": []})
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError(f"{self.path}: not a version {FILE_VERSION} suppressions file")
        by_id = {}
        for item in doc.get("suppressions", []):
            s = Suppression(id=str(item["id"]), reason=str(item.get("reason", "")), author=str(item.get("author", "")),
                            ts_ns=int(item.get("ts_ns", 0)))
            by_id[s.id] = s
        with self._lock:
            self._by_id = by_id
        return self

    def _save(self, by_id: dict[str, Suppression]) -> None:
        doc = {"version": FILE_VERSION,
               "suppressions": [{k: v for k, v in s.to_dict().items() if k != "blessed"}
                                for s in sorted(by_id.values(), key=lambda s: (s.ts_ns, s.id))]}
        write_json_atomic(self.path, doc)

    def add(self, finding_id: str, reason: str, author: str = "") -> Suppression:
        finding_id, reason, author = finding_id.strip(), reason.strip(), author.strip()
        if not finding_id:
            raise SuppressionError("a suppression needs the id of a finding")
        if not reason:
            raise SuppressionError("a suppression needs a reason (why this finding is known and accepted)")
        if len(reason) > MAX_REASON or len(author) > 200 or len(finding_id) > 200:
            raise SuppressionError(f"reason (at most {MAX_REASON} characters), author or id too long")
        s = Suppression(id=finding_id, reason=reason, author=author, ts_ns=time.time_ns())
        with self._lock:
            by_id = {**self._by_id, finding_id: s}
            self._save(by_id)
            self._by_id = by_id
            self.version += 1
        return s

    def remove(self, finding_id: str) -> Suppression | None:
        with self._lock:
            old = self._by_id.get(finding_id)
            if old is None:
                return None
            by_id = {k: v for k, v in self._by_id.items() if k != finding_id}
            self._save(by_id)
            self._by_id = by_id
            self.version += 1
        return old

    def get(self, finding_id: str) -> Suppression | None:
        return self._by_id.get(finding_id)

    def all(self) -> list[Suppression]:
        return sorted(self._by_id.values(), key=lambda s: (s.ts_ns, s.id))


@dataclass(frozen=True)
class Blessed:
    """Blessed lock orders: (held, taken) pairs that are never reported."""

    pairs: frozenset[tuple[str, str]] = frozenset()
    source: str = ""

    @staticmethod
    def parse(text: str, source: str = "blessed file") -> Blessed:
        pairs = set()
        for n, raw in enumerate(text.splitlines(), start=1):
            line = _COMMENT.sub("", raw).strip()
            if not line:
                continue
            parts = _ARROW.split(line)
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise SuppressionError(f"{source} line {n}: expected 'HELD -> TAKEN' (an arrow with blanks "
                                       f"around it), got {raw.strip()!r}")
            pairs.add((parts[0].strip(), parts[1].strip()))
        return Blessed(frozenset(pairs), source)

    @staticmethod
    def load(path: str | Path) -> Blessed:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SuppressionError(f"--blessed {path}: cannot read: {exc.strerror or exc}") from None
        return Blessed.parse(text, f"--blessed {path}")

    def match(self, alert: Alert) -> tuple[str, str] | None:
        """The first blessed dependency of the finding, in its own order, or None."""
        if not self.pairs:
            return None
        for pair in dependencies(alert):
            if pair in self.pairs:
                return pair
        return None

    def orders(self) -> list[str]:
        return [f"{a} -> {b}" for a, b in sorted(self.pairs)]


def effective(alert: Alert, suppressions: Suppressions | None, blessed: Blessed | None) -> Suppression | None:
    """Why `alert` is suppressed (a recorded suppression first, then a blessed order), or None."""
    if suppressions is not None:
        s = suppressions.get(alert.id)
        if s is not None:
            return s
    if blessed is not None:
        pair = blessed.match(alert)
        if pair is not None:
            return Suppression(id=alert.id, reason=f"blessed order {pair[0]} -> {pair[1]}",
                               author=blessed.source, blessed=True)
    return None
