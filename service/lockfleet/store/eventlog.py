"""The log interface the service writes every accepted batch to, and replays on start.

The gateway needs only this much of a log, so that the embedded segment log (segment_log.py) and,
later, a distributed bus (NATS JetStream: a stream per fleet, the LSN its stream sequence) can sit
behind the same calls:

- every record gets a log sequence number (LSN) 1, 2, 3, ... in append order, which is the order the
  engine applied it in; `replay(after_lsn)` yields the records after an LSN (a snapshot's) in order;
- `append` only enqueues (it never blocks on the disk); `wait_durable(lsn)` returns once the record
  and all before it are durable, and raises LogUnavailable while the log cannot be written (the
  record is kept and retried: it becomes durable once the log recovers);
- sealed parts (segments) can be read again for archiving and dropped once archived and covered by
  a snapshot.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import OperationalError


class LogCorrupt(OperationalError, RuntimeError):
    """The log is damaged somewhere other than its tail, or does not reach back far enough."""


class LogUnavailable(OperationalError, RuntimeError):
    """The log cannot be written right now (disk full, I/O error, closed); the reason is the message."""


@dataclass(frozen=True)
class Record:
    """One accepted batch: whose, which stream, which seq, and its Arrow IPC stream bytes.
    `lsn` is assigned by the log (0 before append)."""

    host: str
    stream_id: str
    seq: int
    ipc: bytes
    lsn: int = 0


@dataclass(frozen=True)
class SealedPart:
    """A part of the log that receives no more appends: LSNs first_lsn..last_lsn."""

    seq: int
    first_lsn: int
    last_lsn: int
    bytes: int
    path: Path | None = None


class EventLog(abc.ABC):
    """An ordered, durable log of Records (see the module doc)."""

    @abc.abstractmethod
    def replay(self, after_lsn: int = 0) -> Iterator[Record]:
        """Records with lsn > after_lsn in order; a torn tail is cut; then the log accepts appends."""

    @abc.abstractmethod
    def start(self) -> None:
        """Begin writing (after replay)."""

    @abc.abstractmethod
    def append(self, record: Record, on_durable: Callable[[], None] | None = None) -> int:
        """Enqueue a record; return its LSN. `on_durable` runs (on the writer) once it is durable."""

    @abc.abstractmethod
    def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        """True once `lsn` is durable, False on timeout; raises LogUnavailable while failing."""

    @property
    @abc.abstractmethod
    def durable_lsn(self) -> int: ...

    @property
    @abc.abstractmethod
    def appended_lsn(self) -> int: ...

    @property
    @abc.abstractmethod
    def error(self) -> str:
        """Why the log cannot be written right now; empty when it can."""

    @abc.abstractmethod
    def sealed(self) -> list[SealedPart]:
        """Sealed parts, oldest first."""

    @abc.abstractmethod
    def read(self, part: SealedPart) -> Iterator[Record]:
        """The records of one sealed part, in order."""

    @abc.abstractmethod
    def drop(self, part: SealedPart) -> None:
        """Forget a sealed part (archived and covered by a snapshot)."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters: records, bytes, segments, torn_bytes, ..."""

    @abc.abstractmethod
    def close(self, timeout: float = 10.0) -> None:
        """Write what is pending (up to `timeout`), then stop."""

    on_seal: Callable[[], None] | None = None
    on_fsync: Callable[[float], None] | None = None

