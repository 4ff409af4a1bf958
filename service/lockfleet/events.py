"""The lock-event schema (docs/contract.md section 2), its one home in the code.

What an event is: the op codes, modes and irq flags (`Op`, `Mode`, `Irq`), the columns and their
Arrow types (`SCHEMA`, and `schema()` for the subsets and encodings senders write), the value
limits, lockdep's `name/N` class names (`split_class`), and the two checks made against them:
`normalize(batch)` for an Arrow batch and `check_row(...)` for one event given as Python values.
Nothing else in the package defines any of these (tests/test_schema_home.py keeps it so).

`normalize(batch)` checks a batch whole (a refused batch raises `EventError` naming the column and
row, and nothing of it may be applied) and returns `Events`: flat numpy views of the columns, with
every string column dictionary-encoded so that each distinct name is handed to the engine once per
batch, never once per row.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _columns
from .errors import InputError


class Op(IntEnum):
    """The `op` column."""

    ACQUIRE = 0
    RELEASE = 1
    TRY_ACQUIRE = 2      # a trylock that succeeded: pushed, but no dependency into it


class Mode(IntEnum):
    """The `mode` column."""

    EXCLUSIVE = 0        # write
    SHARED = 1           # non-recursive read
    RECURSIVE_READ = 2


class Irq(IntFlag):
    """The `irq` column's bits; 0 is process context with irqs enabled."""

    HARDIRQ = 1          # in hard-irq context
    SOFTIRQ = 2          # in soft-irq context
    HARDIRQS_OFF = 4     # hard irqs disabled
    SOFTIRQS_OFF = 8     # soft irqs disabled


# The same values as plain ints, for rows, numpy, polars and Arrow (an enum member costs more per
# row where millions are built, and some libraries treat enums specially).
ACQUIRE, RELEASE, TRY_ACQUIRE = Op.ACQUIRE.value, Op.RELEASE.value, Op.TRY_ACQUIRE.value
EXCLUSIVE, SHARED, RECURSIVE_READ = Mode.EXCLUSIVE.value, Mode.SHARED.value, Mode.RECURSIVE_READ.value
HARDIRQ, SOFTIRQ = Irq.HARDIRQ.value, Irq.SOFTIRQ.value
HARDIRQS_OFF, SOFTIRQS_OFF = Irq.HARDIRQS_OFF.value, Irq.SOFTIRQS_OFF.value
IRQ_CONTEXT = HARDIRQ | SOFTIRQ              # an acquisition's context: `irq & IRQ_CONTEXT`
IRQS_OFF = HARDIRQS_OFF | SOFTIRQS_OFF       # both disabled: the acquisition marks no irq usage
IN_HARDIRQ = HARDIRQ | HARDIRQS_OFF          # in a hard-irq handler (hard irqs are off there)
IN_SOFTIRQ = SOFTIRQ | IRQS_OFF              # in a soft-irq handler, as lockdep sees one
IRQ_MAX = HARDIRQ | SOFTIRQ | HARDIRQS_OFF | SOFTIRQS_OFF

# lockdep's irq usage bits of a class, in the core's order (bit i of a usage mask is USAGE_BITS[i])
USAGE_BITS = ("IN-HARDIRQ-W", "IN-HARDIRQ-R", "HARDIRQ-ON-W", "HARDIRQ-ON-R",
              "IN-SOFTIRQ-W", "IN-SOFTIRQ-R", "SOFTIRQ-ON-W", "SOFTIRQ-ON-R")
# usage bit -> the `irq` mask of an acquisition that marks it and no other bit of its state (the
# `-R` bits with a read mode); SOFTIRQ-ON also marks HARDIRQ-ON, as in lockdep (docs/semantics.md)
USAGE_IRQ = {
    "IN-HARDIRQ-W": HARDIRQ | IRQS_OFF, "IN-HARDIRQ-R": HARDIRQ | IRQS_OFF,
    "HARDIRQ-ON-W": SOFTIRQS_OFF, "HARDIRQ-ON-R": SOFTIRQS_OFF,
    "IN-SOFTIRQ-W": SOFTIRQ | IRQS_OFF, "IN-SOFTIRQ-R": SOFTIRQ | IRQS_OFF,
    "SOFTIRQ-ON-W": 0, "SOFTIRQ-ON-R": 0,
}

MAX_SUBCLASS = 7        # lockdep's MAX_LOCKDEP_SUBCLASSES is 8
MAX_NAME_BYTES = 255    # a host name or stream id, in UTF-8

# -- the columns --------------------------------------------------------------------------------

