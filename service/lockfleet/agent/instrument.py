"""Lock orders of a Python program, streamed to lockfleet: `instrument()` replaces threading's
`Lock`, `RLock`, `Condition`, `Semaphore` and `BoundedSemaphore` with traced versions whose
acquisitions and releases go to an `Agent`.

    import lockfleet.agent
    agent = lockfleet.agent.instrument("127.0.0.1:50551", host="web-1")
    ...                                  # the program; its locks are traced from here on

or, without changing the program: `python -m lockfleet.agent.run [--target ...] script.py args...`.

What is recorded, following lockdep:

- A lock's class is where it was created, as lockdep keys a class by its init site: the file
  (relative to the `sys.path` entry it was found under) and line, e.g. `app.py:12` or
  `mypkg/cache.py:40`, after an optional `prefix` (to keep two programs' classes apart). All
  locks made by one line share the class; two of them held at once by one thread is lockdep's
  "possible recursive locking".
- A blocking acquire is recorded *before* it blocks (op 0), so a program that really deadlocks
  has already told the service; if it gives up (a timeout), a release follows. A non-blocking
  acquire that succeeds is a trylock (op 2); one that fails records nothing. A release is
  recorded after it succeeds.
- `RLock`: only the outermost acquire and release of the owning thread (re-entry is not
  recursive locking).
- `Condition`: its lock is traced (a Condition made without one gets a traced RLock of the
  Condition's own class); `wait()` releases the lock and takes it again, and both are recorded,
  so locks taken while waiting order against it as they do in the kernel.
- `Semaphore`, `BoundedSemaphore`: acquisitions are exclusive acquisitions of the semaphore's
  class. A semaphore has no owner: a release by a thread that did not acquire it is recorded as
  the release of a thread that did (the oldest waiting or holding one), and a release with no
  such thread records nothing.
- Each event carries the thread's native id, the task `thread-name/tid`, the lock object's id as
  the instance, and (unless `sites=False`) the site `file:line function` of the frame that took
  the lock.

Locks created by the standard library, grpc, pyarrow, protobuf and lockfleet itself are not
traced (`include_stdlib=True` traces the standard library's, `exclude=` adds path prefixes):
they are leaves that hold no user lock, and tracing the Agent's own transport would feed back
into it. Locks created before `instrument()` are not traced, nor those of modules that did
`from threading import Lock` before it. The Agent's own threads are never traced.

The Agent is made with `overflow="drop"` by default here: a program must not stall because the
service is away; `agent.dropped` and `agent.stats()` say how many events were lost. If the Agent
fails for good (say, a bad token), tracing stops with one warning and the program runs on.
The overhead per acquire/release pair is measured by `benchmarks/bench_instrument.py`.
"""

from __future__ import annotations

import _thread
import atexit
import logging
import os
import sys
import sysconfig
import threading
from time import time_ns as _time_ns
from typing import Any

from .channel import AgentError
from .sdk import THREAD_PREFIX, Agent

log = logging.getLogger("lockfleet.agent")

_getframe = sys._getframe
_get_ident = _thread.get_ident
_get_native_id = threading.get_native_id
_allocate_lock = _thread.allocate_lock
_CRLock = _thread.RLock
_ORIGINAL = {"Lock": threading.Lock, "RLock": threading.RLock, "Condition": threading.Condition,
             "Semaphore": threading.Semaphore, "BoundedSemaphore": threading.BoundedSemaphore}
_OrigCondition: Any = threading.Condition
_OrigSemaphore: Any = threading.Semaphore
_OrigBoundedSemaphore: Any = threading.BoundedSemaphore
_THREADING_FILE = threading.Condition.wait.__code__.co_filename


