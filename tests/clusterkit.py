"""Helpers of the cluster tests: a NATS requirement (skip with a reason, fail under CI=true), a
seeded workload of many hosts whose lock orders cross, an agent that fails over between gateways,
and the single-process oracle order read back from the bus."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Sequence

import pyarrow as pa
import pytest

from lockfleet.agent import AgentError, Stream, push_streams

LOCKS = [f"lock_{c}" for c in "abcdefghijkl"]


def require_nats() -> None:
    from lockfleet.cluster.natsd import NatsUnavailable, nats_server

    try:
        nats_server()
    except NatsUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; under CI=true it must be there (.ci/install-deps installs it)")
        pytest.skip(str(exc))


def workload(seed: int, hosts: int, batches: int, rows: int) -> dict[str, list[pa.RecordBatch]]:
    """host -> its batches: threads taking 2-3 of LOCKS nested in a random order (exclusive), so
    that orders cross between hosts and cycles close fleet-wide; some holds span two batches."""
    out: dict[str, list[pa.RecordBatch]] = {}
    for h in range(hosts):
        rng = random.Random(f"{seed}/{h}")
        cols: dict[str, list] = {"ts_ns": [], "tid": [], "op": [], "lock": []}
        ts = 1_700_000_000_000_000_000 + h
        held: dict[int, list[str]] = {}
        total = batches * rows
        while len(cols["ts_ns"]) < total:
            tid = rng.randrange(1, 6)
            stack = held.setdefault(tid, [])
            if stack and (len(stack) >= 3 or rng.random() < 0.5):
                lock, op = stack.pop(), 1
            else:
                choices = [x for x in LOCKS if x not in stack]
                lock, op = rng.choice(choices), 0
                stack.append(lock)
            ts += 1000
            for k, v in (("ts_ns", ts), ("tid", tid), ("op", op), ("lock", lock)):
                cols[k].append(v)
        table = pa.table({"ts_ns": pa.array(cols["ts_ns"], pa.int64()), "tid": pa.array(cols["tid"], pa.int64()),
                          "op": pa.array(cols["op"], pa.uint8()), "lock": pa.array(cols["lock"], pa.string())})
        out[f"host-{h}"] = table.to_batches(max_chunksize=rows)
    return out


class FailoverAgent:
    """Pushes one host's stream, moving to the next gateway when one is unreachable; records
    every seq acknowledged."""

    def __init__(self, host: str, batches: Sequence[pa.RecordBatch], targets: Sequence[str], start: int = 0) -> None:
        self.host, self.batches, self.targets = host, list(batches), list(targets)
        self.which = start
        self.acked: set[int] = set()
        self.error = ""
        self.moves = 0
        self.thread = threading.Thread(target=self._run, name=f"agent-{host}", daemon=True)

    @property
    def stream_id(self) -> str:
        return f"test/{self.host}"

    def _contiguous(self) -> int:
        n = 0
        while n + 1 in self.acked:
            n += 1
        return n

    def _run(self) -> None:
        for _attempt in range(40):
            done = self._contiguous()
            if done >= len(self.batches):
                return
            target = self.targets[self.which % len(self.targets)]
            try:
                push_streams(target, self.host, [Stream(self.stream_id, self.batches[done:], first_seq=done + 1)],
                             retry_for=2.0, on_ack=lambda _sid, seq, ack: self.acked.add(seq) if ack.ok else None)
                return
            except AgentError:
                self.which += 1
                self.moves += 1
        self.error = f"{self.host}: gave up after 40 attempts"


def oracle_order(raw: dict[str, list[pa.RecordBatch]], derived: list[tuple[dict[str, str], bytes]],
                 stream_of: dict[str, str]) -> list[tuple[str, pa.RecordBatch]]:
    """The raw batches in the order the authority saw their effects: for each derived message in
    LF_DERIVED's order, the raw batches of its source host up to its source seq; the rest at the
    end. (A raw batch that taught its host's engine nothing changes no one else's state.)"""
    fed = dict.fromkeys(raw, 0)
    order: list[tuple[str, pa.RecordBatch]] = []
    for headers, _data in derived:
        host, _stream, seq = json.loads(headers["Lf-Source"])
        while fed[host] < seq:
            order.append((host, raw[host][fed[host]]))
            fed[host] += 1
    for h, batches in raw.items():
        order.extend((h, b) for b in batches[fed[h]:])
    return order