COLUMNS = ("ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site", "task", "host")
AGENT_COLUMNS = COLUMNS[:-1]      # what one host's agent sends: its stream names the host
REQUIRED = ("ts_ns", "tid", "op", "lock")
DEFAULTS = {"mode": 0, "subclass": 0, "instance": 0, "irq": 0, "site": None, "task": None}  # optional, absent
COUNT = "count"   # edge mode's extension (docs/semantics.md): acquisitions a row stands for, uint64
_TYPES = {"ts_ns": pa.int64(), "tid": pa.int64(), "op": pa.uint8(), "lock": pa.string(), "mode": pa.uint8(),
          "subclass": pa.uint8(), "instance": pa.uint64(), "irq": pa.uint8(), "site": pa.string(),
          "task": pa.string(), "host": pa.string(), COUNT: pa.uint64()}
_INT_COLUMNS = {col: _TYPES[col] for col in COLUMNS if pa.types.is_integer(_TYPES[col])}
_STRING_COLUMNS = tuple(col for col in COLUMNS if pa.types.is_string(_TYPES[col]))
DICTIONARY = pa.dictionary(pa.int32(), pa.string())   # how senders encode a string column


def schema(columns: Iterable[str] = COLUMNS, *, dictionary: bool = False) -> pa.Schema:
    """The event schema with `columns` (in the order given; `count` may be among them), the string
    columns plain utf8 or, with `dictionary`, dictionary-encoded as senders write them."""
    return pa.schema([pa.field(col, DICTIONARY if dictionary and col in _STRING_COLUMNS else _TYPES[col])
                      for col in columns])


SCHEMA = schema()


# -- values -------------------------------------------------------------------------------------

_I64 = (-(1 << 63), (1 << 63) - 1)
# column -> (smallest, largest value, what the values mean): the one table of value limits
LIMITS: dict[str, tuple[int, int, str]] = {
    "ts_ns": (*_I64, "ns since the Unix epoch"),
    "tid": (*_I64, "a thread id"),
    "op": (0, max(Op).value, "is not an operation (0 acquire, 1 release, 2 try_acquire)"),
    "mode": (0, max(Mode).value, "is not a mode (0 exclusive, 1 shared read, 2 recursive read)"),
    "subclass": (0, MAX_SUBCLASS, f"is not a subclass (0..{MAX_SUBCLASS}, as lockdep's MAX_LOCKDEP_SUBCLASSES)"),
    "instance": (0, (1 << 64) - 1, "a lock instance address"),
    "irq": (0, IRQ_MAX, "is not an irq mask (bits 1 hardirq, 2 softirq, 4 hardirqs off, 8 softirqs off)"),
}
# the limits narrower than the column's Arrow type: the ones a batch's values are checked against
_RANGES = {col: (top, meaning) for col, (_, top, meaning) in LIMITS.items()
           if top < (1 << (_INT_COLUMNS[col].bit_width - pa.types.is_signed_integer(_INT_COLUMNS[col]))) - 1}

_CLASS_NAME = re.compile(r"^(.+)/([1-7])$")


