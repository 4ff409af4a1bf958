"""Small durable files of the publishing side: whole JSON documents replaced atomically, and an
append-only JSON-lines file whose every line is durable once `append` returns.

- `write_json_atomic(path, doc)`: written as `path.tmp`, fsynced, renamed over `path`, the
  directory fsynced: a reader (or a restart) sees the old document or the new one, never a mix.
- `JsonLines`: one JSON object per line, appended and fsynced. On open, a torn last line (a crash
  in the middle of an append: no newline, or not JSON) is cut off; damage before the last line
  stops the open with `JsonLinesCorrupt` rather than dropping what was written.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import OperationalError
from .atomic import fsync_dir, write_atomic

log = logging.getLogger(__name__)


class JsonLinesCorrupt(OperationalError, RuntimeError):
    """A JSON-lines file is damaged somewhere other than its last line."""


def write_json_atomic(path: Path, doc: Any) -> None:
    """Replace `path` with `doc` as JSON, atomically and durably; raises OSError (the old file stays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, [(json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()])


def read_json(path: Path, default: Any) -> Any:
    """The document in `path`, or `default` when there is none; ValueError names a damaged file."""
    path = Path(path)
    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


class JsonLines:
    """An append-only file of JSON objects, one a line, each durable once appended."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.torn_bytes = 0
        self._fd = -1

    def open(self) -> list[dict[str, Any]]:
        """Open for appending; returns every record already in the file (a torn last line cut)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        good = 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            line = data[pos:] if end < 0 else data[pos:end]
            try:
                if end < 0:
                    raise ValueError("no newline")
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                if end < 0 or not data[end + 1:].strip():
                    break   # the last line: torn by a crash mid-append
                raise JsonLinesCorrupt(f"{self.path}: line {len(records) + 1} is damaged ({exc}); "
                                       "move the file away to start afresh") from None
            records.append(rec)
            pos = good = end + 1
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if good < len(data):
            self.torn_bytes = len(data) - good
            log.warning("%s: cut a torn last line of %d bytes", self.path, self.torn_bytes)
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        elif not data:
            fsync_dir(self.path.parent)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and make it durable; raises OSError (then nothing of it counts)."""
        if self._fd < 0:
            raise OSError(f"{self.path} is not open")
        data = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            try:   # leave no half line behind
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

