"""Event files an agent sends: Parquet or Arrow IPC (file or stream format), read, checked
against the schema locally, cut into batches and encoded for the wire."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ...errors import InputError
from ...events import EventError, normalize

BATCH_ROWS = 65536
_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"


class FileError(InputError):
    """The file is missing, unreadable, not Parquet/Arrow, or not lock events."""


@dataclass(frozen=True)
class EventFile:
    path: Path
    sha256: str                     # of the file's bytes
    batches: tuple[pa.RecordBatch, ...]

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)

    def stream_id(self, host: str) -> str:
        """The same file pushed for the same host is the same stream: resends are duplicates."""
        return hashlib.sha256(f"{host}\0{BATCH_ROWS}\0{self.sha256}".encode()).hexdigest()[:32]


def read_event_file(path: str | Path, batch_rows: int = BATCH_ROWS) -> EventFile:
    """Read, validate (naming column and row) and cut one event file; raises FileError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    table = _parse(path, data)
    batches = tuple(table.to_batches(max_chunksize=batch_rows)) if table.num_rows else ()
    row = 0
    for batch in batches:
        try:
            normalize(batch, row_offset=row)
        except EventError as exc:
            raise FileError(f"{path}: {exc}") from None
        row += batch.num_rows
    if not batches:  # still check the schema of an empty file
        try:
            normalize(table)
        except EventError as exc:
            raise FileError(f"{path}: {exc}") from None
    return EventFile(path=path, sha256=hashlib.sha256(data).hexdigest(), batches=batches)


def _parse(path: Path, data: bytes) -> pa.Table:
    buf = pa.py_buffer(data)
    try:
        if data[:4] == _PARQUET_MAGIC:
            return pq.read_table(pa.BufferReader(buf))
        if data[:6] == _ARROW_FILE_MAGIC:
            return pa.ipc.open_file(buf).read_all()
        return pa.ipc.open_stream(buf).read_all()
    except (pa.ArrowException, OSError) as exc:
        kind = "Parquet" if data[:4] == _PARQUET_MAGIC else "Arrow IPC"
        if data[:4] != _PARQUET_MAGIC and data[:6] != _ARROW_FILE_MAGIC:
            raise FileError(f"{path}: not a Parquet or Arrow IPC file") from None
        raise FileError(f"{path}: damaged {kind} file: {_one_line(str(exc))}") from None


def to_ipc(batch: pa.RecordBatch) -> bytes:
    """One batch as Arrow IPC stream bytes (schema + batch), as PushRequest.arrow_ipc carries it."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _one_line(text: str) -> str:
    return " ".join(text.split())