def split_class(name: str) -> tuple[str, int]:
    """A class name as lockdep prints it -> (lock name, subclass): `name/N` is subclass N (1..7;
    lockdep prints no `/0`), any other name is itself with subclass 0."""
    m = _CLASS_NAME.match(name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def class_name(name: str, subclass: int) -> str:
    """(lock name, subclass) -> the class name lockdep prints (`__print_lock_name`)."""
    return f"{name}/{subclass}" if subclass else name


# the int fields of one row, in the order normalize checks them, with their limits
_ROW_INTS = tuple((col, LIMITS[col][0], LIMITS[col][1]) for col in _INT_COLUMNS)


class EventError(InputError):
    """Events that do not follow the schema; the message names the column and row (or field)."""


def check_row(ts_ns: Any, tid: Any, op: Any, lock: Any, mode: Any = 0, subclass: Any = 0, instance: Any = 0,
              irq: Any = 0, site: Any = None, task: Any = None) -> tuple[Any, ...]:
    """One event given as Python values, checked as a batch is (EventError names the field);
    returns the values in AGENT_COLUMNS order, ints as plain ints. The fields are checked in the
    order `normalize` checks the columns, so both name the same one first."""
    values = []
    for (name, low, high), value in zip(_ROW_INTS, (ts_ns, tid, op, mode, subclass, instance, irq)):
        try:
            v = operator.index(value)
        except TypeError:
            raise EventError(f"{name} must be an int, not {value!r}") from None
        if not low <= v <= high:
            raise EventError(f"{name} must be in {low}..{high}, not {v}")
        values.append(v)
    if not isinstance(lock, str) or not lock:
        raise EventError(f"lock must be a non-empty str, not {lock!r}")
    for name, value in (("site", site), ("task", task)):
        if value is not None and not isinstance(value, str):
            raise EventError(f"{name} must be a str or None, not {value!r}")
    return (values[0], values[1], values[2], lock, values[3], values[4], values[5], values[6], site, task)


# -- batches ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strings:
    """A dictionary-encoded string column: per-row index into `dictionary` (a utf8 or large_utf8
    Arrow array, interned by the engine straight from its buffers), -1 where null."""

    index: np.ndarray  # int32
    dictionary: pa.Array

    @cached_property
    def values(self) -> list[str]:
        """The dictionary as Python strings (made on first use, cached per dictionary)."""
        return _dictionary_values(self.dictionary)


@dataclass(frozen=True)
class Events:
    """One validated batch, as flat arrays. Optional numeric columns absent are None (= 0)."""

    n: int
    ts_ns: np.ndarray
    tid: np.ndarray
    op: np.ndarray
    lock: Strings
    mode: np.ndarray | None
    subclass: np.ndarray | None
    instance: np.ndarray | None
    irq: np.ndarray | None
    count: np.ndarray | None      # uint64 `count` column: acquisitions a row stands for (null: 1)
    site: Strings | None
    task: Strings | None
    host: Strings | None


def normalize(batch: pa.RecordBatch | pa.Table, row_offset: int = 0) -> Events:
    """Validate `batch` whole and return its columns as flat arrays; raise EventError if bad."""
    if isinstance(batch, pa.Table):
        batch = _table_to_batch(batch)
    elif not isinstance(batch, pa.RecordBatch):
        raise EventError(f"expected a pyarrow RecordBatch or Table, got {type(batch).__name__}")
    names = batch.schema.names
    for col in REQUIRED:
        if col not in names:
            raise EventError(f"column '{col}' is missing (required: {', '.join(REQUIRED)})")
    for col in names:
        if names.count(col) > 1:
            raise EventError(f"column '{col}' appears {names.count(col)} times")
    n = batch.num_rows
    cols: dict[str, Any] = {}     # required columns are never None
    for col, typ in _INT_COLUMNS.items():
        if col in names:
            cols[col] = _int_column(batch.column(col), col, typ, col in REQUIRED, row_offset)
        else:
            cols[col] = None
    strings: dict[str, Any] = {}
    for col in _STRING_COLUMNS:
        if col in names:
            strings[col] = _string_column(batch.column(col), col, col in REQUIRED, row_offset)
        else:
            strings[col] = None
    count = None
    if COUNT in names and batch.schema.field(COUNT).type == _TYPES[COUNT]:
        # an extension for edge-mode agents: a uint64 `count` says how many acquisitions the row
        # stands for; a `count` column of any other type is an unknown column, and ignored
        count = pc.fill_null(batch.column(COUNT), 1).to_numpy(zero_copy_only=False)
    return Events(n=n, ts_ns=cols["ts_ns"], tid=cols["tid"], op=cols["op"], lock=strings["lock"],
                  mode=cols["mode"], subclass=cols["subclass"], instance=cols["instance"],
                  irq=cols["irq"], count=count, site=strings["site"], task=strings["task"],
                  host=strings["host"])


def _table_to_batch(table: pa.Table) -> pa.RecordBatch:
    table = table.combine_chunks()
    arrays = []
    for col in table.columns:
        if col.num_chunks == 1:
            arrays.append(col.chunk(0))
        elif col.num_chunks == 0:   # a stream with a schema and no batch (pa.array([], t) fails for some t)
            arrays.append(pa.nulls(0, col.type))
        else:  # dictionary columns whose chunks have different dictionaries stay chunked
            arrays.append(pa.concat_arrays(col.chunks) if not pa.types.is_dictionary(col.type)
                          else col.cast(col.type.value_type).combine_chunks())
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(
        [pa.field(f.name, a.type) for f, a in zip(table.schema, arrays)]))


def _first(mask: pa.Array) -> int:
    return int(pc.index(mask, True).as_py())


_TYPE_IDS = {col: typ.id for col, typ in _INT_COLUMNS.items()}


def _int_column(arr: pa.Array, col: str, typ: pa.DataType, required: bool, off: int) -> np.ndarray:
    # checks run in numpy over the column's buffer: per-batch cost matters for small batches
    if arr.type.id != _TYPE_IDS[col]:
        raise EventError(f"column '{col}' has type {arr.type}; expected {typ}")
    if arr.null_count:
        if required:
            row = _first(pc.is_null(arr))
            raise EventError(f"column '{col}' row {row + off}: null in a required column")
        arr = pc.fill_null(arr, 0)
    values: np.ndarray = arr.to_numpy(zero_copy_only=False)
    if col in _RANGES and len(values):
        top, meaning = _RANGES[col]
        row = _columns.first_above(values, top)     # the ranged columns are all uint8
        if row >= 0:
            raise EventError(f"column '{col}' row {row + off}: value {int(values[row])} {meaning}")
    return values


