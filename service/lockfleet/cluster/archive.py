"""The archive from the bus: `lockfleet bus-archive --bus nats://... --data-dir DIR`.

A durable consumer (`lf-archive`) reads LF_EVENTS in stream order and writes the raw batches to
`DIR/archive/day=YYYY-MM-DD/part-<first stream seq, 12 digits>-<n>.parquet`, in the archive
schema of `store.archive` (the row's `lsn` is the message's stream sequence number), so that
`lockfleet analyze DIR` reads a cluster's archive as it reads one service's.

Exactly once: each run starts a fresh durable consumer just after the last message archived; a
round's files are written (fsync, rename), then `archive/_bus_state.json` records
the last stream seq archived and each stream's high-water seq, atomically, and only then are the
messages acked. On start, part files past the recorded seq (a round a crash cut short) are
removed, and messages at or before it are skipped; a batch stored twice on the bus (same host,
stream and seq) is archived once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..server.gateway import Refusal, decode
from ..store.archive import NS_PER_DAY, _day, archive_table
from ..store.atomic import write_atomic
from . import bus

log = logging.getLogger(__name__)
STATE = "_bus_state.json"
ROUND = 4096          # messages at most per round


class BusArchiver:
    def __init__(self, cfg: bus.BusConfig, data_dir: Path, interval: float = 5.0) -> None:
        self.cfg = cfg
        self.directory = Path(data_dir) / "archive"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.through, self.marks = self._read_state()
        for path in self.directory.glob("day=*/part-*"):
            if path.name.endswith(".tmp") or _first_seq(path) > self.through:
                path.unlink(missing_ok=True)
        self.stopping = asyncio.Event()
        self.rows = 0
        self.files = 0

    def _read_state(self) -> tuple[int, dict[str, int]]:
        try:
            st = json.loads((self.directory / STATE).read_text())
            return int(st["through"]), {k: int(v) for k, v in st["marks"].items()}
        except FileNotFoundError:
            return 0, {}

    def _write_state(self) -> None:
        body = json.dumps({"through": self.through, "marks": self.marks}, separators=(",", ":")).encode()
        write_atomic(self.directory / STATE, [body])

    async def run(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        nc = await bus.connect(self.cfg, "lockfleet-archiver")
        js = nc.jetstream(timeout=5.0)
        await bus.ensure(js, self.cfg)
        log.info("archiving the bus into %s (through stream seq %d)", self.directory, self.through)
        while not self.stopping.is_set():
            try:
                # a fresh consumer from just after what is archived: messages an earlier run took
                # and did not archive come again at once (not after their ack wait)
                try:
                    await js.delete_consumer(bus.EVENTS, "lf-archive")
                except NotFoundError:
                    pass
                config = ConsumerConfig(durable_name="lf-archive", filter_subject="lf.ev.>",
                                        ack_policy=AckPolicy.ALL, ack_wait=300.0, max_ack_pending=4 * ROUND,
                                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.through + 1,
                                        num_replicas=self.cfg.replicas)
                await js.add_consumer(bus.EVENTS, config)
                sub = await js.pull_subscribe_bind("lf-archive", stream=bus.EVENTS)
                while not self.stopping.is_set():
                    batch: list[Any] = []
                    deadline = time.monotonic() + self.interval
                    while len(batch) < ROUND and time.monotonic() < deadline and not self.stopping.is_set():
                        try:
                            batch += await sub.fetch(min(512, ROUND - len(batch)), timeout=0.5)
                        except (TimeoutError, NatsTimeout):
                            pass
                    if batch:
                        await asyncio.to_thread(self._archive, batch)
                        await batch[-1].ack()   # AckAll: every message up to it
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("archiving from the bus failed: %s; again", exc or type(exc).__name__)
                await asyncio.sleep(0.5)
        await nc.close()

    def _archive(self, msgs: list[Any]) -> None:
        by_day: dict[str, list[pa.Table]] = {}
        first = 0
        marks = dict(self.marks)
        last = self.through
        for m in msgs:
            sseq = m.metadata.sequence.stream
            if sseq <= self.through:
                continue
            last = max(last, sseq)
            h = dict(m.headers or {})
            host, stream, seq = h.get(bus.H_HOST, ""), h.get(bus.H_STREAM, ""), int(h.get(bus.H_SEQ, "0"))
            key = f"{host}\0{stream}"
            if seq <= marks.get(key, 0):
                continue
            marks[key] = seq
            try:
                table = archive_table(decode(m.data, 1 << 62), host, stream, seq, sseq)
            except Refusal as exc:
                log.error("stream seq %d is not Arrow IPC (%s): not archived", sseq, exc.error)
                continue
            if not table.num_rows:
                continue
            first = first or sseq
            day_idx = table.column("ts_ns").to_numpy() // NS_PER_DAY
            for d in np.unique(day_idx):
                t = table if len(np.unique(day_idx)) == 1 else table.filter(pa.array(day_idx == d))
                by_day.setdefault(_day(int(d)), []).append(t)
        for n, (day, tables) in enumerate(sorted(by_day.items())):
            folder = self.directory / f"day={day}"
            folder.mkdir(exist_ok=True)
            table = pa.concat_tables(tables)
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            write_atomic(folder / f"part-{first:012d}-{n}.parquet", [sink.getvalue().to_pybytes()])
            self.rows += table.num_rows
            self.files += 1
        if last > self.through:
            self.through, self.marks = last, marks
            self._write_state()
            log.info("archived through stream seq %d (%d files so far)", last, self.files)


def _first_seq(path: Path) -> int:
    try:
        return int(path.name.split("-")[1].split(".")[0])
    except (IndexError, ValueError):
        return 0
