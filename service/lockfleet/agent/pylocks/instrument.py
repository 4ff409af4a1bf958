"""Lock orders of a Python program, streamed to lockfleet: `instrument()` replaces threading's
`Lock`, `RLock`, `Condition`, `Semaphore` and `BoundedSemaphore` with traced versions whose
acquisitions and releases go to an `Agent`, and that otherwise behave exactly as the originals.

    import lockfleet.agent
    agent = lockfleet.agent.instrument("127.0.0.1:50551", host="web-1")
    ...                                  # the program; its locks are traced from here on

or, without changing the program: `python -m lockfleet.agent.pylocks.run [--target ...] script.py args...`.
docs/python-agent.md is the user's guide: what is recorded and why, how a lock used as a signal is
told from a mutex, the annotations (`lock_class`, `nested`), compatibility, and the overhead.

In short, following lockdep:

- A lock's class is where it was created (lockdep's static key): `file:line`, the file relative to
  the `sys.path` entry it was found under, after an optional `prefix`. `lock_class(lock, name,
  subclass)` names it otherwise; `nested(lock, n)` is `mutex_lock_nested`.
- An untimed blocking acquire is recorded before it blocks (op 0), so a program that really
  deadlocks has told the service. A non-blocking acquire that succeeds is a trylock (op 2); a timed
  one that succeeds is an acquire (op 0), recorded once it has the lock; a failed or timed-out
  acquire records nothing. A release is recorded after it succeeds, for the thread whose
  acquisition was recorded.
- `RLock`: only the owner's outermost acquire and release. `Condition.wait` releases its lock and
  takes it again, both recorded.
- Signals are not mutexes (lockdep tracks neither completions nor counting semaphores): a
  `Semaphore`/`BoundedSemaphore` made with a value other than 1 is never recorded; a `Lock` or a
  value-1 semaphore stops being recorded, for its whole class, the first time a thread other than
  the recorded holder releases it or its holder blocks on it again (a hand-off). The holder's
  recorded acquisition is then released, so that no `recursive` or `bad_unlock` follows.

Locks created by the standard library, grpc, pyarrow, protobuf and lockfleet itself are not
traced (`include_stdlib=True` traces the standard library's, `exclude=` adds path prefixes).
Locks created before `instrument()` are not traced, nor those of modules that did `from threading
import Lock` before it. The Agent's own threads are never traced. The Agent is made with
`overflow="drop"` by default here: a program must not stall because the service is away.
"""

from __future__ import annotations

import _thread
import atexit
import functools
import logging
import os
import sys
import sysconfig
import threading
from time import time_ns as _time_ns
from typing import Any

from ...events import ACQUIRE, RELEASE, TRY_ACQUIRE
from ..client.channel import AgentError
from ..client.sdk import Agent
from ..client.state import THREAD_PREFIX

log = logging.getLogger(__name__)

_getframe = sys._getframe
_get_native_id = threading.get_native_id
_allocate_lock = _thread.allocate_lock
_LockType = _thread.LockType
_CRLock = _thread.RLock
_new = object.__new__
_ORIGINAL = {"Lock": threading.Lock, "RLock": threading.RLock, "Condition": threading.Condition,
             "Semaphore": threading.Semaphore, "BoundedSemaphore": threading.BoundedSemaphore}
_OrigCondition: Any = threading.Condition
_OrigSemaphore: Any = threading.Semaphore
_OrigBoundedSemaphore: Any = threading.BoundedSemaphore
_THREADING_FILE = threading.Condition.wait.__code__.co_filename


class LockClass:
    """One lock class: `name` and `subclass` as the events carry them. `signal` becomes True when
    one of its locks is seen used as a signal (released by a thread other than the one that took
    it, or waited on by its own holder); from then on none of its locks is recorded."""

    __slots__ = ("name", "signal", "subclass")

    def __init__(self, name: str, subclass: int = 0) -> None:
        self.name = name
        self.subclass = subclass
        self.signal = False

    def __repr__(self) -> str:
        return f"LockClass({self.name!r}, {self.subclass}{', signal' if self.signal else ''})"


