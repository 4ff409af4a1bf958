"""Snapshots: the whole state of the service at one log position, so that a restart replays only
the log after it.

`DIR/snap-<lsn, 20 digits>.lfsnap`, written as `.tmp`, fsynced, renamed, the directory fsynced: a
snapshot file is whole or absent. Its bytes:

    b"LFSNAP01" | u32 count | count x (u16 len(name) | name | u64 len(data) | data) | u32 crc32

The crc covers everything before it. Sections are opaque bytes named by the caller (the engine's
own snapshot, the gateway's streams and counters, ...). `load_newest` returns the newest snapshot
that reads back whole and restores; a damaged one (`SnapshotCorrupt`) or one written by another
version of a section's format (`SnapshotIncompatible`, raised by the caller's restore) is skipped
with a warning, and the next older one is tried. What the caller does when none restores (replay
the log, or refuse to start when the log no longer reaches back far enough) is its business.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..errors import OperationalError
from .atomic import write_atomic

log = logging.getLogger(__name__)

MAGIC = b"LFSNAP01"
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
T = TypeVar("T")


class SnapshotCorrupt(OperationalError, ValueError):
    """The snapshot file is not whole."""


class SnapshotIncompatible(OperationalError, ValueError):
    """The snapshot file is whole, but a section is in a format this build does not read (written by
    an older or newer lockfleet, with no migration from it)."""


@dataclass(frozen=True)
class SnapshotFile:
    lsn: int
    path: Path


def snapshot_files(directory: Path) -> list[SnapshotFile]:
    """Snapshots in `directory`, newest first."""
    out = []
    for path in directory.glob("snap-*.lfsnap"):
        try:
            out.append(SnapshotFile(int(path.stem.split("-")[1]), path))
        except (IndexError, ValueError):
            continue
    return sorted(out, key=lambda s: s.lsn, reverse=True)


def write_snapshot(directory: Path, lsn: int, sections: dict[str, bytes]) -> Path:
    """Write one snapshot atomically; returns its path. Raises OSError (nothing is left behind)."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = [MAGIC, _U32.pack(len(sections))]
    for name, data in sections.items():
        raw = name.encode()
        parts += [_U16.pack(len(raw)), raw, _U64.pack(len(data)), data]
    crc = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
    parts.append(_U32.pack(crc))
    path = directory / f"snap-{lsn:020d}.lfsnap"
    write_atomic(path, parts)
    return path


def read_snapshot(path: Path) -> dict[str, bytes]:
    """The sections of one snapshot; raises SnapshotCorrupt or OSError."""
    data = path.read_bytes()
    if len(data) < len(MAGIC) + 8 or data[: len(MAGIC)] != MAGIC:
        raise SnapshotCorrupt(f"{path}: not a lockfleet snapshot")
    (crc,) = _U32.unpack_from(data, len(data) - 4)
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise SnapshotCorrupt(f"{path}: checksum mismatch (damaged or cut short)")
    pos = len(MAGIC)
    (count,) = _U32.unpack_from(data, pos)
    pos += 4
    out: dict[str, bytes] = {}
    try:
        for _ in range(count):
            (n,) = _U16.unpack_from(data, pos)
            name = data[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (m,) = _U64.unpack_from(data, pos)
            pos += 8
            if pos + m > len(data) - 4:
                raise SnapshotCorrupt(f"{path}: section {name!r} runs past the end")
            out[name] = data[pos : pos + m]
            pos += m
    except (struct.error, UnicodeDecodeError) as exc:
        raise SnapshotCorrupt(f"{path}: malformed ({exc})") from None
    return out


def load_newest(directory: Path, restore: Callable[[int, dict[str, bytes]], T]) -> tuple[int, T | None, list[str]]:
    """The newest snapshot that reads and restores: (lsn, restore's result, problems met).
    (0, None, problems) when there is none."""
    problems: list[str] = []
    for tmp in directory.glob("snap-*.lfsnap.tmp"):
        tmp.unlink(missing_ok=True)
    for snap in snapshot_files(directory):
        try:
            sections = read_snapshot(snap.path)
            return snap.lsn, restore(snap.lsn, sections), problems
        except Exception as exc:  # a damaged or incompatible snapshot: try an older one
            problems.append(f"{snap.path.name}: {exc}")
            log.warning("skipping snapshot %s: %s", snap.path, exc)
    return 0, None, problems


def section_format(data: bytes) -> str:
    """A section's format as its leading magic shows it (e.g. `LFENG001`), for messages."""
    head = bytes(data[:8])
    return head.decode("ascii") if head.isascii() and head.isalnum() else f"bytes {head.hex()}"


def prune_snapshots(directory: Path, keep: int = 2) -> list[SnapshotFile]:
    """Delete all but the `keep` newest snapshots; returns the ones kept (newest first)."""
    files = snapshot_files(directory)
    for old in files[keep:]:
        old.path.unlink(missing_ok=True)
    return files[:keep]

