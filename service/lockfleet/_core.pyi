# Type stub of the compiled module lockfleet._core (ext/lockfleet/_core.pyx, _core.pxd, graph.pxi):
# the fleet's lock state. Keep in step with the `def` functions and methods and the `cdef public`
# counters there (the Python surface; everything else is C).

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

_I64 = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]
_U8 = npt.NDArray[np.uint8]
_U64 = npt.NDArray[np.uint64]

# (kind, row, a, b, c, d, occurrence, held occurrences, path edges)
Finding = tuple[int, int, int, int, int, int, int, list[int], list[int]]
# (class, mode, trylock, instance, site id, host id, task id, tid, ts, irq)
Occurrence = tuple[int, int, int, int, int, int, int, int, int, int]
# (src, dst, kinds bits, first host, task, ts, held site, taken site, held instance, taken instance,
#  taken mode, held trylock, held mode, count, last ts, [host ids])
EdgeInfo = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int, list[int]]

def live_blocks() -> int:
    """Blocks the core's allocator has handed out and not yet had back, over every Core."""

class Core:
    """One fleet's lock state."""

    irq_rule_pre510: int
    events: int
    acquires: int
    releases: int
    depth_overflows: int
    chain_hits: int
    chain_misses: int
    recomputes: int
    reorders: int
    searches: int
    search_budget_exhausted: int
    witnesses: int
    witness_budget_exhausted: int
    inversions_untracked: int
    search_steps: int
    spread_steps: int
    chain_flushes: int
    threads_dropped: int

    def __init__(self, max_depth: int = 48, max_chains: int = 1 << 20, exact_hosts: int = 8) -> None: ...
    def ingest(self, ts: _I64, tid: _I64, op: _U8, lock: _I32, lock_map: _I32,
               mode: _U8 | None = None, subclass: _U8 | None = None, instance: _U64 | None = None,
               irq: _U8 | None = None, site: _I32 | None = None, site_map: _I32 | None = None,
               task: _I32 | None = None, task_map: _I32 | None = None, host: _I32 | None = None,
               host_map: _I32 | None = None, count: _U64 | None = None, default_host: int = 0) -> int:
        """Apply one validated batch; returns the number of findings (read them with findings())."""
    def findings(self) -> list[Finding]: ...
    def inversions(self) -> list[tuple[int, int, int]]:
        """Every inversion in arrival order: (dependency, witnesses counted, witnesses kept)."""
    def inversion_witnesses(self, i: int) -> int: ...
    def is_inversion(self, e: int) -> bool: ...
    def check_invariants(self) -> None:
        """AssertionError names the first invariant broken."""
    def overflows(self) -> list[tuple[int, int]]: ...
    def class_count(self) -> int: ...
    def edge_count(self) -> int: ...
    def thread_count(self) -> int: ...
    def chain_count(self) -> int: ...
    def class_info(self, c: int) -> tuple[int, int, int]:
        """(name id, subclass, usage bits) of class c."""
    def class_usage_occ(self, c: int, bit: int) -> int: ...
    def find_class(self, name: int, sub: int) -> int: ...
    def occurrence(self, o: int) -> Occurrence: ...
    def edge_info(self, e: int) -> EdgeInfo: ...
    def edges(self) -> tuple[_I32, _I32, _U8]:
        """(src, dst, kinds) arrays of every dependency."""
    def edge_counts(self) -> tuple[_U64, _I64]:
        """(count, last ts) arrays of every dependency, current."""
    def class_usages(self) -> _U8:
        """The irq usage bits of every class."""
    def sweep_threads(self) -> None:
        """Drop the threads with an empty held stack now."""
    def edge_hosts(self, e: int) -> tuple[list[int], int]:
        """(named host ids, estimate of the hosts past them) of dependency e."""
    def edge_host_count(self, e: int) -> int: ...
    def host_union(self, edges: Iterable[int], extra_hosts: Iterable[int] = ()) -> tuple[int, bool]:
        """(hosts, exact): distinct hosts that took any of `edges` or are in `extra_hosts`."""
    def sketch_count(self) -> int: ...
    @staticmethod
    def hll_estimate_of(host_ids: Iterable[int]) -> int: ...
    def shortest_path(self, a: int, b: int) -> list[int] | None: ...
    def memory_bytes(self) -> int: ...
    def memory_breakdown(self) -> dict[str, int]: ...
    def array_table(self) -> list[tuple[int, int, bool, bool]]:
        """(family, element bytes, in snapshots, allocated) per array, in declaration order."""
    def dump(self) -> bytes: ...
    @staticmethod
    def load(data: bytes | bytearray | memoryview) -> Core:
        """A Core from dump()'s bytes; ValueError on anything malformed."""

