"""Events as an Agent holds and sends them: rows (tuples in the order of `COLUMNS`, checked as the
service checks them), Arrow tables of the Agent's plain `SCHEMA`, and batches of the `WIRE_SCHEMA`
(lock, site and task dictionary-encoded per batch) as Arrow IPC."""

from __future__ import annotations

import operator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ... import wire
from ...events import EventError, normalize
from .event_files import to_ipc

# One row of the buffer: the columns of SCHEMA, in its order.
COLUMNS = ("ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site", "task")
SCHEMA = pa.schema([("ts_ns", pa.int64()), ("tid", pa.int64()), ("op", pa.uint8()), ("lock", pa.string()),
                    ("mode", pa.uint8()), ("subclass", pa.uint8()), ("instance", pa.uint64()), ("irq", pa.uint8()),
                    ("site", pa.string()), ("task", pa.string())])
_STRUCT = pa.struct(list(SCHEMA))
_DICT = pa.dictionary(pa.int32(), pa.string())
WIRE_SCHEMA = pa.schema([pa.field(f.name, _DICT if f.name in ("lock", "site", "task") else f.type) for f in SCHEMA])
DEFAULTS = {"mode": 0, "subclass": 0, "instance": 0, "irq": 0, "site": None, "task": None}


def check_row(ts_ns: Any, tid: Any, op: Any, lock: Any, mode: Any = 0, subclass: Any = 0, instance: Any = 0,
               irq: Any = 0, site: Any = None, task: Any = None) -> tuple[Any, ...]:
    """One event's values, checked as the service would check them (EventError names the field)."""
    if not isinstance(lock, str) or not lock:
        raise EventError(f"lock must be a non-empty str, not {lock!r}")
    values = []
    for name, value, (low, high) in zip(COLUMNS[:3] + COLUMNS[4:8], (ts_ns, tid, op, mode, subclass, instance, irq),
                                        _RANGE):
        try:
            v = operator.index(value)
        except TypeError:
            raise EventError(f"{name} must be an int, not {value!r}") from None
        if not low <= v <= high:
            raise EventError(f"{name} must be in {low}..{high}, not {v}")
        values.append(v)
    for name, value in (("site", site), ("task", task)):
        if value is not None and not isinstance(value, str):
            raise EventError(f"{name} must be a str or None, not {value!r}")
    return (values[0], values[1], values[2], lock, values[3], values[4], values[5], values[6], site, task)


_I64 = (-(1 << 63), (1 << 63) - 1)
_RANGE = (_I64, _I64, (0, 2), (0, 2), (0, 7), (0, (1 << 64) - 1), (0, 15))


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
