"""The segment log: the embedded EventLog. Append-only, checksummed, group-committed segment files.

Layout: `DIR/seg-00000001.log`, `DIR/seg-00000002.log`, ... Each segment is created whole (written
as `.tmp`, fsynced, renamed) with a 16-byte header, the magic `LFSEG002` and the u64 LSN of its
first record, followed by records:

    u32 length | u32 crc32(payload) | payload
    payload = u64 lsn | u16 len(host) | host | u16 len(stream_id) | stream_id | u64 seq | Arrow IPC bytes

little-endian, strings utf-8, LSNs consecutive. One writer thread takes whatever records are
queued (waiting up to `group_delay` for a group to form), writes them and fsyncs once for all of
them (`fsync="group"`); `"always"` fsyncs each record on its own, `"never"` leaves it to the OS
(a process crash loses nothing, a machine crash may). A failed write or fsync (disk full, I/O
error) truncates the segment back to its last durable byte, marks the log unavailable and retries
the same records every `retry_interval` seconds until it succeeds: nothing after a gap is ever
written, and nothing is lost from memory while the process lives.

A crash mid-write leaves a torn tail (short record or bad crc) in the last segment: `replay` cuts
it off. Damage anywhere else raises LogCorrupt rather than silently dropping acknowledged batches.
Segments roll at `segment_bytes` or when the active one is older than `segment_seconds`; sealed
segments are immutable, read by the archiver, and dropped once archived and snapshotted.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .atomic import fsync_dir
from .eventlog import EventLog, LogCorrupt, LogUnavailable, Record, SealedPart

log = logging.getLogger(__name__)

MAGIC = b"LFSEG002"
_HEADER = struct.Struct("<8sQ")   # magic, first lsn
_FRAME = struct.Struct("<II")     # length, crc32
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
MAX_RECORD = 1 << 31
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_SEGMENT_SECONDS = 600.0
DEFAULT_GROUP_DELAY = 0.002
GROUP_BYTES = 8 << 20             # a group is written at once when this much is queued
FSYNC_MODES = ("always", "group", "never")


def encode(record: Record, lsn: int) -> bytes:
    """The record's bytes on disk, frame included."""
    return b"".join(frame_parts(record, lsn))


def frame_parts(record: Record, lsn: int) -> tuple[bytes, bytes]:
    """The record's bytes on disk as (frame and header, the IPC bytes as they are): written with
    one writev, so that a batch's bytes are not copied on their way to the file."""
    host, sid = record.host.encode(), record.stream_id.encode()
    if len(host) > 0xFFFF or len(sid) > 0xFFFF:
        raise ValueError("host and stream_id must be at most 65535 bytes")
    head = b"".join((_U64.pack(lsn), _U16.pack(len(host)), host, _U16.pack(len(sid)), sid, _U64.pack(record.seq)))
    crc = zlib.crc32(record.ipc, zlib.crc32(head))
    return _FRAME.pack(len(head) + len(record.ipc), crc) + head, record.ipc


def decode(payload: memoryview | bytes) -> Record:
    """A record from its (checksummed) payload."""
    (lsn,) = _U64.unpack_from(payload, 0)
    (n,) = _U16.unpack_from(payload, 8)
    host = bytes(payload[10 : 10 + n]).decode()
    pos = 10 + n
    (m,) = _U16.unpack_from(payload, pos)
    sid = bytes(payload[pos + 2 : pos + 2 + m]).decode()
    pos += 2 + m
    (seq,) = _U64.unpack_from(payload, pos)
    return Record(host=host, stream_id=sid, seq=seq, ipc=bytes(payload[pos + 8 :]), lsn=lsn)


