# Type stub of the compiled module lockfleet._names (ext/lockfleet/_names.pyx): interning of names straight
# from Arrow string buffers. Keep in step with the `def` methods of ext/lockfleet/_names.pyx.
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

class Names:
    """Dense int32 ids for names, in first-seen order, never reused."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def get(self, s: str) -> int:
        """Id of s, added if new."""
    def find(self, s: str) -> int:
        """Id of s, or -1."""
    def name(self, i: int) -> str:
        """The name of id i ("" when out of range)."""
    def names(self) -> list[str]: ...
    def map(self, values: Sequence[str]) -> npt.NDArray[np.int32]:
        """Ids of a list of Python strings."""
    def map_array(self, arr: pa.Array) -> npt.NDArray[np.int32]:
        """Ids of every entry of a utf8 / large_utf8 Arrow array (null: the empty name's id)."""
