"""The sidecar's side of the pthread interposer (native/lockfleet_preload.c): the shared memory
that traced processes write their lock events into, drained into Arrow batches of the event
schema (docs/contract.md section 2).

    buf = TraceBuffer()                          # shared memory, laid out; buf.env() for the program
    proc = subprocess.Popen(argv, env={**os.environ, **buf.env()})
    while proc.poll() is None:
        for batch in buf.drain():                # pa.RecordBatch: ts_ns, tid, op, lock, mode, instance, site, task
            ...
    buf.close()

The memory is a memfd the program opens through /proc/<this pid>/fd/<fd> (a temporary file when
memfd is missing), so that it outlives the traced processes: a program that exits, aborts or is
killed without unlocking still has every event it recorded delivered. The layout belongs to
native/lockfleet_trace.h; this module only calls the library's lockfleet_trace_* accessors.

Names. The interposer keeps addresses as (module path, ELF virtual address); they are named here
with the module's symbols (`elfsym`), so that the same binary gives the same names on every host:

- a lock's class, by how the interposer chose it: a static or global lock by the symbol that
  holds it (`lock_a`, `table+0x40`; `libfoo.so.1:lock` for a library's); a lock initialized by
  pthread_mutex_init/pthread_rwlock_init by the init's call site (`mutex_init@make_account+0x1d`,
  `rwlock_init@...`); any other lock (or every lock, with class="site") by the call site of its
  first acquisition (`site@worker+0x2d`). Without a symbol, the module's name and the offset
  (`prog+0x4010`);
- a call site as the kernel prints a frame: `worker+0x2d/0x80`, with ` [libfoo.so.1]` when it is
  in a library;
- a task as lockdep prints one: `comm/tid`.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import OperationalError
from ...events import schema
from .elfsym import ElfSymbols

LIBRARY_NAME = "liblockfleet_preload.so"
ENV_SHM = "LOCKFLEET_TRACE_SHM"

# native/lockfleet_trace.h
FLAG_CLASS_BY_SITE, FLAG_DROP, FLAG_PRECISE, FLAG_TSC = 1, 2, 4, 8
RING_OWNED, RING_DONE = 2, 3
CLASS_STATIC, CLASS_INIT, CLASS_SITE = 1, 2, 3
MUTEX, RWLOCK = 0, 1
OUT_DTYPE = np.dtype({"names": ["ts", "tid", "instance", "cls", "site", "op", "mode", "ring"],
                      "formats": ["<i8", "<i8", "<u8", "<u4", "<u4", "u1", "u1", "<u4"],
                      "offsets": [0, 8, 16, 24, 28, 32, 33, 36], "itemsize": 40})

RINGS = 512
RING_EVENTS = 16384
MODULES, CLASSES, SITES = 512, 1 << 16, 1 << 16
DRAIN_ROWS = 1 << 16
CLASS_MODES = ("auto", "site")
CLOCKS = ("tick", "precise")
TICK_US = 1000

SCHEMA = schema(("ts_ns", "tid", "op", "lock", "mode", "instance", "site", "task"), dictionary=True)


class PreloadError(OperationalError, RuntimeError):
    """The interposer library is missing or the shared memory cannot be made."""


def library_path() -> Path:
    """The interposer, built with the package (setup.py) next to this package's modules;
    $LOCKFLEET_PRELOAD overrides it."""
    override = os.environ.get("LOCKFLEET_PRELOAD")
    path = Path(override) if override else Path(__file__).resolve().parents[2] / LIBRARY_NAME  # lockfleet/
    if not path.is_file():
        raise PreloadError(f"the pthread interposer {path} is missing: reinstall lockfleet (pip install .) with a "
                           "C compiler present")
    return path


def _library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path()))
    u32, u64, vp = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p
    p32, p64 = ctypes.POINTER(u32), ctypes.POINTER(u64)
    sigs = {
        "lockfleet_trace_size": (u64, [u32, u32, u32, u32, u32]),
        "lockfleet_trace_init": (ctypes.c_int, [vp, u32, u32, u32, u32, u32, u32]),
        "lockfleet_trace_drain": (u64, [vp, vp, u64]),
        "lockfleet_trace_owners": (u32, [vp, p32, p32, p32, u32]),
        "lockfleet_trace_ring": (u32, [vp, u32, p32, p32, ctypes.c_char_p, p64]),
        "lockfleet_trace_reap": (ctypes.c_int, [vp, u32]),
        "lockfleet_trace_class": (ctypes.c_int, [vp, u32, p32, p32, p32, p64]),
        "lockfleet_trace_site": (ctypes.c_int, [vp, u32, p32, p64]),
        "lockfleet_trace_module": (ctypes.c_char_p, [vp, u32]),
        "lockfleet_trace_counters": (None, [vp, p64]),
        "lockfleet_trace_clock": (None, [p64, p64]),
        "lockfleet_trace_ticker": (vp, [vp, u32]),
        "lockfleet_trace_ticker_stop": (None, [vp]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _tsc_usable() -> bool:
    """x86 with an invariant TSC (same rate on every CPU, in every power state)."""
    if os.uname().machine not in ("x86_64", "i686", "i386"):
        return False
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "constant_tsc" in flags and "nonstop_tsc" in flags


def _pow2(n: int, what: str) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{what} must be a power of two, not {n}")
    return n


class TraceBuffer:
    """Shared memory for one trace: made and laid out here, written by every traced process."""

    def __init__(self, rings: int = RINGS, ring_events: int = RING_EVENTS, class_mode: str = "auto",
                 overflow: str = "block", clock: str = "tick") -> None:
        if class_mode not in CLASS_MODES:
            raise ValueError(f"class mode must be one of {', '.join(CLASS_MODES)}, not {class_mode!r}")
        if overflow not in ("block", "drop"):
            raise ValueError(f"overflow must be block or drop, not {overflow!r}")
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
        if rings < 1:
            raise ValueError(f"rings must be >= 1, not {rings}")
        _pow2(ring_events, "ring events")
        self._lib = _library()
        self.rings = rings
        self.ring_events = ring_events
        flags = (FLAG_CLASS_BY_SITE if class_mode == "site" else 0) | (FLAG_DROP if overflow == "drop" else 0)
        self.tsc = clock == "precise" and _tsc_usable()
        flags |= (FLAG_PRECISE if clock == "precise" else 0) | (FLAG_TSC if self.tsc else 0)
        self.size = int(self._lib.lockfleet_trace_size(rings, ring_events, MODULES, CLASSES, SITES))
        self._fd, self.path, self._file = self._make_memory(self.size)
        self._mm = None
        self._view: Any = None
        try:
            import mmap

            self._mm = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._view = (ctypes.c_char * self.size).from_buffer(self._mm)
            self.base = ctypes.c_void_p(ctypes.addressof(self._view))
            self._lib.lockfleet_trace_init(self.base, rings, ring_events, MODULES, CLASSES, SITES, flags)
            if clock == "tick":
                self._ticker = self._lib.lockfleet_trace_ticker(self.base, TICK_US)
                if not self._ticker:
                    raise PreloadError("cannot start the clock ticker thread")
        except BaseException:
            self._release()
            raise
        self._out = np.empty(DRAIN_ROWS, OUT_DTYPE)
        self._classes: dict[int, str] = {}
        self._sites: dict[int, str] = {}
        self._modules: dict[int, str] = {}
        self._tasks: dict[int, tuple[int, str]] = {}   # ring -> (tid, task) of its current owner
        self._t0 = self._clock()
        self._rate = self._calibrate() if self.tsc else 1.0
        self.events = 0
        self._last_reap = time.monotonic()

    # -- memory ---------------------------------------------------------------------------------

    @staticmethod
    def _make_memory(size: int) -> tuple[int, str, str | None]:
        """A memfd the traced processes open through /proc; else an unlinked-at-close temp file."""
        try:
            fd = os.memfd_create("lockfleet-trace", 0)
            path = f"/proc/{os.getpid()}/fd/{fd}"
            name = None
        except (AttributeError, OSError):
            shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
            fd, name = tempfile.mkstemp(prefix="lockfleet-trace-", dir=shm_dir)
            path = name
        try:
            os.ftruncate(fd, size)
        except OSError as exc:
            os.close(fd)
            if name:
                os.unlink(name)
            raise PreloadError(f"cannot make {size} bytes of shared memory: {exc.strerror}") from None
        return fd, path, name

    def env(self) -> dict[str, str]:
        """What the traced program's environment needs: the interposer first in LD_PRELOAD (before
        whatever the caller's environment preloads) and the shared memory's path."""
        lib = str(library_path())
        preload = os.environ.get("LD_PRELOAD", "")
        return {"LD_PRELOAD": f"{lib}:{preload}" if preload else lib, ENV_SHM: self.path}

    def _release(self) -> None:
        if getattr(self, "_ticker", None):
            self._lib.lockfleet_trace_ticker_stop(self._ticker)
            self._ticker = None
        self._view = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass
            self._mm = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._file:
            try:
                os.unlink(self._file)
            except OSError:
                pass
            self._file = None

    def close(self) -> None:
        self._release()

    # -- time -----------------------------------------------------------------------------------

    def _clock(self) -> tuple[int, int]:
        tsc, ns = ctypes.c_uint64(), ctypes.c_uint64()
        self._lib.lockfleet_trace_clock(ctypes.byref(tsc), ctypes.byref(ns))
        return tsc.value, ns.value

    def _calibrate(self) -> float:
        time.sleep(0.02)
        return self._rate_now()

    def _rate_now(self) -> float:
        tsc, ns = self._clock()
        dt = tsc - self._t0[0]
        return (ns - self._t0[1]) / dt if dt > 0 else 1.0

    def _to_ns(self, ts: np.ndarray) -> np.ndarray:
        if not self.tsc:
            return ts.astype(np.int64)
        if time.monotonic() - self._last_rate > 1.0:
            self._rate = self._rate_now()    # the longer the baseline, the better the rate
            self._last_rate = time.monotonic()
        delta = (ts.astype(np.int64) - np.int64(self._t0[0])).astype(np.float64) * self._rate
        return np.int64(self._t0[1]) + np.rint(delta).astype(np.int64)

    _last_rate = 0.0

    # -- draining -------------------------------------------------------------------------------

    def drain(self) -> Iterator[pa.RecordBatch]:
        """Every event recorded so far, as batches of at most DRAIN_ROWS rows (none when there is
        nothing new)."""
        while True:
            n = int(self._lib.lockfleet_trace_drain(self.base, self._out.ctypes.data, DRAIN_ROWS))
            if n == 0:
                break
            self.events += n
            yield self._batch(self._out[:n])
            if n < DRAIN_ROWS:
                break
        now = time.monotonic()
        if now - self._last_reap > 0.5:
            self.reap()
            self._last_reap = now

    def reap(self) -> None:
        """Free the drained rings of exited threads and of processes that are gone (call after a
        drain: a ring is freed only when empty)."""
        cap = self.rings
        idx, pid, state = (ctypes.c_uint32 * cap)(), (ctypes.c_uint32 * cap)(), (ctypes.c_uint32 * cap)()
        n = self._lib.lockfleet_trace_owners(self.base, idx, pid, state, cap)
        alive: dict[int, bool] = {}
        for k in range(n):
            if state[k] != RING_DONE:
                p = pid[k]
                if p not in alive:
                    alive[p] = _alive(p)
                if alive[p]:
                    continue
            if self._lib.lockfleet_trace_reap(self.base, idx[k]):
                self._tasks.pop(idx[k], None)

    def counters(self) -> dict[str, int]:
        out = (ctypes.c_uint64 * 4)()
        self._lib.lockfleet_trace_counters(self.base, out)
        return {"events": self.events, "processes": out[0], "untraced_threads": out[1], "table_full": out[2],
                "dropped": out[3]}

    def _batch(self, rows: np.ndarray) -> pa.RecordBatch:
        lock = self._names(rows["cls"], CLASSES, self._class_name, nulls=False)
        site = self._names(rows["site"], SITES, self._site_name, nulls=True)
        task = self._names(rows["ring"], self.rings, self._task, nulls=False)
        arrays = [pa.array(self._to_ns(rows["ts"])), pa.array(rows["tid"]), pa.array(rows["op"]), lock,
                  pa.array(rows["mode"]), pa.array(rows["instance"]), site, task]
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

    @staticmethod
    def _names(ids: np.ndarray, size: int, name_of: Callable[[int], str], nulls: bool) -> pa.DictionaryArray:
        """ids (< size) -> a dictionary array of their names: the ids present, found without a
        sort, become the dictionary; 0 is null where `nulls`."""
        present = np.zeros(size, np.bool_)
        present[ids] = True
        if nulls:
            present[0] = False
        used = np.flatnonzero(present)
        remap = np.zeros(size, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        indices = remap[ids]
        mask = (ids == 0) if nulls else None
        names = [name_of(int(i)) for i in used]
        return pa.DictionaryArray.from_arrays(pa.array(indices, mask=mask), pa.array(names, pa.string()))

    # -- names ----------------------------------------------------------------------------------

    def _module(self, mid: int) -> str:
        if mid not in self._modules:
            raw = self._lib.lockfleet_trace_module(self.base, mid)
            self._modules[mid] = raw.decode("utf-8", "replace") if raw else ""
        return self._modules[mid]

    def _class_name(self, cid: int) -> str:
        name = self._classes.get(cid)
        if name is None:
            kind, typ, mid, off = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint64()
            if cid and self._lib.lockfleet_trace_class(self.base, cid, ctypes.byref(kind), ctypes.byref(typ),
                                                       ctypes.byref(mid), ctypes.byref(off)):
                name = class_name(kind.value, typ.value, self._module(mid.value), off.value)
            else:
                name = f"lock#{cid}"
            self._classes[cid] = name
        return name

    def _site_name(self, sid: int) -> str:
        name = self._sites.get(sid)
        if name is None:
            mid, off = ctypes.c_uint32(), ctypes.c_uint64()
            if sid and self._lib.lockfleet_trace_site(self.base, sid, ctypes.byref(mid), ctypes.byref(off)):
                name = site_name(self._module(mid.value), off.value)
            else:
                name = f"site#{sid}"
            self._sites[sid] = name
        return name

    def _task(self, ring: int) -> str:
        known = self._tasks.get(ring)
        if known is None:
            pid, tid, dropped = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint64()
            comm = ctypes.create_string_buffer(17)
            self._lib.lockfleet_trace_ring(self.base, ring, ctypes.byref(pid), ctypes.byref(tid), comm,
                                           ctypes.byref(dropped))
            known = (tid.value, f"{comm.value.decode('utf-8', 'replace') or '?'}/{tid.value}")
            self._tasks[ring] = known
        return known[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_library(path: str) -> bool:
    return ".so" in os.path.basename(path)


def class_name(kind: int, lock_type: int, module: str, offset: int) -> str:
    """A lock class's name from how the interposer chose it (see the module's documentation)."""
    if kind == CLASS_STATIC:
        base = os.path.basename(module)
        sym = ElfSymbols.load(module).data(offset) if module else None
        if sym is None:
            return f"{base}+{offset:#x}" if module else f"lock@{offset:#x}"
        return f"{base}:{sym}" if _is_library(module) else sym
    where = code_name(module, offset, frame=False)
    if kind == CLASS_INIT:
        return f"{'rwlock' if lock_type == RWLOCK else 'mutex'}_init@{where}"
    return f"site@{where}"


def code_name(module: str, offset: int, frame: bool = True) -> str:
    """A code address: `func+0x2d/0x80` (frame) or `func+0x2d`; a library's marked with its name."""
    if not module:
        return f"{offset:#x}"
    base = os.path.basename(module)
    name = ElfSymbols.load(module).code(offset)
    if name is None:
        return f"{base}+{offset:#x}"
    if not frame:
        name = name.rsplit("/", 1)[0]
    if _is_library(module):
        return f"{name} [{base}]" if frame else f"{base}:{name}"
    return name


def site_name(module: str, offset: int) -> str:
    return code_name(module, offset, frame=True)
