"""Events as an Agent holds and sends them: rows (tuples in the order of `COLUMNS`, checked as the
service checks them), Arrow tables of the Agent's plain `SCHEMA`, and batches of the `WIRE_SCHEMA`
(lock, site and task dictionary-encoded per batch) as Arrow IPC."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ... import wire
from ...events import AGENT_COLUMNS, DEFAULTS, EventError, check_row, normalize, schema
from .event_files import to_ipc

__all__ = ["COLUMNS", "DEFAULTS", "SCHEMA", "WIRE_SCHEMA", "check_row", "conform", "empty_ipc", "encode",
           "rows_to_table"]

# One row of the buffer: the columns of SCHEMA, in its order (lockfleet.events' Agent columns).
COLUMNS = AGENT_COLUMNS
SCHEMA = schema(COLUMNS)
_STRUCT = pa.struct(list(SCHEMA))
WIRE_SCHEMA = schema(COLUMNS, dictionary=True)


def rows_to_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    # one pass over the tuples in C (about twice as fast as a column at a time)
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(pa.array(rows, type=_STRUCT))])


def encode(table: pa.Table) -> pa.RecordBatch:
    """Plain columns -> the wire schema: lock, site and task dictionary-encoded (per batch: the
    dictionary holds the names this batch uses)."""
    table = table.combine_chunks()
    arrays = []
    for f in SCHEMA:
        col = table.column(f.name)
        arr = col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks) if col.num_chunks else \
            pa.array([], f.type)
        if f.name in ("lock", "site", "task"):
            arr = pc.dictionary_encode(arr)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=WIRE_SCHEMA)


def encode_ipc(batch: pa.RecordBatch, codec: str = "") -> bytes:
    """A batch as the Arrow IPC stream bytes of `PushRequest.arrow_ipc`, body-compressed with
    `codec` ("" none; see `lockfleet.wire`)."""
    return wire.encode(batch, codec) if codec else to_ipc(batch)


def conform(data: pa.RecordBatch | pa.Table) -> pa.Table:
    """Events given as Arrow -> the Agent's plain schema, checked (EventError naming column/row)."""
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    if "host" in table.column_names and table.column("host").null_count < table.num_rows:
        raise EventError("column 'host': an Agent speaks for one host; use one Agent per host")
    normalize(table)    # required columns, types, ranges, with the column and row in the message
    cols = []
    for f in SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            cols.append(col.cast(f.type))
        elif f.name in ("site", "task"):
            cols.append(pa.nulls(table.num_rows, f.type))
        else:
            cols.append(pa.array([0] * table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=SCHEMA)


def empty_ipc(ipc: bytes) -> bytes:
    """An empty batch with the schema of `ipc`: the stand-in for a refused batch."""
    try:
        with pa.ipc.open_stream(pa.py_buffer(ipc)) as reader:
            schema = reader.schema
    except (pa.ArrowException, OSError, ValueError):
        schema = WIRE_SCHEMA
    return to_ipc(pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema))