class _Tracer:
    """What `instrument()` set up: the agent, the naming and the exclusions."""

    def __init__(self, agent: Agent, sites: bool, prefix: str, include_stdlib: bool,
                 exclude: tuple[str, ...], owns_agent: bool) -> None:
        self.agent = agent
        self.put = agent._offer
        self.sites = sites
        self.prefix = prefix
        self.owns_agent = owns_agent
        self._names: dict[tuple[str, int], str | None] = {}
        self._short: dict[str, str] = {}
        self._excluded: dict[str, bool] = {}
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))       # the lockfleet package
        prefixes = [here + os.sep]
        for mod in ("grpc", "google.protobuf", "pyarrow", "numpy"):
            m = sys.modules.get(mod)
            if m is not None and getattr(m, "__file__", None):
                prefixes.append(os.path.dirname(os.path.abspath(m.__file__)) + os.sep)
        self._stdlib: tuple[str, ...] = ()
        if not include_stdlib:
            paths = sysconfig.get_paths()
            self._stdlib = tuple({os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths})
            self._site = tuple({os.path.abspath(paths[k]) + os.sep for k in ("purelib", "platlib") if k in paths})
        else:
            self._site = ()
        self._prefixes = tuple(prefixes) + tuple(os.path.abspath(p) for p in exclude)

    def excluded(self, filename: str) -> bool:
        hit = self._excluded.get(filename)
        if hit is None:
            if filename.startswith("<frozen") or filename == _THREADING_FILE:
                hit = True
            else:
                path = os.path.abspath(filename)
                hit = path.startswith(self._prefixes) or (
                    bool(self._stdlib) and path.startswith(self._stdlib) and not path.startswith(self._site))
            self._excluded[filename] = hit
        return hit

    def class_name(self, frame: Any) -> str | None:
        """The class of a lock made in `frame`: "file:line", or None when not traced."""
        key = (frame.f_code.co_filename, frame.f_lineno)
        try:
            return self._names[key]
        except KeyError:
            pass
        name = None if self.excluded(key[0]) else f"{self.prefix}{self.short(key[0])}:{key[1]}"
        self._names[key] = name
        return name

    def short(self, filename: str) -> str:
        """A file as the program knows it: relative to the sys.path entry it is under."""
        hit = self._short.get(filename)
        if hit is None:
            if filename.startswith("<"):
                hit = filename
            else:
                path = os.path.abspath(filename)
                best = ""
                for entry in [*sys.path, os.getcwd()]:
                    root = os.path.abspath(entry or os.curdir)
                    root = root if root.endswith(os.sep) else root + os.sep
                    if path.startswith(root) and len(root) > len(best):
                        best = root
                hit = path[len(best):] if best else os.path.join(*path.split(os.sep)[-2:])
                hit = hit.replace(os.sep, "/")
            self._short[filename] = hit
        return hit


_tracer: _Tracer | None = None
_tls = threading.local()
_sites: dict[Any, dict[int, str]] = {}


def _thread_info() -> tuple[int, str] | None:
    """(native tid, task) of this thread, or None for the Agent's own threads (not traced)."""
    t = threading.current_thread()
    if t.name.startswith(THREAD_PREFIX):
        info = None
    else:
        tid = _get_native_id()
        info = (tid, f"{t.name}/{tid}")
    _tls.info = info
    return info


def _site(f: Any) -> str | None:
    """`file:line function` of the frame that took the lock (threading's own frames skipped),
    cached per code object and instruction offset."""
    code = f.f_code
    while code.co_filename == _THREADING_FILE:
        f = f.f_back
        if f is None:
            return None
        code = f.f_code
    try:
        return _sites[code][f.f_lasti]
    except KeyError:
        tr = _tracer
        name = tr.short(code.co_filename) if tr is not None else code.co_filename
        s = _sites.setdefault(code, {})[f.f_lasti] = f"{name}:{f.f_lineno} {code.co_name}"
        return s


def _dead() -> None:
    """The Agent failed for good or was closed: stop tracing, keep the program running."""
    global _tracer
    tr = _tracer
    if tr is None:
        return
    _tracer = None
    _restore()
    err = tr.agent.error
    if err is not None:
        log.warning("lockfleet: lock tracing stopped: %s", err)


def _info() -> tuple[int, str] | None:
    try:
        return _tls.info  # type: ignore[no-any-return]
    except AttributeError:
        return _thread_info()


# -- the traced primitives ---------------------------------------------------------------------
# Events are rows in the Agent's column order: (ts_ns, tid, op, lock, mode, subclass, instance,
# irq, site, task). `tr.put` is Agent._offer: None when the Agent is gone.

