"""The durable outbox of publications, and each sink's cursor into it.

A publication is one JSON line of `<data-dir>/publish/outbox.jsonl`, durable (fsynced) before
anything is sent anywhere:

    {"seq": 7, "event": "new" | "grew", "id": ..., "kind": ..., "new_hosts": [...],
     "new_kinds": [...], "published_ns": ..., "first_published_ns": ...,
     "hosts": [...], "kinds": [...],          # the evidence published so far (after this one)
     "witnesses": N,                          # a circular finding's witnesses at this publication
     "alert": Alert.to_dict(), "report": Alert.render()}

`seq` counts publications 1, 2, 3, ... and is never reused; the outbox is the single record of
what was published, so the "last published" evidence of each finding (to tell growth) is read
back from it on start. `kinds` are a finding's dependency kinds as "held -> taken: EN".

`Cursors` (`<data-dir>/publish/cursors.json`, replaced atomically after every acknowledged send)
holds, per sink, the seq of the last publication that sink acknowledged.

Compaction (`compact`) rewrites the file atomically without the publications every sink has
acknowledged, except each finding's latest (which carries everything published of it, so growth
is still told right); seqs keep their numbers, with gaps. A WatchAlerts client that asks from the
start then gets what was kept.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..findings.model import Alert
from ..store.atomic import write_atomic
from ..store.jsonfiles import JsonLines, read_json, write_json_atomic

NEW, GREW = "new", "grew"


def _witnesses(alert: Alert) -> int:
    return alert.count if alert.inversion is not None else 0


def link_kinds(alert: Alert) -> set[str]:
    """A finding's dependency kinds, each as "held -> taken: KIND"."""
    return {f"{link.held} -> {link.taken}: {k}" for link in alert.links for k in link.kinds}


@dataclass
class Published:
    """What has been published of one finding."""

    hosts: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    first_published_ns: int = 0
    last_seq: int = 0
    last_published_ns: int = 0
    witnesses: int = 0       # a circular finding's witness count, as last published
    host_count: int = 0      # its host count, as last published (grows past the named hosts too)