class _Tracer:
    """What `instrument()` set up: the agent, the naming and the exclusions."""

    def __init__(self, agent: Agent, sites: bool, prefix: str, include_stdlib: bool,
                 exclude: tuple[str, ...], owns_agent: bool) -> None:
        self.agent = agent
        self.buffer = agent.batcher              # the hot path appends to its rows
        self.put = agent.batcher.offer
        self.sites = sites
        self.prefix = prefix
        self.owns_agent = owns_agent
        self.signals: list[str] = []            # classes found to be signals, in order
        self._by_site: dict[tuple[str, int], LockClass | None] = {}
        self._by_name: dict[tuple[str, int], LockClass] = {}
        self._short: dict[str, str] = {}
        self._excluded: dict[str, bool] = {}
        here = os.path.dirname(os.path.abspath(sys.modules[__name__.partition('.')[0]].__file__ or ''))  # the lockfleet package
        prefixes = [here + os.sep]
        for mod in ("grpc", "google.protobuf", "pyarrow", "numpy"):
            m = sys.modules.get(mod)
            file = getattr(m, "__file__", None) if m is not None else None
            if file:
                prefixes.append(os.path.dirname(os.path.abspath(file)) + os.sep)
        self._stdlib: tuple[str, ...] = ()
        self._site: tuple[str, ...] = ()
        if not include_stdlib:
            paths = sysconfig.get_paths()
            self._stdlib = tuple({os.path.abspath(paths[k]) + os.sep for k in ("stdlib", "platstdlib") if k in paths})
            self._site = tuple({os.path.abspath(paths[k]) + os.sep for k in ("purelib", "platlib") if k in paths})
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

    def site_class(self, frame: Any) -> LockClass | None:
        """The class of a lock made in `frame` ("file:line"), or None when it is not traced."""
        key = (frame.f_code.co_filename, frame.f_lineno)
        try:
            return self._by_site[key]
        except KeyError:
            pass
        k = None if self.excluded(key[0]) else self.named(f"{self.prefix}{self.short(key[0])}:{key[1]}", 0)
        self._by_site[key] = k
        return k

    def named(self, name: str, subclass: int) -> LockClass:
        """The one LockClass of (name, subclass)."""
        k = self._by_name.get((name, subclass))
        if k is None:
            k = self._by_name.setdefault((name, subclass), LockClass(name, subclass))
        return k

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


def _info() -> tuple[int, str] | None:
    try:
        return _tls.info  # type: ignore[no-any-return]
    except AttributeError:
        return _thread_info()


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


def _emit(op: int, k: LockClass, subclass: int, inst: Any, info: tuple[int, str], site: str | None) -> None:
    """One event for `info`'s thread (not necessarily the calling one)."""
    tr = _tracer
    if tr is not None and tr.put((_time_ns(), info[0], op, k.name, 0, subclass, id(inst), 0, site,
                                  info[1])) is None:
        _dead()


def _site_of_caller(depth: int) -> str | None:
    tr = _tracer
    return _site(_getframe(depth + 1)) if tr is not None and tr.sites else None


def _to_signal(k: LockClass) -> None:
    """`k`'s locks are signals, not mutexes: record none of them from now on."""
    if not k.signal:
        k.signal = True
        tr = _tracer
        if tr is not None:
            tr.signals.append(k.name)
        log.debug("lockfleet: %s is used as a signal; its locks are no longer recorded", k.name)


# -- the traced primitives ---------------------------------------------------------------------
# Events are rows in the Agent's column order: (ts_ns, tid, op, lock, mode, subclass, instance,
# irq, site, task). `tr.put` is the Agent's Batcher.offer: None when the Agent is gone. `_lf_holder` is the
# (tid, task) of the thread whose acquisition was recorded and not yet released: it is set after
# the real acquire and cleared before the real release, so a release is recorded exactly when an
# acquisition was.