class TracedLock:
    """threading.Lock, traced. `_is_owned` is the lock's state, as Condition assumes of a Lock."""

    __slots__ = ("_lf_lock", "_lf_name", "__weakref__")

    def __init__(self, name: str) -> None:
        self._lf_lock = _allocate_lock()
        self._lf_name = name

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        tr = _tracer
        if tr is None:
            return self._lf_lock.acquire(blocking, timeout)
        try:
            info = _tls.info
        except AttributeError:
            info = _thread_info()
        if info is None:
            return self._lf_lock.acquire(blocking, timeout)
        if blocking:
            if tr.put((_time_ns(), info[0], 0, self._lf_name, 0, 0, id(self), 0,
                       _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                _dead()
                return self._lf_lock.acquire(True, timeout)
            if self._lf_lock.acquire(True, timeout):
                return True
            if tr.put((_time_ns(), info[0], 1, self._lf_name, 0, 0, id(self), 0, None, info[1])) is None:
                _dead()
            return False
        if self._lf_lock.acquire(False):
            if tr.put((_time_ns(), info[0], 2, self._lf_name, 0, 0, id(self), 0,
                       _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                _dead()
            return True
        return False

    __enter__ = acquire

    def release(self) -> None:
        self._lf_lock.release()
        tr = _tracer
        if tr is not None:
            try:
                info = _tls.info
            except AttributeError:
                info = _thread_info()
            if info is not None and tr.put((_time_ns(), info[0], 1, self._lf_name, 0, 0, id(self), 0, None,
                                            info[1])) is None:
                _dead()

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lf_lock.locked()

    def _is_owned(self) -> bool:
        return self._lf_lock.locked()

    def _at_fork_reinit(self) -> None:
        self._lf_lock._at_fork_reinit()

    def __repr__(self) -> str:
        return f"<lockfleet traced {'locked' if self.locked() else 'unlocked'} Lock {self._lf_name}>"


class TracedRLock:
    """threading.RLock, traced: only the owner's outermost acquire and release are events."""

    __slots__ = ("_lf_lock", "_lf_name", "_lf_owner", "_lf_count", "__weakref__")

    def __init__(self, name: str) -> None:
        self._lf_lock = _CRLock()
        self._lf_name = name
        self._lf_owner: int | None = None
        self._lf_count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _get_ident()
        if self._lf_owner == me:
            self._lf_lock.acquire()
            self._lf_count += 1
            return True
        tr = _tracer
        info = _info() if tr is not None else None
        if tr is None or info is None:
            ok = self._lf_lock.acquire(blocking, timeout)
        elif blocking:
            if tr.put((_time_ns(), info[0], 0, self._lf_name, 0, 0, id(self), 0,
                       _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                _dead()
            ok = self._lf_lock.acquire(True, timeout)
            if not ok and _tracer is tr and tr.put((_time_ns(), info[0], 1, self._lf_name, 0, 0, id(self), 0, None,
                                                    info[1])) is None:
                _dead()
        else:
            ok = self._lf_lock.acquire(False)
            if ok and tr.put((_time_ns(), info[0], 2, self._lf_name, 0, 0, id(self), 0,
                              _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                _dead()
        if ok:
            self._lf_owner = me
            self._lf_count = 1
        return ok

    __enter__ = acquire

    def release(self) -> None:
        if self._lf_owner != _get_ident():
            self._lf_lock.release()        # raises: cannot release un-acquired lock
            return
        c = self._lf_count - 1
        if c:
            self._lf_count = c
            self._lf_lock.release()
            return
        self._lf_owner = None
        self._lf_count = 0
        self._lf_lock.release()
        self._lf_emit(1, None)

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    def _lf_emit(self, op: int, site: str | None) -> None:
        tr = _tracer
        if tr is None:
            return
        info = _info()
        if info is not None and tr.put((_time_ns(), info[0], op, self._lf_name, 0, 0, id(self), 0, site,
                                        info[1])) is None:
            _dead()

    # what threading.Condition uses
    def _is_owned(self) -> bool:
        return self._lf_owner == _get_ident()

    def _release_save(self) -> tuple[Any, int]:
        if self._lf_owner != _get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        count = self._lf_count
        self._lf_owner = None
        self._lf_count = 0
        state = self._lf_lock._release_save()
        self._lf_emit(1, None)
        return state, count

    def _acquire_restore(self, saved: tuple[Any, int]) -> None:
        state, count = saved
        tr = _tracer
        if tr is not None:
            self._lf_emit(0, _site(_getframe(1)) if tr.sites else None)
        self._lf_lock._acquire_restore(state)
        self._lf_owner = _get_ident()
        self._lf_count = count

    def _recursion_count(self) -> int:
        return self._lf_count if self._lf_owner == _get_ident() else 0

    def _at_fork_reinit(self) -> None:
        self._lf_lock._at_fork_reinit()
        self._lf_owner = None
        self._lf_count = 0

    def __repr__(self) -> str:
        return f"<lockfleet traced RLock {self._lf_name} owner={self._lf_owner} count={self._lf_count}>"


def _lock_factory() -> Any:
    """threading.Lock while instrumented."""
    tr = _tracer
    if tr is not None:
        name = tr.class_name(_getframe(1))
        if name is not None:
            return TracedLock(name)
    return _allocate_lock()


def _rlock_factory(*args: Any, **kwargs: Any) -> Any:
    """threading.RLock while instrumented."""
    tr = _tracer
    if tr is not None:
        name = tr.class_name(_getframe(1))
        if name is not None:
            return TracedRLock(name)
    return _CRLock(*args, **kwargs)


class TracedCondition(_OrigCondition):  # type: ignore[misc, valid-type]
    """threading.Condition: without a lock, it makes a traced RLock of its own class."""

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            tr = _tracer
            name = tr.class_name(_getframe(1)) if tr is not None else None
            lock = TracedRLock(name) if name is not None else _CRLock()
        super().__init__(lock)


class _SemaphoreTrace:
    """Traced acquire/release for the Semaphore classes (see the module's documentation)."""

    _lf_name: str | None
    _lf_holders: dict[int, list[Any]]

    def _lf_setup(self, frame: Any) -> None:
        tr = _tracer
        self._lf_name = tr.class_name(frame) if tr is not None else None
        self._lf_holders = {}          # tid -> [count, task]; changed under the semaphore's _cond
        self._lf_mu = _allocate_lock()

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        tr = _tracer
        name = self._lf_name
        info = _info() if tr is not None and name is not None else None
        if info is None:
            return _OrigSemaphore.acquire(self, blocking, timeout)  # type: ignore[no-any-return]
        tid, task = info
        put = tr.put  # type: ignore[union-attr]
        site = _site(_getframe(1)) if tr.sites else None  # type: ignore[union-attr]
        if blocking:
            if put((_time_ns(), tid, 0, name, 0, 0, id(self), 0, site, task)) is None:
                _dead()
                return _OrigSemaphore.acquire(self, True, timeout)  # type: ignore[no-any-return]
            self._lf_hold(tid, task)
            if _OrigSemaphore.acquire(self, True, timeout):
                return True
            self._lf_take(tid)
            if put((_time_ns(), tid, 1, name, 0, 0, id(self), 0, None, task)) is None:
                _dead()
            return False
        if _OrigSemaphore.acquire(self, False):
            if put((_time_ns(), tid, 2, name, 0, 0, id(self), 0, site, task)) is None:
                _dead()
            else:
                self._lf_hold(tid, task)
            return True
        return False

    __enter__ = acquire

    def _lf_base_release(self, n: int) -> None:
        raise NotImplementedError

    def release(self, n: int = 1) -> None:
        self._lf_base_release(n)
        tr = _tracer
        if tr is None or self._lf_name is None:
            return
        info = _info()
        if info is None:
            return
        for _ in range(n):
            holder = self._lf_take(info[0])
            if holder is None:
                break
            if tr.put((_time_ns(), holder[0], 1, self._lf_name, 0, 0, id(self), 0, None, holder[1])) is None:
                _dead()
                break

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    def _lf_hold(self, tid: int, task: str) -> None:
        with self._lf_mu:
            h = self._lf_holders.get(tid)
            if h is None:
                self._lf_holders[tid] = [1, task]
            else:
                h[0] += 1

    def _lf_take(self, tid: int) -> tuple[int, str] | None:
        """One holding of `tid` if it has one, else of the oldest holder; None if nobody holds."""
        with self._lf_mu:
            holders = self._lf_holders
            if tid not in holders:
                if not holders:
                    return None
                tid = next(iter(holders))
            h = holders[tid]
            h[0] -= 1
            if not h[0]:
                del holders[tid]
            return tid, h[1]


class TracedSemaphore(_SemaphoreTrace, _OrigSemaphore):  # type: ignore[misc, valid-type]
    """threading.Semaphore, traced."""

    def __init__(self, value: int = 1) -> None:
        _OrigSemaphore.__init__(self, value)
        self._lf_setup(_getframe(1))

    def _lf_base_release(self, n: int) -> None:
        _OrigSemaphore.release(self, n)


class TracedBoundedSemaphore(_SemaphoreTrace, _OrigBoundedSemaphore):  # type: ignore[misc, valid-type]
    """threading.BoundedSemaphore, traced."""

    def __init__(self, value: int = 1) -> None:
        # not BoundedSemaphore.__init__: it calls threading's (now patched) Semaphore by name
        _OrigSemaphore.__init__(self, value)
        self._initial_value = value
        self._lf_setup(_getframe(1))

    def _lf_base_release(self, n: int) -> None:
        _OrigBoundedSemaphore.release(self, n)


_PATCHED = {"Lock": _lock_factory, "RLock": _rlock_factory, "Condition": TracedCondition,
            "Semaphore": TracedSemaphore, "BoundedSemaphore": TracedBoundedSemaphore}


def _restore() -> None:
    for name, original in _ORIGINAL.items():
        if getattr(threading, name) is _PATCHED[name]:
            setattr(threading, name, original)


# -- switching it on and off ------------------------------------------------------------------

def instrument(target: Any = None, host: str | None = None, *, agent: Agent | None = None, sites: bool = True,
               prefix: str = "", include_stdlib: bool = False, exclude: tuple[str, ...] | list[str] = (),
               overflow: str = "drop", close_at_exit: bool = True, close_timeout: float | None = 30.0,
               **agent_options: Any) -> Agent:
    """Trace threading's locks from now on into `agent`, or into a new `Agent(target, host,
    overflow=overflow, **agent_options)`; returns the Agent. With `close_at_exit`, the Agent is
    flushed and closed when the interpreter exits (after non-daemon threads end), waiting up to
    `close_timeout` seconds for acks. Raises RuntimeError if already instrumented."""
    global _tracer
    if _tracer is not None:
        raise RuntimeError("threading is already instrumented by lockfleet; call uninstrument() first")
    owns = agent is None
    if agent is None:
        agent = Agent(target, host, overflow=overflow, **agent_options)
    _tracer = _Tracer(agent, sites, prefix, include_stdlib, tuple(exclude), owns)
    for name, replacement in _PATCHED.items():
        setattr(threading, name, replacement)
    if close_at_exit:
        atexit.register(_close_at_exit, agent, close_timeout)
    return agent


def uninstrument(close: bool = True, timeout: float | None = 30.0) -> dict[str, Any] | None:
    """Stop tracing and put threading's originals back; close the Agent if instrument() made it
    (and `close`). Returns its stats, or None when nothing was instrumented."""
    global _tracer
    tr = _tracer
    if tr is None:
        return None
    _tracer = None
    _restore()
    atexit.unregister(_close_at_exit)
    if close and tr.owns_agent:
        tr.agent.close(timeout)
    return tr.agent.stats()


def instrumented_agent() -> Agent | None:
    """The Agent locks are traced into, if instrument() is on."""
    tr = _tracer
    return tr.agent if tr is not None else None


def _close_at_exit(agent: Agent, timeout: float | None) -> None:
    global _tracer
    if _tracer is not None and _tracer.agent is agent:
        _tracer = None
        _restore()
    try:
        agent.close(timeout)
    except AgentError as exc:
        print(f"lockfleet: {exc}", file=sys.stderr)


def _after_fork_in_child() -> None:
    # the Agent's threads do not exist in a child: stop tracing there
    global _tracer
    if _tracer is not None:
        _tracer = None
        _restore()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
