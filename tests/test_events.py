"""The event schema (docs/contract.md section 2): what is accepted, and how refusals name column and row."""

import numpy as np
import pyarrow as pa
import pytest

from lockfleet import Engine, EventError
from lockfleet.events import normalize


def batch(**cols):
    base = {
        "ts_ns": pa.array([1, 2, 3], pa.int64()),
        "tid": pa.array([7, 7, 7], pa.int64()),
        "op": pa.array([0, 0, 1], pa.uint8()),
        "lock": pa.array(["A", "B", "B"]),
    }
    base.update(cols)
    return pa.record_batch({k: v for k, v in base.items() if v is not None})


def test_minimal_batch_normalizes_with_defaults():
    ev = normalize(batch())
    assert ev.n == 3
    assert ev.mode is None and ev.subclass is None and ev.irq is None and ev.host is None
    assert ev.lock.values == ["A", "B"] and ev.lock.index.tolist() == [0, 1, 1]


@pytest.mark.parametrize("typ", [pa.utf8(), pa.large_utf8()])
def test_lock_as_plain_or_large_strings(typ):
    ev = normalize(batch(lock=pa.array(["A", "B", "B"], typ)))
    assert [ev.lock.values[i] for i in ev.lock.index] == ["A", "B", "B"]


def test_lock_as_dictionary_is_used_as_is():
    lock = pa.DictionaryArray.from_arrays(pa.array([2, 0, 0], pa.int8()), pa.array(["B", "x", "A"]))
    ev = normalize(batch(lock=lock))
    assert [ev.lock.values[i] for i in ev.lock.index] == ["A", "B", "B"]
    assert ev.lock.index.dtype == np.int32


def test_table_with_several_chunks():
    t = pa.Table.from_batches([batch(), batch()])
    assert normalize(t).n == 6


def test_unknown_columns_are_ignored():
    assert normalize(batch(extra=pa.array([1, 2, 3]))).n == 3


@pytest.mark.parametrize("missing", ["ts_ns", "tid", "op", "lock"])
def test_missing_required_column(missing):
    with pytest.raises(EventError, match=f"column '{missing}' is missing"):
        normalize(batch(**{missing: None}))


@pytest.mark.parametrize("col,arr,msg", [
    ("ts_ns", pa.array([1, 2, 3], pa.int32()), "column 'ts_ns' has type int32; expected int64"),
    ("op", pa.array([0, 0, 1], pa.int64()), "column 'op' has type int64; expected uint8"),
    ("lock", pa.array([1, 2, 3]), "column 'lock' has type int64"),
    ("mode", pa.array([0, 0, 0], pa.int8()), "column 'mode' has type int8; expected uint8"),
])
def test_wrong_type_names_the_column(col, arr, msg):
    with pytest.raises(EventError, match=msg):
        normalize(batch(**{col: arr}))


@pytest.mark.parametrize("col,arr,msg", [
    ("op", pa.array([0, 9, 1], pa.uint8()),
     r"column 'op' row 1: value 9 is not an operation \(0 acquire, 1 release, 2 try_acquire\)"),
    ("mode", pa.array([0, 0, 3], pa.uint8()), "column 'mode' row 2: value 3 is not a mode"),
    ("subclass", pa.array([8, 0, 0], pa.uint8()), "column 'subclass' row 0: value 8 is not a subclass"),
    ("irq", pa.array([0, 16, 0], pa.uint8()), "column 'irq' row 1: value 16 is not an irq mask"),
    ("tid", pa.array([7, None, 7], pa.int64()), "column 'tid' row 1: null in a required column"),
    ("lock", pa.array(["A", None, "B"]), "column 'lock' row 1: null in a required column"),
    ("lock", pa.array(["A", "", "B"]), "column 'lock' row 1: empty lock name"),
])
def test_bad_values_name_column_and_row(col, arr, msg):
    with pytest.raises(EventError, match=msg):
        normalize(batch(**{col: arr}))


def test_nulls_in_optional_columns_mean_defaults():
    ev = normalize(batch(mode=pa.array([None, 1, None], pa.uint8()), site=pa.array([None, "f+0x1/0x2", None])))
    assert ev.mode.tolist() == [0, 1, 0]
    assert ev.site.index.tolist()[0] == -1 and ev.site.values[ev.site.index[1]] == "f+0x1/0x2"


def test_event_error_is_a_value_error_and_nothing_is_applied():
    eng = Engine()
    eng.ingest(batch(), host="h")
    before = eng.stats()
    bad = batch(op=pa.array([0, 0, 7], pa.uint8()))
    with pytest.raises(ValueError):
        eng.ingest(bad, host="h")
    assert eng.stats() == before


def test_not_a_batch():
    with pytest.raises(EventError, match="expected a pyarrow RecordBatch or Table"):
        normalize({"ts_ns": [1]})


# The column checks run in C over the buffers (lockfleet._columns): the same errors, whatever the
# index width, the string width, or where a dictionary's values start in its buffers.

@pytest.mark.parametrize("index_type", [pa.int8(), pa.int16(), pa.int32(), pa.int64()])
def test_dictionary_index_out_of_range_named_whatever_its_width(index_type):
    lock = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], index_type), pa.array(["A", "B"]))
    # unchecked construction, as a buggy client could send it: row 2 points past the dictionary
    bad = pa.DictionaryArray.from_arrays(pa.array([0, 1, 5], index_type), pa.array(["A", "B"]), safe=False)
    assert normalize(batch(lock=lock)).lock.index.tolist() == [0, 1, 0]
    with pytest.raises(EventError, match=r"column 'lock' row 2: dictionary index out of range"):
        normalize(batch(lock=bad))


@pytest.mark.parametrize("value_type", [pa.utf8(), pa.large_utf8()])
def test_empty_lock_name_found_in_a_sliced_dictionary(value_type):
    names = pa.array(["", "zz", "A", "", "B"], value_type).slice(1, 4)      # "zz", "A", "", "B"
    ok = pa.DictionaryArray.from_arrays(pa.array([1, 3, 1], pa.int32()), names)
    bad = pa.DictionaryArray.from_arrays(pa.array([1, 3, 2], pa.int32()), names)
    assert normalize(batch(lock=ok)).lock.index.tolist() == [1, 3, 1]
    with pytest.raises(EventError, match=r"column 'lock' row 2: empty lock name"):
        normalize(batch(lock=bad))


def test_value_range_checked_on_every_row_of_a_long_column():
    n = 10_000
    op = np.zeros(n, np.uint8)
    op[1::2] = 1
    op[n - 1] = 3
    cols = dict(ts_ns=pa.array(np.arange(n, dtype=np.int64)), tid=pa.array(np.ones(n, np.int64)),
                op=pa.array(op), lock=pa.array(["A"] * n))
    with pytest.raises(EventError, match=rf"column 'op' row {n - 1}: value 3 is not an operation"):
        normalize(pa.RecordBatch.from_pydict(cols))