def scan(data: bytes) -> tuple[list[Record], int]:
    """Records of one segment's bytes (after the header) and the end of the last good one."""
    out: list[Record] = []
    view = memoryview(data)
    pos = good = _HEADER.size
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if length > MAX_RECORD or length < 20 or end > len(data):
            break
        payload = view[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            break
        out.append(decode(payload))
        pos = good = end
    return out, good


@dataclass
class _Pending:
    record: Record
    lsn: int
    on_durable: Callable[[], None] | None
    frame: tuple[bytes, bytes] = (b"", b"")   # frame_parts(), once encoded
    size: int = 0


@dataclass
class _Segment:
    seq: int
    path: Path
    first_lsn: int
    last_lsn: int = 0       # 0: no record yet
    size: int = 0


class SegmentLog(EventLog):
    """The embedded log in `directory` (see the module doc). Thread-safe after `start()`."""

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 segment_seconds: float = DEFAULT_SEGMENT_SECONDS, fsync: str = "group",
                 group_delay: float = DEFAULT_GROUP_DELAY, retry_interval: float = 1.0) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.fsync = fsync
        self.group_delay = group_delay if fsync == "group" else 0.0
        self.retry_interval = retry_interval
        self.torn_bytes = 0
        self.on_seal: Callable[[], None] | None = None
        self.on_fsync: Callable[[float], None] | None = None
        self._sealed: list[_Segment] = []
        self._active: _Segment | None = None
        self._active_since = time.monotonic()
        self._fd = -1
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queue_bytes = 0
        self._next_lsn = 1
        self._durable = 0
        self._error = ""
        self._closing = False
        self._closed = False
        self._replayed = False
        self._thread: threading.Thread | None = None
        self._records = 0
        self._bytes = 0
        self._groups = 0
        self._fsyncs = 0
        self._write_errors = 0

    # -- replay -----------------------------------------------------------------------------

    def _list(self) -> list[_Segment]:
        for tmp in self.directory.glob("seg-*.log.tmp"):   # a roll that did not finish
            tmp.unlink()
        segs = []
        for path in sorted(self.directory.glob("seg-*.log")):
            try:
                seq = int(path.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            with open(path, "rb") as f:
                head = f.read(_HEADER.size)
            if len(head) < _HEADER.size or head[:8] != MAGIC:
                raise LogCorrupt(f"{path}: not a lockfleet log segment (bad header)")
            segs.append(_Segment(seq=seq, path=path, first_lsn=_HEADER.unpack(head)[1], size=path.stat().st_size))
        return segs

    def first_lsn(self) -> int:
        """The lsn the oldest segment starts at: 1 while no segment was ever dropped, more once
        archived segments were pruned; 0 when the log has no segment at all."""
        segs = self._list()
        return segs[0].first_lsn if segs else 0

    def replay(self, after_lsn: int = 0) -> Iterator[Record]:
        segs = self._list()
        if segs and segs[0].first_lsn > after_lsn + 1:
            raise LogCorrupt(f"{segs[0].path} starts at lsn {segs[0].first_lsn}, but replay needs lsn "
                             f"{after_lsn + 1} onwards: the log before it is gone and no snapshot covers it")
        expected = segs[0].first_lsn if segs else after_lsn + 1
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            if seg.first_lsn != expected:
                raise LogCorrupt(f"{seg.path} starts at lsn {seg.first_lsn}; expected {expected}")
            if not last and segs[i + 1].first_lsn <= after_lsn + 1:
                seg.last_lsn = segs[i + 1].first_lsn - 1          # wholly covered: not read
                expected = seg.last_lsn + 1
                self._records += seg.last_lsn - seg.first_lsn + 1
                self._bytes += seg.size
                self._sealed.append(seg)
                continue
            data = seg.path.read_bytes()
            records, good = scan(data)
            for rec in records:
                if rec.lsn != expected:
                    raise LogCorrupt(f"{seg.path}: record with lsn {rec.lsn} where lsn {expected} belongs")
                expected += 1
            if good != len(data):
                if not last:
                    raise LogCorrupt(f"{seg.path}: damaged record at byte {good} of {len(data)} in a sealed segment")
                self.torn_bytes += len(data) - good
                log.warning("cutting a torn tail of %d bytes off %s (a write that was never acknowledged)",
                            len(data) - good, seg.path)
                with open(seg.path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                seg.size = good
            seg.last_lsn = records[-1].lsn if records else 0
            self._records += len(records)
            self._bytes += seg.size
            for rec in records:
                if rec.lsn > after_lsn:
                    yield rec
            if last:
                self._active = seg
            elif seg.last_lsn:
                self._sealed.append(seg)
            else:
                raise LogCorrupt(f"{seg.path}: a sealed segment without records")
        if after_lsn >= expected:
            raise LogCorrupt(f"the snapshot is at lsn {after_lsn} but the log ends at lsn {expected - 1}")
        self._next_lsn = expected
        self._durable = expected - 1
        if self._active is None:
            self._active = self._create(1, expected)
        self._fd = os.open(self._active.path, os.O_WRONLY | os.O_APPEND)
        self._active_since = time.monotonic()
        self._replayed = True

    def start(self) -> None:
        if not self._replayed:
            raise RuntimeError("replay() the log to its end before start()")
        self._thread = threading.Thread(target=self._run, name="lockfleet-log-writer", daemon=True)
        self._thread.start()

    # -- appending ---------------------------------------------------------------------------

    def append(self, record: Record, on_durable: Callable[[], None] | None = None) -> int:
        with self._cond:
            if self._closing or not self._replayed:
                raise LogUnavailable("the log is closed")
            lsn = self._next_lsn
            self._next_lsn += 1
            self._queue.append(_Pending(record, lsn, on_durable))
            self._queue_bytes += len(record.ipc)
            self._cond.notify_all()
        return lsn

    def wait_durable(self, lsn: int, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._durable < lsn:
                if self._error:
                    raise LogUnavailable(self._error)
                if self._closed:
                    raise LogUnavailable("the log was closed before this record was written")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def durable_lsn(self) -> int:
        return self._durable

    @property
    def appended_lsn(self) -> int:
        return self._next_lsn - 1

    @property
    def error(self) -> str:
        return self._error

    # -- the writer --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    if self._roll_due():
                        break
                    self._cond.wait(1.0 if self.segment_seconds else None)
                if self._closing and not self._queue:
                    return
                if self._queue and self.group_delay > 0 and self._queue_bytes < GROUP_BYTES:
                    deadline = time.monotonic() + self.group_delay
                    while self._queue_bytes < GROUP_BYTES and not self._closing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                group = list(self._queue)
            try:
                if group:
                    self._write(group)
                elif self._roll_due():
                    self._roll()
            except OSError as exc:
                self._failed(exc)
                with self._cond:
                    if self._closing and self._abandon:
                        return
                    self._cond.wait(self.retry_interval)
                    if self._closing and self._abandon:
                        return

    _abandon = False

    def _roll_due(self) -> bool:
        a = self._active
        return bool(a and a.last_lsn and self.segment_seconds
                    and time.monotonic() - self._active_since >= self.segment_seconds)

    def _write(self, group: list[_Pending]) -> None:
        """Write (and fsync) the group in chunks; each chunk is marked durable as it lands."""
        chunk: list[_Pending] = []
        chunk_bytes = 0
        active = self._active
        assert active is not None
        for p in group:
            if not p.size:
                p.frame = frame_parts(p.record, p.lsn)
                p.size = len(p.frame[0]) + len(p.frame[1])
            if (active.last_lsn or chunk) and active.size + chunk_bytes + p.size > self.segment_bytes:
                if chunk:
                    self._flush(chunk)
                    chunk, chunk_bytes = [], 0
                self._roll()
                active = self._active
                assert active is not None
            chunk.append(p)
            chunk_bytes += p.size
            if self.fsync == "always":
                self._flush(chunk)
                chunk, chunk_bytes = [], 0
        if chunk:
            self._flush(chunk)

    def _flush(self, chunk: list[_Pending]) -> None:
        active = self._active
        assert active is not None
        pieces = [b for p in chunk for b in p.frame]
        size = sum(p.size for p in chunk)
        try:
            _write_all(self._fd, pieces)
            if self.fsync != "never":
                t0 = time.perf_counter()
                _fsync(self._fd)
                self._fsyncs += 1
                if self.on_fsync is not None:
                    self.on_fsync(time.perf_counter() - t0)
        except OSError:
            try:  # leave no partial record behind: later writes must not follow garbage
                os.ftruncate(self._fd, active.size)
            except OSError:
                pass
            raise
        if not active.last_lsn:
            self._active_since = time.monotonic()
        active.size += size
        active.last_lsn = chunk[-1].lsn
        callbacks = []
        with self._cond:
            for _ in chunk:
                p = self._queue.popleft()
                self._queue_bytes -= len(p.record.ipc)
                if p.on_durable is not None:
                    callbacks.append(p.on_durable)
            self._durable = chunk[-1].lsn
            self._records += len(chunk)
            self._bytes += size
            self._groups += 1
            if self._error:
                log.warning("the log is writable again after %d failed attempts", self._write_errors)
            self._error = ""
            self._cond.notify_all()
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a callback must not stop the writer
                log.exception("on_durable callback failed")

    def _failed(self, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        with self._cond:
            first = not self._error
            self._write_errors += 1
            self._error = (f"the segment log in {self.directory} cannot be written: {reason} "
                           f"(errno {exc.errno}); retrying every {self.retry_interval:g}s")
            self._cond.notify_all()
        if first:
            log.error("%s; %d records wait in memory", self._error, len(self._queue))

    # -- segments ----------------------------------------------------------------------------

    def _create(self, seq: int, first_lsn: int) -> _Segment:
        path = self.directory / f"seg-{seq:08d}.log"
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, _HEADER.pack(MAGIC, first_lsn))
                _fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            _fsync_dir(self.directory)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self._bytes += _HEADER.size
        return _Segment(seq=seq, path=path, first_lsn=first_lsn, size=_HEADER.size)

    def _roll(self) -> None:
        old = self._active
        assert old is not None
        new = self._create(old.seq + 1, old.last_lsn + 1)   # raises before anything changes
        if self.fsync == "never":
            _fsync(self._fd)   # a sealed segment is on disk whole, whatever the mode
        os.close(self._fd)
        self._fd = os.open(new.path, os.O_WRONLY | os.O_APPEND)
        with self._cond:
            self._sealed.append(old)
            self._active = new
        self._active_since = time.monotonic()
        log.info("sealed %s (lsn %d..%d, %d bytes)", old.path.name, old.first_lsn, old.last_lsn, old.size)
        if self.on_seal is not None:
            self.on_seal()

    def sealed(self) -> list[SealedPart]:
        with self._cond:
            return [SealedPart(seq=s.seq, first_lsn=s.first_lsn, last_lsn=s.last_lsn, bytes=s.size, path=s.path)
                    for s in self._sealed]

    def read(self, part: SealedPart) -> Iterator[Record]:
        assert part.path is not None
        data = part.path.read_bytes()
        records, good = scan(data)
        if good != len(data):
            raise LogCorrupt(f"{part.path}: damaged record at byte {good} of {len(data)} in a sealed segment")
        yield from records

    def drop(self, part: SealedPart) -> None:
        with self._cond:
            seg = next((s for s in self._sealed if s.seq == part.seq), None)
            if seg is None:
                return
            if seg is not self._sealed[0]:
                raise ValueError("drop sealed segments oldest first")
            self._sealed.pop(0)
            self._bytes -= seg.size
        seg.path.unlink(missing_ok=True)
        log.info("dropped %s (archived, and covered by a snapshot)", seg.path.name)

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"log_records": self._records, "log_bytes": self._bytes, "log_segments": len(self._sealed) + 1,
                    "log_torn_bytes": self.torn_bytes, "log_queued": len(self._queue),
                    "log_queued_bytes": self._queue_bytes, "log_groups": self._groups, "log_fsyncs": self._fsyncs,
                    "log_write_errors": self._write_errors, "log_durable_lsn": self._durable}

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                with self._cond:
                    log.error("closing the log with %d records not written: %s", len(self._queue),
                              self._error or "the writer did not finish in time")
                    self._abandon = True
                    self._cond.notify_all()
                self._thread.join(self.retry_interval + 5)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


_IOV_MAX = 512


def _write_all(fd: int, data: bytes | list[bytes]) -> None:
    """Write `data` (bytes, or pieces written in order with writev: no copy to join them)."""
    views = [memoryview(b) for b in ([data] if isinstance(data, bytes) else data) if b]
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i:i + _IOV_MAX])
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


def _fsync(fd: int) -> None:
    os.fsync(fd)


_fsync_dir = fsync_dir
