"""The demo fleet's events: per host, background traffic with that host's part of the seed
scenario in it, as Arrow tables in the schema of docs/contract.md section 2 (as an agent sends them)."""

from __future__ import annotations

import random

import pyarrow as pa

from ..events import AGENT_COLUMNS, RELEASE, schema
from .background import Row, background
from .scenario import HOSTS, INSTANCES, TASKS, site

BASE_NS = 1_551_366_460_000_000_000   # 2019-02-28 15:07:40 UTC, the day of the report
DEFAULT_EVENTS = 3000                 # background events per host

SCHEMA = schema(AGENT_COLUMNS, dictionary=True)


def seed_scenario(seed: int = 0, events: int = DEFAULT_EVENTS) -> dict[str, pa.Table]:
    """host -> its events, for HOSTS in order. The host that closes the cycle (bpf-3) has its
    part last; the others have theirs somewhere amid their background traffic."""
    out: dict[str, pa.Table] = {}
    for index, host in enumerate(HOSTS):
        rng = random.Random(f"{seed}/{host}")
        sessions = list(background(rng, events))
        at = 0
        for task in (t for t in TASKS if t.host == host):  # in TASKS order: boot before hotplug
            rows = [Row(task.tid, task.name, s.op, s.lock, mode=s.mode, site=site(s.lock, s.where) if s.op != RELEASE else "",
                        instance=INSTANCES.get(s.lock, 0)) for s in task.steps]
            at = len(sessions) if host == HOSTS[-1] else rng.randrange(at, len(sessions) + 1)
            sessions.insert(at, rows)
            at += 1
        out[host] = _table([r for session in sessions for r in session], BASE_NS + index * 3_600_000_000_000, rng)
    return out


def _table(rows: list[Row], start_ns: int, rng: random.Random) -> pa.Table:
    ts, t = [], start_ns
    for _ in rows:
        t += rng.randrange(200, 20_000)
        ts.append(t)

    def dict_col(values: list[str]) -> pa.DictionaryArray:
        return pa.array([v or None for v in values], pa.utf8()).dictionary_encode()

    return pa.table([
        pa.array(ts, pa.int64()),
        pa.array([r.tid for r in rows], pa.int64()),
        pa.array([r.op for r in rows], pa.uint8()),
        dict_col([r.lock for r in rows]),
        pa.array([r.mode for r in rows], pa.uint8()),
        pa.array([r.subclass for r in rows], pa.uint8()),
        pa.array([r.instance for r in rows], pa.uint64()),
        pa.array([r.irq for r in rows], pa.uint8()),
        dict_col([r.site for r in rows]),
        dict_col([r.task for r in rows]),
    ], schema=SCHEMA)