def _string_column(arr: pa.Array, col: str, required: bool, off: int) -> Strings:
    typ = arr.type
    if pa.types.is_dictionary(typ):
        if not (pa.types.is_string(typ.value_type) or pa.types.is_large_string(typ.value_type)):
            raise EventError(f"column '{col}' is a dictionary of {typ.value_type}; expected utf8 values")
        if not pa.types.is_integer(typ.index_type):
            raise EventError(f"column '{col}' has dictionary indices of type {typ.index_type}")
        dictionary, indices = arr.dictionary, arr.indices
        if dictionary.null_count:  # a null value in the dictionary is a null row
            null_codes = pc.indices_nonzero(pc.is_null(dictionary))
            indices = pc.if_else(pc.is_in(indices, null_codes), None, indices)
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        enc = pc.dictionary_encode(arr)
        dictionary, indices = enc.dictionary, enc.indices
    else:
        raise EventError(f"column '{col}' has type {typ}; expected utf8, large_utf8 or a dictionary of them")
    if indices.null_count:
        if required:
            row = _first(pc.is_null(indices))
            raise EventError(f"column '{col}' row {row + off}: null in a required column")
        indices = pc.fill_null(indices, -1)
    index = indices.to_numpy(zero_copy_only=False)
    if index.dtype != np.int32:
        if len(index) and (index.max() >= len(dictionary) or index.min() < -1):   # before narrowing
            row = int(np.argmax((index >= len(dictionary)) | (index < -1)))
            raise EventError(f"column '{col}' row {row + off}: dictionary index out of range")
        index = index.astype(np.int32)
    row = _columns.first_bad_index(index, len(dictionary))
    if row >= 0:
        raise EventError(f"column '{col}' row {row + off}: dictionary index out of range")
    if required and len(index) and len(dictionary) and _has_empty(dictionary, col):
        width = 8 if pa.types.is_large_string(dictionary.type) else 4
        row = _columns.first_empty_row(index, dictionary.buffers()[1], width, dictionary.offset)
        if row >= 0:
            raise EventError(f"column '{col}' row {row + off}: empty lock name")
    return Strings(index=index, dictionary=dictionary)


_EMPTY_SEEN: dict[str, tuple[pa.Array, bool]] = {}


def _has_empty(dictionary: pa.Array, col: str) -> bool:
    """Does the dictionary hold an empty string? (From its offsets buffer: no per-value work;
    a stream that repeats one dictionary is checked once.)"""
    last = _EMPTY_SEEN.get(col)
    if last is not None and last[0] is dictionary:
        return last[1]
    _EMPTY_SEEN[col] = (dictionary, found := _offsets_have_empty(dictionary))
    return found


def _offsets_have_empty(dictionary: pa.Array) -> bool:
    if dictionary.null_count:
        dictionary = pc.drop_null(dictionary)
    width = 8 if pa.types.is_large_string(dictionary.type) else 4
    return _columns.any_empty(dictionary.buffers()[1], width, dictionary.offset, len(dictionary))


def dictionary_key(dictionary: pa.Array) -> tuple:
    """Identity of a dictionary's contents: Arrow buffers are immutable, so the same buffers
    (address, size) at the same offset and length hold the same values. Agents and archives
    send one dictionary for many batches (an IPC stream repeats it, a Parquet file's row groups
    share it), so work per dictionary is done once; callers keep the array alive in their cache
    so that its addresses cannot be reused meanwhile."""
    return (dictionary.offset, len(dictionary),
            tuple((b.address, b.size) if b is not None else None for b in dictionary.buffers()))


_DICT_CACHE: dict[tuple, tuple[pa.Array, list[str]]] = {}
_DICT_CACHE_SIZE = 16


def _dictionary_values(dictionary: pa.Array) -> list[str]:
    key = dictionary_key(dictionary)
    hit = _DICT_CACHE.get(key)
    if hit is not None:
        return hit[1]
    values = [v if v is not None else "" for v in dictionary.to_pylist()]
    if len(_DICT_CACHE) >= _DICT_CACHE_SIZE:
        _DICT_CACHE.pop(next(iter(_DICT_CACHE)))
    _DICT_CACHE[key] = (dictionary, values)
    return values
