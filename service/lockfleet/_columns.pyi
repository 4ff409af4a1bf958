# Type stub of the compiled module lockfleet._columns (ext/lockfleet/_columns.pyx): checks of one
# event batch's columns over their buffers. Keep in step with its `def` functions.
from typing import Any

import numpy as np
import numpy.typing as npt

_Bytes = Any   # any buffer: a pyarrow Buffer (an array's offsets), a numpy array, bytes

def first_above(values: npt.NDArray[np.uint8], top: int) -> int:
    """The first row whose value exceeds `top`, or -1."""
def first_bad_index(index: npt.NDArray[np.int32], n_dict: int) -> int:
    """The first row whose dictionary index is not -1 (null) and not in [0, n_dict), or -1."""
def any_empty(offsets: _Bytes, width: int, first: int, length: int) -> bool:
    """Does a utf8 (width 4) or large_utf8 (width 8) array hold an empty string (from its offsets)?"""
def first_empty_row(index: npt.NDArray[np.int32], offsets: _Bytes, width: int, first: int) -> int:
    """The first row whose index points at an empty string of the dictionary, or -1."""
