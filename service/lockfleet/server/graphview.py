"""Reads of the graph that the Engine does not (yet) offer whole: one lock's dependencies and irq
usage, a finding's neighbourhood, and every dependency with its evidence for the export.

Each function runs under the gateway's read lock (callers pass it to `Gateway.read`) and keeps its
time there short: the export reads the edge table in pieces (`edge_rows(engine, start, stop)`),
the edge count having been fixed at its start.

They read the Engine's evidence by id (`edge_classes`, `link`, `class_id`, `usage`): nothing here
finds or judges cycles, it only reads the evidence the engine keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..findings.model import Alert, Link, Occurrence, Usage
from ..engine import Engine

# The rows of `lockfleet export` (Query.ExportEdges): one per dependency of the fleet graph. Not edge
# mode's shipment schema (`lockfleet.agent.edgemode.EDGE_SCHEMA`).
EXPORT_EDGE_SCHEMA = pa.schema([
    ("held", pa.utf8()), ("taken", pa.utf8()), ("kinds", pa.list_(pa.utf8())), ("count", pa.uint64()),
    ("hosts", pa.list_(pa.utf8())), ("first_host", pa.utf8()), ("first_task", pa.utf8()),
    ("first_ts_ns", pa.int64()), ("held_site", pa.utf8()), ("taken_site", pa.utf8()),
    ("last_ts_ns", pa.int64()),
], metadata={"lockfleet": "edges: one row per lock dependency held -> taken, with its first evidence"})


@dataclass(frozen=True)
class LockView:
    name: str
    usage: str
    usages: tuple[Usage, ...]
    edges_in: tuple[Link, ...]
    edges_out: tuple[Link, ...]
    hosts: tuple[str, ...] = ()
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    count: int = 0
    alerts: tuple[str, ...] = field(default=())


def _edge_arrays(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    src, dst = engine.edge_classes()
    return np.asarray(src), np.asarray(dst)


def lock_view(engine: Engine, name: str) -> LockView | None:
    """One lock class: dependencies in and out, irq usage, hosts, first and last evidence."""
    c = engine.class_id(name)
    if c < 0:
        return None
    src, dst = _edge_arrays(engine)
    edges_in = tuple(engine.link(int(e)) for e in np.flatnonzero(dst == c))
    edges_out = tuple(engine.link(int(e)) for e in np.flatnonzero(src == c))
    usage_string, usages = engine.usage(name) or ("....", [])
    hosts = {h for link in (*edges_in, *edges_out) for h in link.hosts} | {u.first.host for u in usages}
    firsts = [link.first_taken.ts_ns for link in (*edges_in, *edges_out)] + [u.first.ts_ns for u in usages]
    lasts = [link.last_ts_ns for link in (*edges_in, *edges_out)] + firsts
    alerts = tuple(a.id for a in engine.alerts() if name in a.locks)
    return LockView(name=engine.class_name(c), usage=usage_string, usages=tuple(usages),
                    edges_in=edges_in, edges_out=edges_out, hosts=tuple(sorted(h for h in hosts if h)),
                    first_ts_ns=min((t for t in firsts if t), default=0), last_ts_ns=max(lasts, default=0),
                    count=sum(link.count for link in (*edges_in, *edges_out)), alerts=alerts)


def neighbourhood(engine: Engine, alert: Alert, radius: int = 1, max_edges: int = 60
                  ) -> tuple[list[Link], int, dict[str, str]]:
    """Dependencies within `radius` steps of the finding's locks (besides its own), the most taken
    first, at most `max_edges`; how many were left out; usage strings of the locks shown."""
    ids = {engine.class_id(n) for n in alert.locks} - {-1}
    if not ids or radius <= 0:
        return [], 0, {}
    src, dst = _edge_arrays(engine)
    seen = np.zeros(len(src), dtype=bool)
    frontier = np.fromiter(ids, dtype=np.int64)
    reached = set(ids)
    for _ in range(radius):
        hit = (np.isin(src, frontier) | np.isin(dst, frontier)) & ~seen
        seen |= hit
        nxt = set(np.concatenate([src[hit], dst[hit]]).tolist()) - reached
        if not nxt:
            break
        reached |= nxt
        frontier = np.fromiter(nxt, dtype=np.int64)
    own = {(link.held, link.taken) for link in alert.links}
    links = [engine.link(int(e)) for e in np.flatnonzero(seen)]
    links = [link for link in links if (link.held, link.taken) not in own]
    links.sort(key=lambda x: (-x.count, x.held, x.taken))
    shown = links[:max_edges]
    usage = {}
    for link in shown:
        for n in (link.held, link.taken):
            if n not in usage:
                known = engine.usage(n)
                if known is not None:
                    usage[n] = known[0]
    return shown, len(links) - len(shown), usage


def edge_count(engine: Engine) -> int:
    return engine.edge_count()


def edge_rows(engine: Engine, start: int, stop: int) -> pa.RecordBatch:
    """Dependencies start..stop-1 (ids in the order they were first made) as a record batch of
    EXPORT_EDGE_SCHEMA."""
    cols: dict[str, list[Any]] = {f.name: [] for f in EXPORT_EDGE_SCHEMA}
    for e in range(start, stop):
        link = engine.link(e)
        o: Occurrence = link.first_taken
        for key, value in (("held", link.held), ("taken", link.taken), ("kinds", list(link.kinds)),
                           ("count", link.count), ("hosts", list(link.hosts)), ("first_host", o.host),
                           ("first_task", o.task), ("first_ts_ns", o.ts_ns), ("held_site", link.first_held.site),
                           ("taken_site", o.site), ("last_ts_ns", link.last_ts_ns)):
            cols[key].append(value)
    return pa.RecordBatch.from_pydict(cols, schema=EXPORT_EDGE_SCHEMA)


def witnesses(engine: Engine, alert_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """The witness cycles kept for one circular finding (its own first, then later cycles closed
    through its inversion), JSON-ready (`Witness.to_dict()`), the first `limit`; [] for an unknown
    id or another kind."""
    return [w.to_dict() for w in (engine.witnesses(alert_id) or ())[:limit]]