class Outbox:
    """Append-only, durable, in publication order; `wait_after` lets readers follow it."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self._file = JsonLines(self.path, fsync=fsync)
        self._records: list[dict[str, Any]] = []
        self._published: dict[str, Published] = {}
        self._cond = threading.Condition()
        self._closed = False
        self.readers_closed = False

    def open(self) -> Outbox:
        for rec in self._file.open():
            self._remember(rec)
        return self

    def _remember(self, rec: dict[str, Any]) -> None:
        if self._records and rec["seq"] <= self._records[-1]["seq"]:
            raise ValueError(f"{self.path}: seq {rec['seq']} after {self._records[-1]['seq']}: not in order")
        self._records.append(rec)
        p = self._published.setdefault(rec["id"], Published(first_published_ns=rec.get("first_published_ns", 0)))
        p.hosts.update(rec.get("hosts", ()))
        p.kinds.update(rec.get("kinds", ()))
        p.last_seq = rec["seq"]
        p.last_published_ns = rec.get("published_ns", 0)
        p.witnesses = max(p.witnesses, rec.get("witnesses", 0))
        p.host_count = max(p.host_count, rec.get("host_count", len(rec.get("hosts", ()))))

    @property
    def last_seq(self) -> int:
        return self._records[-1]["seq"] if self._records else 0

    @property
    def records(self) -> int:
        return len(self._records)

    def compact(self, acknowledged: int) -> int:
        """Drop publications with seq <= `acknowledged` (every sink has them) that are not their
        finding's latest; the file is replaced atomically. Returns how many were dropped; raises
        OSError (then nothing changed)."""
        with self._cond:
            if self._closed:
                return 0
            latest = {p.last_seq for p in self._published.values()}
            kept = [r for r in self._records if r["seq"] > acknowledged or r["seq"] in latest]
            dropped = len(self._records) - len(kept)
            if not dropped:
                return 0
            # the last record always stays (it is its finding's latest), so last_seq never goes back
            lines = [(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n").encode() for r in kept]
            self._file.close()
            try:
                write_atomic(self.path, lines)
            finally:
                self._file.open()
            self._records = kept
            return dropped

    def published(self, finding_id: str) -> Published | None:
        return self._published.get(finding_id)

    def change(self, alert: Alert) -> tuple[str, list[str], list[str]] | None:
        """What publishing `alert` now would say: (event, new hosts, new kinds), or None if nothing
        a person cares about changed since its last publication (new hosts, new dependency kinds,
        new witnesses of a circular finding)."""
        hosts, kinds = set(alert.hosts), link_kinds(alert)
        prev = self._published.get(alert.id)
        if prev is None:
            return NEW, [], []
        new_hosts, new_kinds = sorted(hosts - prev.hosts), sorted(kinds - prev.kinds)
        count = alert.host_count or len(alert.hosts)
        if new_hosts or new_kinds or _witnesses(alert) > prev.witnesses or count > max(prev.host_count, len(prev.hosts)):
            return GREW, new_hosts, new_kinds
        return None

    def append(self, alert: Alert, event: str, new_hosts: Iterable[str] = (), new_kinds: Iterable[str] = (),
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Publish: write the record durably, then make it visible to readers. Raises OSError (then
        nothing was published)."""
        now = time.time_ns()
        prev = self._published.get(alert.id)
        hosts = set(alert.hosts) | (prev.hosts if prev else set())
        kinds = link_kinds(alert) | (prev.kinds if prev else set())
        with self._cond:
            if self._closed:
                raise OSError("the outbox is closed")
            rec = {"seq": self.last_seq + 1, "event": event, "id": alert.id, "kind": alert.kind,
                   "new_hosts": sorted(new_hosts), "new_kinds": sorted(new_kinds), "published_ns": now,
                   "first_published_ns": prev.first_published_ns if prev else now,
                   "hosts": sorted(hosts), "kinds": sorted(kinds), "witnesses": _witnesses(alert),
                   "host_count": max(alert.host_count or len(alert.hosts), prev.host_count if prev else 0),
                   "alert": {**alert.to_dict(), **(extra or {})},
                   "report": alert.render()}
            self._file.append(rec)
            self._remember(rec)
            self._cond.notify_all()
        return rec

    def after(self, seq: int, limit: int = 0) -> list[dict[str, Any]]:
        """Records with seq > `seq`, in order (at most `limit`, 0: all)."""
        with self._cond:
            return self._slice(seq, limit)

    def _slice(self, seq: int, limit: int) -> list[dict[str, Any]]:
        recs = self._records
        # seqs are 1..n without gaps until a compaction (each append takes last + 1): the index is
        # then seq itself; after one, a binary search
        if not recs:
            return []
        if 0 <= seq <= len(recs) and recs[0]["seq"] == 1 and (seq == 0 or recs[seq - 1]["seq"] == seq):
            start = seq
        else:
            start = bisect.bisect_right(recs, seq, key=lambda r: r["seq"])
        out = recs[start:]
        return out[:limit] if limit else list(out)

    def wait_after(self, seq: int, timeout: float, limit: int = 0, reader: bool = False) -> list[dict[str, Any]]:
        """Like `after`, waiting up to `timeout` for at least one; [] on timeout or once closed
        (for a `reader`, a watcher of the stream: also once `close_readers` was called)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                out = self._slice(seq, limit)
                if out or self._closed or (reader and self.readers_closed):
                    return out
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)

    def close_readers(self) -> None:
        """End the waits of readers (WatchAlerts streams); appends go on."""
        with self._cond:
            self.readers_closed = True
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._file.close()


class Cursors:
    """Per sink, the seq of the last publication it acknowledged; each change is durable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def load(self) -> Cursors:
        doc = read_json(self.path, {"version": 1, "cursors": {}})
        self._values = {str(k): int(v) for k, v in doc.get("cursors", {}).items()}
        return self

    def get(self, key: str) -> int:
        return self._values.get(key, 0)

    def set(self, key: str, seq: int) -> None:
        with self._lock:
            values = {**self._values, key: seq}
            write_json_atomic(self.path, {"version": 1, "cursors": values})
            self._values = values

    def all(self) -> dict[str, int]:
        return dict(self._values)
