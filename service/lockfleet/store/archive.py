"""The archive: sealed log segments compacted to Parquet (zstd), partitioned by day, with retention.

Layout (what `lockfleet analyze` reads):

    <data-dir>/archive/day=YYYY-MM-DD/part-<segment seq, 8 digits>-<n>.parquet

one row per event with the columns of docs/contract.md section 2 (defaults filled in: `mode`, `subclass`
and `irq` 0; `host` always set, to the batch's host where the row names none) plus `stream_id`
(string) and `seq` (uint64) of the batch it came from, `lsn` (uint64) and `row` (uint32): the
row's place in the log; rows in log order; the day is the UTC day
of `ts_ns`. A segment's files are written as `.tmp` and renamed, then the segment is recorded as
archived in `archive/_state.json`; a crash in between only redoes the same files under the same
names. Compaction runs on its own thread, at a lower CPU priority, and reads only sealed (immutable)
segments, so it never blocks ingest; during a burst of appends it waits until the log has been still
for half a second, or until four sealed segments are waiting, so that it does not take the CPU the
burst needs (the log keeps every event meanwhile). Day partitions older than the retention are deleted (0 keeps everything).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..events import SCHEMA as EVENTS
from .eventlog import EventLog, LogCorrupt, SealedPart

log = logging.getLogger(__name__)

NS_PER_DAY = 86_400 * 10**9
ROWS_PER_FILE = 1 << 20
QUIET_SECONDS = 0.5        # archive sealed segments once the log has had no append for this long...
MAX_BACKLOG = 4            # ...or when this many sealed segments wait (bounds the log on disk)
ARCHIVER_NICE = 10
SCHEMA = pa.schema([
    *EVENTS,    # every event column, plain strings, defaults filled in; then where the row came from
    ("stream_id", pa.string()), ("seq", pa.uint64()),
    # the row's place in the log (record lsn, row within the batch): a segment whose rows fall on
    # two days is split across two day partitions, and these put it back in apply order
    ("lsn", pa.uint64()), ("row", pa.uint32()),
])
_DEFAULT_ZERO = ("mode", "subclass", "irq")
STATE = "_state.json"


def archive_table(table: pa.Table, host: str, stream_id: str, seq: int, lsn: int = 0) -> pa.Table:
    """One logged batch in the archive's schema."""
    n = table.num_rows
    cols = []
    for field in SCHEMA:
        name = field.name
        if name == "stream_id":
            col = pa.array([stream_id] * n, pa.string()) if n else pa.array([], pa.string())
        elif name == "seq":
            col = pa.array(np.full(n, seq, dtype=np.uint64))
        elif name == "lsn":
            col = pa.array(np.full(n, lsn, dtype=np.uint64))
        elif name == "row":
            col = pa.array(np.arange(n, dtype=np.uint32))
        elif name in table.column_names:
            col = table.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            if col.type != field.type:
                col = col.cast(field.type)
            if name in _DEFAULT_ZERO or name == "host":
                col = pc.fill_null(col, pa.scalar(host if name == "host" else 0, field.type))
        elif name in _DEFAULT_ZERO:
            col = pa.array(np.zeros(n, dtype=np.uint8))
        elif name == "host":
            col = pa.array([host] * n, pa.string()) if n else pa.array([], pa.string())
        else:
            col = pa.nulls(n, field.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def _day(days_since_epoch: int) -> str:
    return str(np.datetime64(days_since_epoch, "D"))


class Archiver:
    """Compacts the sealed parts of `eventlog` into `directory`; `start()` runs it on a thread."""

    def __init__(self, directory: Path, eventlog: EventLog, retention_days: int = 30,
                 decode: Callable[[bytes], pa.Table] | None = None, rows_per_file: int = ROWS_PER_FILE,
                 interval: float = 60.0, quiet: float = QUIET_SECONDS, max_backlog: int = MAX_BACKLOG) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = eventlog
        self.retention_days = retention_days
        self.rows_per_file = rows_per_file
        self.interval = interval
        self.quiet = quiet
        self.max_backlog = max_backlog
        self._seen_lsn = -1
        self._seen_at = 0.0
        self.deferred = 0              # passes put off because ingest was busy
        self._decode = decode or _decode
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.archived_through = self._read_state()
        for tmp in self.directory.glob("day=*/*.tmp"):   # a write a crash cut short
            tmp.unlink(missing_ok=True)
        self.bytes = self._measure()
        self.rows = 0
        self.files = 0
        self.errors = 0
        self.last_error = ""
        self.on_archived: Callable[[], None] | None = None

    # -- state ------------------------------------------------------------------------------

    def _read_state(self) -> int:
        try:
            return int(json.loads((self.directory / STATE).read_text())["archived_through_segment"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("archive state unreadable (%s): archiving every sealed segment again", exc)
            return 0

    def _write_state(self, seq: int) -> None:
        path = self.directory / STATE
        tmp = path.with_name(STATE + ".tmp")
        tmp.write_text(json.dumps({"archived_through_segment": seq}) + "\n")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.rename(tmp, path)
        self.archived_through = seq

    def _measure(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("day=*/*.parquet"))

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lockfleet-archiver", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:   # below ingest: compaction is background work (Linux: a thread's own nice value)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ARCHIVER_NICE)
        except (AttributeError, OSError):
            pass
        while not self._stop.is_set():
            delay = self._defer()
            if delay > 0:
                self.deferred += 1
                self._stop.wait(delay)
                continue
            try:
                self.run_once()
            except Exception as exc:  # keep going: the next seal or tick tries again
                self.errors += 1
                self.last_error = str(exc)
                log.exception("archiving failed: %s", exc)
            self._wake.wait(self.interval)
            self._wake.clear()

    def _defer(self) -> float:
        """Seconds to put compaction off: while batches are being appended (a burst), sealed parts
        wait until the log has been still for `quiet` seconds, unless `max_backlog` of them are
        waiting (so a log that never goes quiet is still archived, and its disk use bounded)."""
        if self.quiet <= 0:
            return 0.0
        pending = sum(1 for part in self.log.sealed() if part.seq > self.archived_through)
        if not pending or pending >= self.max_backlog:
            return 0.0
        now = time.monotonic()
        lsn = self.log.appended_lsn
        if lsn != self._seen_lsn:
            self._seen_lsn, self._seen_at = lsn, now
        still = now - self._seen_at
        return 0.0 if still >= self.quiet else min(self.quiet - still, self.quiet / 2) + 0.01

    def run_once(self, today: date | None = None) -> int:
        """Archive every sealed part not yet archived, then apply retention; returns parts done."""
        done = 0
        with self._lock:
            for part in self.log.sealed():
                if self._stop.is_set():
                    break
                if part.seq <= self.archived_through:
                    continue
                self._archive(part)
                self._write_state(part.seq)
                done += 1
            self._retain(today or datetime.now(UTC).date())
        if done and self.on_archived is not None:
            self.on_archived()
        return done

    # -- one segment ------------------------------------------------------------------------

    def _archive(self, part: SealedPart) -> None:
        by_day: dict[str, list[pa.Table]] = {}
        rows_by_day: dict[str, int] = {}
        counters: dict[str, int] = {}
        for rec in self.log.read(part):
            try:
                table = archive_table(self._decode(rec.ipc), rec.host, rec.stream_id, rec.seq, rec.lsn)
            except (pa.ArrowException, OSError, ValueError) as exc:   # cannot be: it was validated
                raise LogCorrupt(f"segment {part.seq} lsn {rec.lsn}: unreadable batch ({exc})") from None
            if not table.num_rows:
                continue
            day_idx = table.column("ts_ns").to_numpy() // NS_PER_DAY
            lo, hi = int(day_idx.min()), int(day_idx.max())
            if lo == hi:
                groups = [(_day(lo), table)]
            else:  # rows of one day keep their order
                groups = [(_day(int(d)), table.filter(pa.array(day_idx == d))) for d in np.unique(day_idx)]
            for day, t in groups:
                by_day.setdefault(day, []).append(t)
                rows_by_day[day] = rows_by_day.get(day, 0) + t.num_rows
                if rows_by_day[day] >= self.rows_per_file:
                    self._write_part(part.seq, day, by_day.pop(day), counters)
                    rows_by_day[day] = 0
        for day, tables in by_day.items():
            if tables:
                self._write_part(part.seq, day, tables, counters)
        log.info("archived segment %d (lsn %d..%d) into %d file(s)", part.seq, part.first_lsn, part.last_lsn,
                 sum(counters.values()))

    def _write_part(self, seg: int, day: str, tables: list[pa.Table], counters: dict[str, int]) -> None:
        n = counters.get(day, 0)
        counters[day] = n + 1
        folder = self.directory / f"day={day}"
        folder.mkdir(exist_ok=True)
        path = folder / f"part-{seg:08d}-{n}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        table = pa.concat_tables(tables)
        old = path.stat().st_size if path.exists() else 0
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)   # e.g. disk full: the next pass writes it again
            raise
        size = path.stat().st_size
        self.bytes += size - old
        self.rows += table.num_rows
        self.files += 1

    # -- retention --------------------------------------------------------------------------

    def _retain(self, today: date) -> None:
        if self.retention_days <= 0:
            return
        oldest = today - timedelta(days=self.retention_days)
        for folder in self.directory.glob("day=*"):
            try:
                day = date.fromisoformat(folder.name[4:])
            except ValueError:
                continue
            if day < oldest:
                size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
                shutil.rmtree(folder, ignore_errors=True)
                self.bytes -= size
                log.info("retention: removed %s (older than %d days)", folder.name, self.retention_days)

    def stats(self) -> dict[str, int]:
        return {"archive_bytes": self.bytes, "archive_rows": self.rows, "archive_files": self.files,
                "archived_through_segment": self.archived_through, "archive_errors": self.errors}


def _decode(ipc: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(ipc)) as reader:
        return reader.read_all()