def _refuse_instantiation(cls: type, *args: Any, **kwargs: Any) -> Any:
    raise TypeError(f"cannot create '{cls.__module__}.{cls.__qualname__}' instances")


class TracedLock:
    """threading.Lock, traced. Made only by `threading.Lock()` while instrumented; otherwise the
    same object as `_thread.lock` to the program: methods, arguments, errors, repr, isinstance
    (through `__class__`), pickling refusal, `_at_fork_reinit`."""

    __slots__ = ("__weakref__", "_lf_class", "_lf_holder", "_lf_lock")
    __new__ = _refuse_instantiation
    _lf_lock: Any       # the real lock
    _lf_class: LockClass
    _lf_holder: Any     # the thread info of the holder (TracedLock), for hand-offs

    def acquire(self, blocking: Any = True, timeout: Any = -1) -> bool:
        tr = _tracer
        k = self._lf_class
        if tr is None or k.signal:
            return self._lf_lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        try:
            info = _tls.info
        except AttributeError:
            info = _thread_info()
        if info is None:
            return self._lf_lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        if not blocking or timeout != -1:
            # a trylock or a timed acquire: the real call checks the arguments; recorded if it succeeds
            if not self._lf_lock.acquire(blocking, timeout):
                return False
            if not k.signal:
                self._lf_holder = info
                if tr.put((_time_ns(), info[0], ACQUIRE if blocking else TRY_ACQUIRE, k.name, 0, k.subclass, id(self), 0,
                           _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                    _dead()
            return True
        h = self._lf_holder
        if h is not None and h[0] == info[0]:
            # the holder waits until another thread releases it: a hand-off, so a signal
            _to_signal(k)
            if self._lf_holder is h:
                self._lf_holder = None
                _emit(RELEASE, k, k.subclass, self, h, None)
            return self._lf_lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        if tr.sites:
            f = _getframe(1)
            site: str | None
            try:
                site = _sites[f.f_code][f.f_lasti]
            except KeyError:
                site = _site(f)
        else:
            site = None
        # Batcher.offer inlined (this is the hot path): append while there is room
        buf = tr.buffer
        rows = buf.rows
        row = (_time_ns(), info[0], ACQUIRE, k.name, 0, k.subclass, id(self), 0, site, info[1])
        if len(rows) < buf.room:
            rows.append(row)
        elif buf.offer(row) is None:
            _dead()
            return self._lf_lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        try:
            got = self._lf_lock.acquire(blocking, timeout)
        except BaseException:             # interrupted (a signal handler raised): not taken
            _emit(RELEASE, k, k.subclass, self, info, None)
            raise
        self._lf_holder = info
        return got  # type: ignore[no-any-return]

    __enter__ = acquire

    def release(self) -> None:
        h = self._lf_holder
        if h is None:
            self._lf_lock.release()
            return
        self._lf_holder = None
        self._lf_lock.release()
        tr = _tracer
        if tr is None:
            return
        try:
            info = _tls.info
        except AttributeError:
            info = _thread_info()
        if info is None or info[0] != h[0]:
            _to_signal(self._lf_class)     # released by another thread: a signal
        buf = tr.buffer
        rows = buf.rows
        row = (_time_ns(), h[0], RELEASE, self._lf_class.name, 0, 0, id(self), 0, None, h[1])
        if len(rows) < buf.room:
            rows.append(row)
        elif buf.offer(row) is None:
            _dead()

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    def locked(self) -> bool:
        return self._lf_lock.locked()  # type: ignore[no-any-return]

    # _thread.lock's old aliases
    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def _at_fork_reinit(self) -> None:
        self._lf_lock._at_fork_reinit()
        _forget(self)

    def __del__(self) -> None:
        _forget(self)

    def __repr__(self) -> str:
        return f"<{'locked' if self._lf_lock.locked() else 'unlocked'} _thread.lock object at {id(self):#x}>"

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle '_thread.lock' object")

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return _LockType


def _forget(lock: Any) -> None:
    """The lock was freed or reset while its acquisition was recorded (Python allows both, and
    lock_tests does both): record its release, so its holder's stack does not keep it forever."""
    h = getattr(lock, "_lf_holder", None)
    if h is not None:
        lock._lf_holder = None
        try:
            _emit(RELEASE, lock._lf_class, 0, lock, h, None)
        except Exception:
            pass


def _rlock_repr(inner: Any, me: object) -> str:
    text = repr(inner)
    return f"{text[:text.rindex(' at ')]} at {id(me):#x}>"


class TracedRLock:
    """threading.RLock, traced: only the owner's outermost acquire and release are events. The
    state (owner, count) is the real RLock's, so repr and Condition's helpers are the originals'."""

    __slots__ = ("__weakref__", "_lf_class", "_lf_holder", "_lf_lock")
    __new__ = _refuse_instantiation
    _lf_lock: Any       # the real lock
    _lf_class: LockClass
    _lf_holder: Any     # the thread info of the holder (TracedLock), for hand-offs

    def acquire(self, blocking: Any = True, timeout: Any = -1) -> bool:
        lock = self._lf_lock
        tr = _tracer
        if tr is None or lock._is_owned():
            return lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        try:
            info = _tls.info
        except AttributeError:
            info = _thread_info()
        if info is None:
            return lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        k = self._lf_class
        if not blocking or timeout != -1:
            if not lock.acquire(blocking, timeout):
                return False
            self._lf_holder = info
            if tr.put((_time_ns(), info[0], ACQUIRE if blocking else TRY_ACQUIRE, k.name, 0, k.subclass, id(self), 0,
                       _site(_getframe(1)) if tr.sites else None, info[1])) is None:
                _dead()
            return True
        if tr.sites:
            f = _getframe(1)
            site: str | None
            try:
                site = _sites[f.f_code][f.f_lasti]
            except KeyError:
                site = _site(f)
        else:
            site = None
        buf = tr.buffer
        rows = buf.rows
        row = (_time_ns(), info[0], ACQUIRE, k.name, 0, k.subclass, id(self), 0, site, info[1])
        if len(rows) < buf.room:
            rows.append(row)
        elif buf.offer(row) is None:
            _dead()
            return lock.acquire(blocking, timeout)  # type: ignore[no-any-return]
        try:
            got = lock.acquire(blocking, timeout)
        except BaseException:
            _emit(RELEASE, k, k.subclass, self, info, None)
            raise
        self._lf_holder = info
        return got  # type: ignore[no-any-return]

    __enter__ = acquire

    def release(self) -> None:
        lock = self._lf_lock
        h = self._lf_holder
        if h is None or lock._recursion_count() != 1:
            lock.release()                  # re-entered, untraced, or not the owner (raises)
            return
        self._lf_holder = None
        lock.release()
        tr = _tracer
        if tr is not None:
            buf = tr.buffer
            rows = buf.rows
            row = (_time_ns(), h[0], RELEASE, self._lf_class.name, 0, 0, id(self), 0, None, h[1])
            if len(rows) < buf.room:
                rows.append(row)
            elif buf.offer(row) is None:
                _dead()

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    # what threading.Condition uses
    def _is_owned(self) -> bool:
        return self._lf_lock._is_owned()  # type: ignore[no-any-return]

    def _recursion_count(self) -> int:
        return self._lf_lock._recursion_count()  # type: ignore[no-any-return]

    def _release_save(self) -> Any:
        state = self._lf_lock._release_save()   # raises as the original does
        h = self._lf_holder
        if h is not None:
            self._lf_holder = None
            _emit(RELEASE, self._lf_class, 0, self, h, None)
        return state

    def _acquire_restore(self, state: Any) -> None:
        tr = _tracer
        info = _info() if tr is not None else None
        if info is None:
            self._lf_lock._acquire_restore(state)
            return
        k = self._lf_class
        _emit(ACQUIRE, k, k.subclass, self, info, _site(_getframe(1)) if tr.sites else None)  # type: ignore[union-attr]
        try:
            self._lf_lock._acquire_restore(state)
        except BaseException:
            _emit(RELEASE, k, 0, self, info, None)
            raise
        self._lf_holder = info

    def _at_fork_reinit(self) -> None:
        self._lf_lock._at_fork_reinit()
        _forget(self)

    def __del__(self) -> None:
        _forget(self)

    def __repr__(self) -> str:
        return _rlock_repr(self._lf_lock, self)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle '_thread.RLock' object")

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return _CRLock


def _make_lock(k: LockClass) -> TracedLock:
    lock: TracedLock = _new(TracedLock)
    lock._lf_lock = _allocate_lock()
    lock._lf_class = k
    lock._lf_holder = None
    return lock


def _make_rlock(k: LockClass) -> TracedRLock:
    lock: TracedRLock = _new(TracedRLock)
    lock._lf_lock = _CRLock()
    lock._lf_class = k
    lock._lf_holder = None
    return lock


def _lock_factory(*args: Any) -> Any:
    """threading.Lock while instrumented."""
    tr = _tracer
    if tr is not None and not args:
        k = tr.site_class(_getframe(1))
        if k is not None:
            return _make_lock(k)
    return _allocate_lock(*args)


def _rlock_factory(*args: Any, **kwargs: Any) -> Any:
    """threading.RLock while instrumented."""
    tr = _tracer
    if tr is not None and not args and not kwargs:
        k = tr.site_class(_getframe(1))
        if k is not None:
            return _make_rlock(k)
    return _CRLock(*args, **kwargs)


functools.update_wrapper(_lock_factory, _ORIGINAL["Lock"])
functools.update_wrapper(_rlock_factory, _ORIGINAL["RLock"])


class _Like(type):
    """The metaclass of the patched classes: `isinstance`/`issubclass` against the patched
    `threading.Condition` (etc.) answer as against the original, so objects made before
    instrument() or by threading itself pass the same checks."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.__lf_original__)  # type: ignore[attr-defined]

    def __subclasscheck__(cls, sub: Any) -> bool:
        return issubclass(sub, cls.__lf_original__)  # type: ignore[attr-defined]


def _present_as(original: type) -> Any:
    """A class decorator: the patched class shows the original's module, name and doc."""
    def apply(cls: type) -> type:
        cls.__module__ = original.__module__
        cls.__name__ = original.__name__
        cls.__qualname__ = original.__qualname__
        cls.__doc__ = original.__doc__
        cls.__lf_original__ = original  # type: ignore[attr-defined]
        return cls
    return apply


@_present_as(_OrigCondition)
class TracedCondition(_OrigCondition, metaclass=_Like):
    """threading.Condition: without a lock, it makes a traced RLock of its own class."""

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            tr = _tracer
            k = tr.site_class(_getframe(1)) if tr is not None else None
            lock = _make_rlock(k) if k is not None else _CRLock()
        _OrigCondition.__init__(self, lock)


class _SemaphoreTrace:
    """Traced acquire/release for the Semaphore classes: a semaphore made with value 1 is a mutex
    (until it is seen used as a signal); any other value makes a signal or a counter, never
    recorded (`_lf_class` None)."""

    _lf_class: LockClass | None
    _lf_holder: tuple[int, str] | None

    def _lf_setup(self, value: Any, frame: Any) -> None:
        tr = _tracer
        self._lf_class = tr.site_class(frame) if tr is not None and value == 1 else None
        self._lf_holder = None

    def acquire(self, blocking: Any = True, timeout: Any = None) -> bool:
        k = self._lf_class
        tr = _tracer
        base = super().acquire  # type: ignore[misc]
        if k is None or tr is None or k.signal:
            return base(blocking, timeout)  # type: ignore[no-any-return]
        info = _info()
        if info is None:
            return base(blocking, timeout)  # type: ignore[no-any-return]
        if not blocking or timeout is not None:
            if not base(blocking, timeout):
                return False
            if not k.signal:
                self._lf_holder = info
                _emit(ACQUIRE if blocking else TRY_ACQUIRE, k, k.subclass, self, info,
                      _site(_getframe(1)) if tr.sites else None)
            return True
        h = self._lf_holder
        if h is not None and h[0] == info[0]:
            _to_signal(k)                   # the holder waits for another thread's release
            if self._lf_holder is h:
                self._lf_holder = None
                _emit(RELEASE, k, 0, self, h, None)
            return base(blocking, timeout)  # type: ignore[no-any-return]
        _emit(ACQUIRE, k, k.subclass, self, info, _site(_getframe(1)) if tr.sites else None)
        try:
            got = base(blocking, timeout)
        except BaseException:
            _emit(RELEASE, k, 0, self, info, None)
            raise
        self._lf_holder = info
        return got  # type: ignore[no-any-return]

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        h = self._lf_holder
        k = self._lf_class
        if h is None:
            super().release(n)  # type: ignore[misc]
            if k is not None and not k.signal and _tracer is not None and self._value > 1:  # type: ignore[attr-defined]
                _to_signal(k)               # released above its initial 1: a counter, not a mutex
            return
        self._lf_holder = None
        try:
            super().release(n)  # type: ignore[misc]
        except BaseException:
            self._lf_holder = h
            raise
        if _tracer is None:
            return
        info = _info()
        if n != 1 or info is None or info[0] != h[0]:
            _to_signal(k)  # type: ignore[arg-type]
        _emit(RELEASE, k, 0, self, h, None)  # type: ignore[arg-type]

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self.release()

    def __del__(self) -> None:
        _forget(self)


@_present_as(_OrigSemaphore)
class TracedSemaphore(_SemaphoreTrace, _OrigSemaphore, metaclass=_Like):
    """threading.Semaphore, traced when made with value 1."""

    def __init__(self, value: int = 1) -> None:
        _OrigSemaphore.__init__(self, value)
        # threading's own BoundedSemaphore (made before instrument(), or subclassed) calls
        # `Semaphore.__init__` by name, so this runs for objects that are not traced ones too
        if isinstance(self, _SemaphoreTrace):
            self._lf_setup(value, _getframe(1))


@_present_as(_OrigBoundedSemaphore)
class TracedBoundedSemaphore(_SemaphoreTrace, _OrigBoundedSemaphore, metaclass=_Like):
    """threading.BoundedSemaphore, traced when made with value 1."""

    def __init__(self, value: int = 1) -> None:
        _OrigBoundedSemaphore.__init__(self, value)
        self._lf_setup(value, _getframe(1))


_PATCHED = {"Lock": _lock_factory, "RLock": _rlock_factory, "Condition": TracedCondition,
            "Semaphore": TracedSemaphore, "BoundedSemaphore": TracedBoundedSemaphore}


def _restore() -> None:
    for name, original in _ORIGINAL.items():
        if getattr(threading, name) is _PATCHED[name]:
            setattr(threading, name, original)


# -- annotations ---------------------------------------------------------------------------------

def _traced_part(lock: Any) -> Any:
    """The object that carries the class: the lock itself, or a Condition's lock."""
    if isinstance(lock, _OrigCondition):
        lock = lock._lock
    return lock if isinstance(lock, (TracedLock, TracedRLock, _SemaphoreTrace)) else None


def lock_class(lock: Any, name: str | None = None, subclass: int = 0) -> Any:
    """Put a traced lock (Lock, RLock, value-1 Semaphore, or a Condition's lock) in the class
    (`name`, `subclass`) instead of its creation site's; `name=None` keeps the current name and
    sets the subclass. Locks of one class nested in one thread are lockdep's "possible recursive
    locking"; giving per-object locks their own names or nesting levels is lockdep's answer. Returns
    `lock`; does nothing to a lock that is not traced (made before instrument(), or excluded)."""
    if not isinstance(subclass, int) or not 0 <= subclass <= 7:
        raise ValueError(f"subclass must be an int from 0 to 7, not {subclass!r}")
    target = _traced_part(lock)
    tr = _tracer
    if target is None or target._lf_class is None or tr is None:
        return lock
    target._lf_class = tr.named(target._lf_class.name if name is None else str(name), subclass)
    return lock


class nested:
    """`with nested(lock, n):` acquires `lock` as nesting level `n` (1..7), as the kernel's
    `mutex_lock_nested(lock, n)`: a lock of the same class held at level 0 is not then
    "recursive". The release is the lock's ordinary one."""

    __slots__ = ("_lock", "_subclass")

    def __init__(self, lock: Any, subclass: int) -> None:
        if not isinstance(subclass, int) or not 0 <= subclass <= 7:
            raise ValueError(f"subclass must be an int from 0 to 7, not {subclass!r}")
        self._lock = lock
        self._subclass = subclass

    def __enter__(self) -> Any:
        lock = self._lock
        target = _traced_part(lock)
        tr = _tracer
        k = target._lf_class if target is not None else None
        info = _info() if tr is not None and k is not None and not k.signal else None
        if info is None or (isinstance(target, TracedRLock) and target._lf_lock._is_owned()):
            lock.acquire()
            return lock
        _emit(ACQUIRE, k, self._subclass, target, info, _site(_getframe(1)) if tr.sites else None)  # type: ignore
        try:
            if isinstance(target, _SemaphoreTrace):
                super(_SemaphoreTrace, target).acquire()  # type: ignore[misc]
            else:
                target._lf_lock.acquire()
        except BaseException:
            _emit(RELEASE, k, 0, target, info, None)  # type: ignore[arg-type]
            raise
        target._lf_holder = info
        return lock

    def __exit__(self, t: object, v: object, tb: object) -> None:
        self._lock.release()


def signal_classes() -> list[str]:
    """The classes found used as signals (no longer recorded), in the order they were found."""
    tr = _tracer
    return list(tr.signals) if tr is not None else []


# -- switching it on and off ------------------------------------------------------------------

def instrument(target: Any = None, host: str | None = None, *, agent: Agent | None = None, sites: bool = True,
               prefix: str = "", include_stdlib: bool = False, exclude: tuple[str, ...] | list[str] = (),
               overflow: str = "drop", close_at_exit: bool = True, close_timeout: float | None = 30.0,
               connect: bool = True, **agent_options: Any) -> Agent:
    """Trace threading's locks from now on into `agent`, or into a new `Agent(target, host,
    overflow=overflow, **agent_options)`; returns the Agent. With `close_at_exit`, the Agent is
    flushed and closed when the interpreter exits (after non-daemon threads end), waiting up to
    `close_timeout` seconds for acks. With `connect`, the Agent's call to the service is opened
    first (`Agent.connect()`), so that the threads gRPC runs it on exist before tracing starts
    rather than appearing in the middle of the program. Raises RuntimeError if already
    instrumented."""
    global _tracer
    if _tracer is not None:
        raise RuntimeError("threading is already instrumented by lockfleet; call uninstrument() first")
    owns = agent is None
    if agent is None:
        agent = Agent(target, host, overflow=overflow, **agent_options)
    if connect:
        agent.connect()
    _tracer = _Tracer(agent, sites, prefix, include_stdlib, tuple(exclude), owns)
    for name, replacement in _PATCHED.items():
        setattr(threading, name, replacement)
    if close_at_exit:
        atexit.register(_close_at_exit, agent, close_timeout, os.getpid())
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


def _close_at_exit(agent: Agent, timeout: float | None, pid: int) -> None:
    global _tracer
    if os.getpid() != pid:
        return           # a forked child: the Agent and its threads are the parent's
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
