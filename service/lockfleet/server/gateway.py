"""The gateway: admits pushed batches into the engine, exactly once and durably.

For each batch: check its seq against the (host, stream_id) high-water mark (a resent batch is a
duplicate, a skipped one is refused), decode the Arrow IPC bytes, apply them with `Engine.ingest`
(which validates the batch whole and applies nothing if it is bad), append it to the segment log
and fsync, and only then acknowledge. One lock serializes the engine and the log, so the log's
order is the order the engine saw, and replaying it rebuilds the same state.

Knows nothing of grpc: outcomes carry gRPC status code *names* for the servicer to pass on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa

from ..engine import Engine
from ..events import EventError
from ..store import Record, SegmentLog

log = logging.getLogger("lockfleet.server")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What to acknowledge for one batch."""

    seq: int
    ok: bool
    duplicate: bool = False
    code: str = ""            # gRPC status code name when not ok
    error: str = ""
    events: int = 0
    new_alerts: tuple[str, ...] = ()


@dataclass
class Counters:
    batches: int = 0          # batches applied since start (replayed ones included)
    events: int = 0
    duplicates: int = 0
    refused: int = 0
    replayed: int = 0


@dataclass(frozen=True)
class ReplayReport:
    batches: int
    events: int
    streams: int
    torn_bytes: int
    seconds: float
    skipped: int = 0


class Gateway:
    """Thread-safe front of one Engine and its SegmentLog."""

    def __init__(self, engine: Engine, seglog: SegmentLog) -> None:
        self._engine = engine
        self._log = seglog
        self._lock = threading.Lock()
        self._high_water: dict[tuple[str, str], int] = {}  # (host, stream_id) -> last seq applied
        self._broken = ""
        self.counters = Counters()

    # -- start-up -------------------------------------------------------------------------

    def replay(self) -> ReplayReport:
        """Apply every logged batch to the (fresh) engine and rebuild the high-water marks."""
        start = time.monotonic()
        skipped = 0
        with self._lock:
            for rec in self._log.replay():
                key = (rec.host, rec.stream_id)
                if rec.seq <= self._high_water.get(key, 0):
                    skipped += 1  # cannot happen with this gateway; tolerate it
                    continue
                try:
                    table = _decode(rec.ipc)
                    self._engine.ingest(table, host=rec.host)
                except (EventError, pa.ArrowException) as exc:
                    skipped += 1
                    log.error("replay: skipped logged batch host=%s stream=%s seq=%d: %s",
                              rec.host, rec.stream_id, rec.seq, exc)
                    continue
                self._high_water[key] = rec.seq
                self.counters.batches += 1
                self.counters.replayed += 1
                self.counters.events += table.num_rows
        return ReplayReport(batches=self.counters.replayed, events=self.counters.events,
                            streams=len(self._high_water), torn_bytes=self._log.torn_bytes,
                            seconds=time.monotonic() - start, skipped=skipped)

    # -- ingest ---------------------------------------------------------------------------

    def push(self, host: str, stream_id: str, seq: int, ipc: bytes) -> Outcome:
        """Admit one batch; never raises for bad input (the outcome says why)."""
        with self._lock:
            return self._push(host, stream_id, seq, ipc)

    def _push(self, host: str, stream_id: str, seq: int, ipc: bytes) -> Outcome:
        if self._broken:
            return Outcome(seq=seq, ok=False, code="UNAVAILABLE", error=self._broken)
        if not host:
            return self._refuse(host, seq, "INVALID_ARGUMENT", "host is empty: every batch names the host whose events it holds")
        if not stream_id:
            return self._refuse(host, seq, "INVALID_ARGUMENT", "stream_id is empty: name the agent's stream of batches")
        if seq < 1:
            return self._refuse(host, seq, "INVALID_ARGUMENT", "seq must start at 1 and count up within (host, stream_id)")
        key = (host, stream_id)
        high = self._high_water.get(key, 0)
        if seq <= high:
            self.counters.duplicates += 1
            return Outcome(seq=seq, ok=True, duplicate=True)
        if seq > high + 1:
            return self._refuse(host, seq, "FAILED_PRECONDITION",
                                f"seq {seq} skips ahead: expected seq {high + 1} next for host {host!r} "
                                f"stream {stream_id!r}; resend from there")
        try:
            table = _decode(ipc)
        except pa.ArrowException as exc:
            return self._refuse(host, seq, "INVALID_ARGUMENT", f"batch seq {seq}: arrow_ipc is not an Arrow IPC stream ({exc})")
        try:
            new = self._engine.ingest(table, host=host)
        except EventError as exc:
            return self._refuse(host, seq, "INVALID_ARGUMENT", f"batch seq {seq}: {exc}")
        except Exception as exc:  # an engine bug: report it, keep serving
            log.exception("engine failed on batch host=%s stream=%s seq=%d", host, stream_id, seq)
            return self._refuse(host, seq, "INTERNAL", f"batch seq {seq}: the engine failed ({type(exc).__name__}: "
                                                       f"{exc}); see the service log")
        try:
            self._log.append(Record(host=host, stream_id=stream_id, seq=seq, ipc=ipc))
        except OSError as exc:
            # the engine is now ahead of the disk: take no more batches until a restart
            self._broken = f"the segment log could not be written ({exc}); restart the service"
            log.critical("%s; batch host=%s stream=%s seq=%d was not acknowledged", self._broken, host, stream_id, seq)
            return Outcome(seq=seq, ok=False, code="UNAVAILABLE", error=self._broken)
        self._high_water[key] = seq
        self.counters.batches += 1
        self.counters.events += table.num_rows
        for alert in new:
            log.warning("new %s alert %s: %s on hosts %s", alert.kind, alert.id,
                        " -> ".join(alert.locks), ", ".join(alert.hosts))
        return Outcome(seq=seq, ok=True, events=table.num_rows, new_alerts=tuple(a.id for a in new))

    def _refuse(self, host: str, seq: int, code: str, error: str) -> Outcome:
        self.counters.refused += 1
        log.warning("refused batch from host %r: %s: %s", host, code, error)
        return Outcome(seq=seq, ok=False, code=code, error=error)

    # -- queries --------------------------------------------------------------------------

    def read(self, fn: Callable[[Engine], T]) -> T:
        """Run a read-only query against the engine, serialized with ingest."""
        with self._lock:
            return fn(self._engine)

    def ingest_stats(self) -> dict[str, int]:
        with self._lock:
            c = self.counters
            return {"batches": c.batches, "events": c.events, "duplicates": c.duplicates,
                    "refused": c.refused, "replayed": c.replayed,
                    "streams": len(self._high_water),
                    "log_records": self._log.records, "log_bytes": self._log.bytes}

    def close(self) -> None:
        with self._lock:
            self._log.close()


def _decode(ipc: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(ipc)) as reader:
        return reader.read_all()
