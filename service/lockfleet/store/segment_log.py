"""The segment log: an append-only, checksummed record of every accepted batch, replayed on start.

Layout: `DIR/seg-00000001.log`, `DIR/seg-00000002.log`, ... Each segment starts with the 8-byte
magic `LFSEG001`, then records:

    u32 length | u32 crc32(payload) | payload
    payload = u16 len(host) | host | u16 len(stream_id) | stream_id | u64 seq | Arrow IPC bytes

little-endian, strings utf-8. `append` returns only after the record is on disk (fsync). A crash
mid-append leaves a torn tail (short record or bad crc) in the last segment; `replay` cuts it off.
Damage anywhere else is not a torn tail: it raises LogCorrupt rather than silently dropping
acknowledged batches.

Use: `log = SegmentLog(dir)`, iterate `log.replay()` to the end, then `log.append(...)`.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MAGIC = b"LFSEG001"
_FRAME = struct.Struct("<II")  # length, crc32
_U16 = struct.Struct("<H")
_U64 = struct.Struct("<Q")
MAX_RECORD = 1 << 30
DEFAULT_SEGMENT_BYTES = 256 << 20


class LogCorrupt(RuntimeError):
    """The log is damaged somewhere other than its tail."""


@dataclass(frozen=True)
class Record:
    """One accepted batch: whose, which stream, which seq, and its Arrow IPC stream bytes."""

    host: str
    stream_id: str
    seq: int
    ipc: bytes


def encode(record: Record) -> bytes:
    """The record's bytes on disk, frame included."""
    host, sid = record.host.encode(), record.stream_id.encode()
    if len(host) > 0xFFFF or len(sid) > 0xFFFF:
        raise ValueError("host and stream_id must be at most 65535 bytes")
    payload = b"".join((_U16.pack(len(host)), host, _U16.pack(len(sid)), sid, _U64.pack(record.seq), record.ipc))
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> Record:
    """A record from its (checksummed) payload."""
    (n,) = _U16.unpack_from(payload, 0)
    host = payload[2 : 2 + n].decode()
    pos = 2 + n
    (m,) = _U16.unpack_from(payload, pos)
    sid = payload[pos + 2 : pos + 2 + m].decode()
    pos += 2 + m
    (seq,) = _U64.unpack_from(payload, pos)
    return Record(host=host, stream_id=sid, seq=seq, ipc=payload[pos + 8 :])


class SegmentLog:
    """Append-only log of Records in `directory`; not thread-safe (the caller serializes)."""

    def __init__(self, directory: Path, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self.records = 0          # records in the log (replayed + appended)
        self.bytes = 0            # bytes in the log
        self.torn_bytes = 0       # bytes cut off the tail on replay
        self._file: BinaryIO | None = None
        self._size = 0            # size of the open (last) segment
        self._replayed = False

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("seg-*.log"))

    def replay(self) -> Iterator[Record]:
        """Yield every record in order; cut off a torn tail; then the log is open for appends."""
        segments = self.segments()
        for i, path in enumerate(segments):
            last = i == len(segments) - 1
            yield from self._read_segment(path, last)
        if segments:
            self._open_for_append(segments[-1])
        else:
            self._new_segment(1)
        self._replayed = True

    def _read_segment(self, path: Path, last: bool) -> Iterator[Record]:
        with open(path, "rb") as f:
            data = f.read()
        good = 0
        if data[: len(MAGIC)] == MAGIC:
            pos = good = len(MAGIC)
            while pos + _FRAME.size <= len(data):
                length, crc = _FRAME.unpack_from(data, pos)
                end = pos + _FRAME.size + length
                if length > MAX_RECORD or end > len(data):
                    break
                payload = data[pos + _FRAME.size : end]
                if zlib.crc32(payload) != crc:
                    break
                yield decode(payload)
                self.records += 1
                pos = good = end
        if good == len(data):
            self.bytes += good
            return
        if not last:
            raise LogCorrupt(f"{path}: damaged record at byte {good} of {len(data)} in a sealed segment")
        # torn tail: a crash during the last append; that batch was never acknowledged
        self.torn_bytes += len(data) - good
        with open(path, "r+b") as f:
            if good == 0:
                f.write(MAGIC)
                good = len(MAGIC)
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
        self.bytes += good

    def append(self, record: Record) -> None:
        """Write one record and fsync it; raises OSError if that fails."""
        if not self._replayed:
            raise RuntimeError("replay() the log to its end before appending")
        frame = encode(record)
        if self._size >= self.segment_bytes:
            self._roll()
        f = self._file
        assert f is not None
        try:
            f.write(frame)
            f.flush()
            os.fsync(f.fileno())
        except OSError:
            # leave no partial record behind: later appends must not follow garbage
            try:
                f.truncate(self._size)
            except OSError:
                pass
            raise
        self._size += len(frame)
        self.bytes += len(frame)
        self.records += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_for_append(self, path: Path) -> None:
        self._file = open(path, "ab")
        self._size = path.stat().st_size

    def _new_segment(self, index: int) -> None:
        path = self.directory / f"seg-{index:08d}.log"
        with open(path, "xb") as f:
            f.write(MAGIC)
            f.flush()
            os.fsync(f.fileno())
        self._fsync_dir()
        self.bytes += len(MAGIC)
        self._open_for_append(path)

    def _roll(self) -> None:
        last = self.segments()[-1]
        self.close()
        self._new_segment(int(last.stem.split("-")[1]) + 1)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
