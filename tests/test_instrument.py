"""lockfleet.agent.instrument(): threading's locks traced into an Agent. The unit tests read the
Agent's buffer (nothing listens at its target, and it never cuts a batch): what each primitive
records (lockdep's rules, timeouts and trylocks, Condition.wait), signals told from mutexes (a
cross-thread release, a hand-off, semaphores by value), freed and reset locks, the lock_class/
nested annotations, and behaviour identical to the originals. The end-to-end ones run real
programs under `python -m lockfleet.agent.pylocks.run` against `lockfleet serve`: an ABBA comes back as the
circular alert between the two locks' init sites; a program mixing signals, annotated and
unannotated nesting and timed ABBA raises exactly what lockdep would; the documented logging
example removes the handler finding. CPython's own suites are in test_cpython_suites.py."""

from __future__ import annotations

import _thread
import copy
import gc
import pickle
import queue
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockfleet.agent
from lockfleet.agent import Agent, fetch_alerts, fetch_stats
from lockfleet.agent import lock_class, nested
from lockfleet.agent.pylocks.instrument import TracedLock, TracedRLock, signal_classes, uninstrument
from lockfleet.agent.pylocks.run import build_parser, split_argv

ORIGINAL = {name: getattr(threading, name) for name in ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore")}
ACQ, REL, TRY = 0, 1, 2
HERE = "test_instrument.py"


@pytest.fixture
def traced(unused_target):
    """instrument() into an Agent that keeps every event in its buffer; yields a function giving
    the events so far as (op, lock, tid) and clearing them."""
    agent = Agent(unused_target, host="unit", batch_rows=1 << 30, batch_interval=3600, overflow="drop")
    returned = lockfleet.agent.instrument(agent=agent, close_at_exit=False, connect=False)
    assert returned is agent

    def events(full: bool = False):
        with agent.state.lock:
            rows = agent.batcher.rows[:]
            del agent.batcher.rows[:]
        return rows if full else [(r[2], r[3], r[1]) for r in rows]

    try:
        yield events
    finally:
        uninstrument(close=False)
        agent.abort()
    assert all(getattr(threading, n) is f for n, f in ORIGINAL.items())


def line_of(marker: str) -> int:
    with open(__file__) as f:
        for no, text in enumerate(f, 1):
            if text.rstrip().endswith(f"# <{marker}>"):
                return no
    raise AssertionError(marker)


def in_thread(fn, *args):
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join(30)
    assert not t.is_alive()


def test_lock_class_is_the_init_site_and_events_follow_lockdep(traced):
    a = threading.Lock()  # <lock-a>
    b = threading.Lock()  # <lock-b>
    assert isinstance(a, TracedLock)
    A, B = f"{HERE}:{line_of('lock-a')}", f"{HERE}:{line_of('lock-b')}"
    me = threading.get_native_id()
    with a:  # <with-a>
        with b:
            pass
    assert b.acquire(blocking=False)          # a trylock that succeeds
    assert not b.acquire(blocking=False)      # one that fails records nothing
    b.release()
    assert b.acquire(timeout=0.01)            # a timed acquire that succeeds is an acquire
    assert not b.acquire(timeout=0.01)        # one that times out records nothing
    b.release()
    rows = traced(full=True)
    assert [(r[2], r[3]) for r in rows] == [
        (ACQ, A), (ACQ, B), (REL, B), (REL, A), (TRY, B), (REL, B), (ACQ, B), (REL, B)]
    assert all(r[1] == me for r in rows)
    first = rows[0]
    assert first[6] == id(a) and first[9] == f"{threading.current_thread().name}/{me}"
    assert first[8] == f"{HERE}:{line_of('with-a')} test_lock_class_is_the_init_site_and_events_follow_lockdep"


def test_rlock_records_only_the_outermost_acquire_and_release(traced):
    r = threading.RLock()  # <rlock>
    assert isinstance(r, TracedRLock)
    R = f"{HERE}:{line_of('rlock')}"
    with r:
        with r:
            assert r.acquire()
            r.release()
    assert traced() == [(ACQ, R, threading.get_native_id()), (REL, R, threading.get_native_id())]
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        r.release()
    other = []
    r.acquire()
    in_thread(lambda: other.append(r.acquire(timeout=0.01)))
    r.release()
    assert other == [False]
    assert [(op, name) for op, name, _ in traced()] == [(ACQ, R), (REL, R)]     # the other thread's try: nothing


def test_condition_wait_releases_and_retakes_its_lock(traced):
    cond = threading.Condition()  # <cond>
    C = f"{HERE}:{line_of('cond')}"
    assert isinstance(cond, ORIGINAL["Condition"])
    ready = []

    def notifier() -> None:
        with cond:
            ready.append(1)
            cond.notify()

    with cond:
        t = threading.Thread(target=notifier)
        t.start()
        assert cond.wait_for(lambda: ready, timeout=30)
    t.join()
    mine = threading.get_native_id()
    events = traced()
    assert [(op, name) for op, name, tid in events if tid == mine] == [(ACQ, C), (REL, C), (ACQ, C), (REL, C)]
    assert [(op, name) for op, name, tid in events if tid != mine] == [(ACQ, C), (REL, C)]
    # a Condition over a given traced Lock uses that lock's class
    lock = threading.Lock()  # <cond-lock>
    L = f"{HERE}:{line_of('cond-lock')}"
    c2 = threading.Condition(lock)
    with c2:
        assert not c2.wait(timeout=0.001)
    assert [(op, name) for op, name, _ in traced()] == [(ACQ, L), (REL, L), (ACQ, L), (REL, L)]


def test_semaphores_of_value_one_are_mutexes_and_others_are_never_recorded(traced):
    s = threading.Semaphore(1)  # <sem>
    S = f"{HERE}:{line_of('sem')}"
    assert isinstance(s, ORIGINAL["Semaphore"])
    with s:
        assert not s.acquire(blocking=False)
    assert s.acquire(blocking=False)
    s.release()
    me = threading.get_native_id()
    assert traced() == [(ACQ, S, me), (REL, S, me), (TRY, S, me), (REL, S, me)]

    counting = threading.Semaphore(3)
    with counting:
        with counting:
            pass
    signal = threading.Semaphore(0)
    in_thread(signal.release)
    assert signal.acquire(timeout=30)
    b = threading.BoundedSemaphore(1)  # <bsem>
    assert isinstance(b, ORIGINAL["BoundedSemaphore"])
    with b:
        pass
    with pytest.raises(ValueError, match="Semaphore released too many times"):
        b.release()
    assert traced() == [(ACQ, f"{HERE}:{line_of('bsem')}", me), (REL, f"{HERE}:{line_of('bsem')}", me)]


def test_a_lock_released_by_another_thread_is_a_signal_from_then_on(traced):
    me = threading.get_native_id()
    locks = [threading.Lock() for _ in range(2)]  # <signal>
    G = f"{HERE}:{line_of('signal')}"
    done = locks[0]
    done.acquire()
    in_thread(done.release)
    # the holder's acquisition is released for it (no bad_unlock, nothing left held) ...
    assert traced() == [(ACQ, G, me), (REL, G, me)]
    assert signal_classes() == [G]
    # ... and no lock of that class is recorded again
    with locks[1]:
        pass
    done.acquire()
    done.release()
    assert traced() == []


def test_a_holder_waiting_on_its_own_lock_is_a_hand_off(traced):
    me = threading.get_native_id()
    handoff = threading.Lock()  # <handoff>
    H = f"{HERE}:{line_of('handoff')}"
    handoff.acquire()
    assert not handoff.acquire(timeout=0.01)      # timed out: nothing, and still a mutex
    assert signal_classes() == []
    t = threading.Timer(0.05, handoff.release)
    t.start()
    assert handoff.acquire()                      # blocks until the other thread releases it
    t.join()
    handoff.release()
    assert traced() == [(ACQ, H, me), (REL, H, me)]
    assert signal_classes() == [H]


def test_a_lock_freed_or_reset_while_held_is_released_for_its_holder(traced):
    me = threading.get_native_id()
    for _ in range(2):
        lock = threading.Lock()  # <freed>
        lock.acquire()
        del lock                                  # lock_tests' test_acquire_destroy
        gc.collect()
    rlock = threading.RLock()  # <reset>
    rlock.acquire()
    rlock._at_fork_reinit()
    assert rlock.acquire(blocking=False)
    rlock.release()
    F, R = f"{HERE}:{line_of('freed')}", f"{HERE}:{line_of('reset')}"
    assert traced() == [(ACQ, F, me), (REL, F, me)] * 2 + [(ACQ, R, me), (REL, R, me), (TRY, R, me), (REL, R, me)]


def test_lock_class_and_nested_annotations(traced):
    class Handler:
        def __init__(self) -> None:
            self.lock = threading.RLock()  # <handler>

    outer, inner = Handler(), Handler()
    HL = f"{HERE}:{line_of('handler')}"
    assert lock_class(inner.lock, "Handler.target") is inner.lock
    with outer.lock:
        with inner.lock:
            pass
    with outer.lock:
        with nested(Handler().lock, 1) as taken:
            assert taken._is_owned()
    cond = threading.Condition()
    lock_class(cond, "queue.not_empty")
    with cond:
        pass
    plain = ORIGINAL["Lock"]()
    assert lock_class(plain, "x") is plain        # not traced: nothing to do
    with pytest.raises(ValueError):
        lock_class(outer.lock, "y", subclass=8)
    rows = traced(full=True)
    assert [(r[2], r[3], r[5]) for r in rows] == [
        (ACQ, HL, 0), (ACQ, "Handler.target", 0), (REL, "Handler.target", 0), (REL, HL, 0),
        (ACQ, HL, 0), (ACQ, HL, 1), (REL, HL, 0), (REL, HL, 0),
        (ACQ, "queue.not_empty", 0), (REL, "queue.not_empty", 0)]


def _mask(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+|owner=\d+", "X", text)


def _error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return type(exc), str(exc)
    return None


def test_traced_primitives_behave_as_the_originals(traced):
    lock, orig = threading.Lock(), ORIGINAL["Lock"]()
    rlock, orig_r = threading.RLock(), ORIGINAL["RLock"]()
    for mine, theirs in ((lock, orig), (rlock, orig_r)):
        for args, kwargs in [((False, 1), {}), ((), {"timeout": -100}), ((), {"timeout": 1e100}),
                             ((), {"timeout": "x"}), ((), {"blocking": None, "timeout": 0.5})]:
            assert _error(mine.acquire, *args, **kwargs) == _error(theirs.acquire, *args, **kwargs), (args, kwargs)
        # a call that does not bind: the same TypeError, in Python's words rather than C's
        assert _error(mine.acquire, 1, 2, 3)[0] is _error(theirs.acquire, 1, 2, 3)[0] is TypeError
        assert _error(mine.acquire, foo=1)[0] is _error(theirs.acquire, foo=1)[0] is TypeError
        assert _error(mine.release) == _error(theirs.release)
        assert isinstance(mine, type(theirs))
        assert _mask(repr(mine)) == _mask(repr(theirs))
        mine.acquire(), theirs.acquire()
        assert _mask(repr(mine)) == _mask(repr(theirs))
        assert _error(pickle.dumps, mine) == _error(pickle.dumps, theirs)
        assert _error(copy.copy, mine) == _error(copy.copy, theirs)
        mine.release(), theirs.release()
        assert _error(type(mine))[0] is TypeError
    assert lock.acquire_lock() and lock.locked_lock()
    lock.release_lock()
    assert _error(threading.Lock, 1) == _error(ORIGINAL["Lock"], 1)
    assert isinstance(lock, _thread.LockType) and isinstance(rlock, _thread.RLock)
    cond, orig_c = threading.Condition(), ORIGINAL["Condition"]()
    assert _mask(repr(cond)) == _mask(repr(orig_c))
    for mine, theirs in ((threading.Semaphore(3), ORIGINAL["Semaphore"](3)),
                         (threading.BoundedSemaphore(1), ORIGINAL["BoundedSemaphore"](1))):
        assert _mask(repr(mine)) == _mask(repr(theirs))
        assert _error(mine.acquire, False, 1) == _error(theirs.acquire, False, 1)
        # what pickling an uninstrumented semaphore says (the original class is not at threading.X now)
        assert _error(pickle.dumps, mine) == (TypeError, "cannot pickle '_thread.lock' object")
    assert isinstance(orig_c, threading.Condition) and isinstance(ORIGINAL["Semaphore"](), threading.Semaphore)
    assert issubclass(threading.BoundedSemaphore, threading.Semaphore)
    assert _error(threading.Semaphore, -1) == _error(ORIGINAL["Semaphore"], -1)
    for name in ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore"):
        # what test.support.check__all__ counts as threading's own (test_threading's MiscTestCase)
        assert getattr(threading, name).__module__ in ("threading", "_thread")
        assert getattr(threading, name).__name__ == ORIGINAL[name].__name__
    # only what succeeded is recorded: acquire/release of lock, rlock, lock again (acquire_lock)
    assert [op for op, _, _ in traced()] == [ACQ, REL] * 3


def test_library_and_agent_locks_are_not_traced(traced):
    q: queue.Queue[int] = queue.Queue()
    q.put(1)
    assert q.get() == 1
    ev = threading.Event()
    ev.set()
    assert type(q.mutex) is type(ORIGINAL["Lock"]())
    assert traced() == []


def test_uninstrument_restores_threading(unused_target):
    agent = Agent(unused_target, host="u", batch_interval=3600)
    lockfleet.agent.instrument(agent=agent, close_at_exit=False, connect=False)
    with pytest.raises(RuntimeError):
        lockfleet.agent.instrument(agent=agent, close_at_exit=False)
    traced_lock = threading.Lock()
    uninstrument(close=False)
    agent.abort()
    assert all(getattr(threading, n) is f for n, f in ORIGINAL.items())
    with traced_lock:                       # a traced lock made earlier still works, untraced
        pass
    assert uninstrument() is None


def test_run_passes_every_argument_after_the_script_or_module():
    p = build_parser()
    assert split_argv(p, ["--target", "h:1", "-m", "test", "-v", "--target", "x"]) == (
        ["--target", "h:1", "-m", "test"], ["-v", "--target", "x"])
    assert split_argv(p, ["--host=a", "--quiet", "app.py", "--quiet", "-m", "y"]) == (
        ["--host=a", "--quiet", "app.py"], ["--quiet", "-m", "y"])
    assert split_argv(p, ["-mpkg.mod", "-h"]) == (["-mpkg.mod"], ["-h"])
    assert split_argv(p, ["--", "-weird.py", "a"]) == (["--", "-weird.py"], ["a"])


ABBA = textwrap.dedent("""\
    import threading

    A = threading.Lock()
    B = threading.Lock()


    def one():
        with A:
            with B:
                pass


    def two():
        with B:
            with A:
                pass


    for target in (one, two):          # one after the other: it never hangs
        t = threading.Thread(target=target)
        t.start()
        t.join()
    print("done")
    """)


def run_traced(target: str, host: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lockfleet.agent.pylocks.run", "--target", target, "--host", host, *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_abba_program_raises_the_circular_alert(lockfleet_server, tmp_path):
    script = tmp_path / "abba.py"
    script.write_text(ABBA)
    proc = run_traced(lockfleet_server.target, "py-1", str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert "8 acked" in proc.stderr and "new alerts: circular-" in proc.stderr
    alerts = [a.data for a in fetch_alerts(lockfleet_server.target)]
    assert [(a["kind"], sorted(a["locks"]), a["hosts"]) for a in alerts] == [
        ("circular", ["abba.py:3", "abba.py:4"], ["py-1"])]
    links = alerts[0]["links"]
    assert {link["taken_site"] for link in links} == {"abba.py:9 one", "abba.py:15 two"}
    assert all(link["task"].startswith("Thread-") for link in links)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_run_keeps_the_exit_status_and_argv_and_runs_modules(lockfleet_server, tmp_path):
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "worker.py").write_text(textwrap.dedent("""\
        import sys
        import threading

        cache = threading.RLock()
        cond = threading.Condition()
        with cache:
            with cond:
                cond.notify_all()
        print(sys.argv[1:])
        sys.exit(3)
        """))
    proc = subprocess.run([sys.executable, "-m", "lockfleet.agent.pylocks.run", "--target", lockfleet_server.target,
                           "--host", "py-2", "-m", "app.worker", "x", "--y", "-v", "--target", "z"],
                          capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "['x', '--y', '-v', '--target', 'z']\n"
    assert "4 acked" in proc.stderr
    assert fetch_stats(lockfleet_server.target)["events"] == 4


LOCKDEP_PROGRAM = textwrap.dedent("""\
    import threading
    import time

    import lockfleet.agent


    class Handler:
        def __init__(self):
            self.lock = threading.RLock()


    def run(fn):
        t = threading.Thread(target=fn)
        t.start()
        t.join()


    # per-object locks of one class nested: lockdep's "possible recursive locking" ...
    outer, inner = Handler(), Handler()
    with outer.lock:
        with inner.lock:
            pass
    # ... unless annotated, by nesting level or by name
    a, b = Handler(), Handler()
    with a.lock:
        with lockfleet.agent.nested(b.lock, 1):
            pass
    lockfleet.agent.lock_class(b.lock, "Handler.target")
    with a.lock:
        with b.lock:
            pass

    # signals: a Lock released by another thread, a hand-off, a Semaphore(0), a counting semaphore
    done = threading.Lock()
    done.acquire()
    run(done.release)
    handoff = threading.Lock()
    handoff.acquire()
    threading.Timer(0.05, handoff.release).start()
    handoff.acquire()
    handoff.release()
    ready = threading.Semaphore(0)
    for _ in range(3):
        run(ready.release)
        ready.acquire()
        ready.acquire(timeout=0.01)
    pool = threading.Semaphore(4)
    with pool:
        with pool:
            pass

    # a timed-out acquire records nothing: no C -> D here ...
    C = threading.Lock()
    D = threading.Lock()
    with D:
        def try_d():
            with C:
                assert not D.acquire(timeout=0.02)
        run(try_d)
    with D:
        with C:            # ... so D -> C closes no cycle
            pass

    # a timed acquire that succeeds is an acquisition: ABBA with timeouts is still a deadlock
    A = threading.Lock()
    B = threading.Lock()
    def one():
        with A:
            assert B.acquire(timeout=5)
            B.release()
    def two():
        with B:
            assert A.acquire(timeout=5)
            A.release()
    run(one)
    run(two)

    # a forked child that exits normally: no Agent work in it, no gRPC fork noise on stderr
    import os
    import sys
    pid = os.fork()
    if pid == 0:
        with A:
            pass
        sys.exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    print("done")
    """)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_program_raises_what_lockdep_would_and_nothing_for_signals(lockfleet_server, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(LOCKDEP_PROGRAM)
    proc = run_traced(lockfleet_server.target, "py-3", str(script))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    found = sorted((a.data["kind"], sorted(a.data["locks"])) for a in fetch_alerts(lockfleet_server.target))
    assert found == [("circular", ["prog.py:65", "prog.py:66"]), ("recursive", ["prog.py:9"])]
    assert [line for line in proc.stderr.splitlines() if not line.startswith("lockfleet: ")] == []


def _docs_logging_example() -> str:
    """The logging example of docs/python-agent.md, as it is written there."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "python-agent.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "MemoryHandler(" in b and "lock_class(memory.lock" in b)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_documented_logging_annotation_removes_the_handler_finding(lockfleet_server, tmp_path):
    example = _docs_logging_example()
    use = "\nlogging.getLogger().setLevel(logging.INFO)\nlogging.info('hello')\nmemory.flush()\nprint('done')\n"
    annotated, plain = tmp_path / "annotated.py", tmp_path / "plain.py"
    annotated.write_text(example + use)
    plain.write_text("\n".join(line for line in example.splitlines() if "lock_class(" not in line) + use)
    for script, host in ((annotated, "log-1"), (plain, "log-2")):
        proc = subprocess.run([sys.executable, "-m", "lockfleet.agent.pylocks.run", "--target", lockfleet_server.target,
                               "--host", host, "--include-stdlib", str(script)], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
        found = [(a.data["kind"], a.data["locks"]) for a in fetch_alerts(lockfleet_server.target)]
        if script is annotated:
            assert found == []                           # memory -> target: an ordinary dependency
            assert (tmp_path / "app.log").read_text() == "hello\n"
    assert found == [("recursive", ["logging/__init__.py:916"])]


# -- property: one thread's random calls, against a model of what lockdep's rules record --------

KINDS = ("Lock", "RLock", "Semaphore", "BoundedSemaphore")
CALLS = st.lists(st.tuples(st.integers(0, len(KINDS) - 1),
                           st.sampled_from(["acquire", "try", "timed", "release"])), max_size=40)


class Model:
    """What one thread's calls on one primitive do and record, written from the rules of
    docs/python-agent.md: (events, exception raised) per call. `value` is the Lock's or
    semaphore's (1 free, 0 taken), `count` the RLock's depth."""

    def __init__(self, kind: str) -> None:
        self.kind, self.value, self.count, self.signal = kind, 1, 0, False

    def busy(self) -> bool:
        return self.value == 0 if self.kind != "RLock" else False

    def step(self, call: str) -> tuple[list[int], type | None]:
        op = TRY if call == "try" else ACQ
        if self.kind == "RLock":
            if call != "release":
                self.count += 1
                return ([op] if self.count == 1 else []), None
            if not self.count:
                return [], RuntimeError
            self.count -= 1
            return ([REL] if not self.count else []), None
        if call != "release":
            if not self.value:                     # a trylock or a timed acquire that fails: nothing
                return [], None
            self.value -= 1
            return ([] if self.signal else [op]), None
        if self.value == 0:
            self.value = 1
            return ([] if self.signal else [REL]), None
        if self.kind == "Lock":
            return [], RuntimeError
        if self.kind == "BoundedSemaphore":
            return [], ValueError
        self.value += 1                            # a value-1 semaphore released above 1: a counter,
        self.signal = True                         # never recorded again
        return [], None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=CALLS)
def test_one_threads_calls_record_what_the_model_says(traced, calls):
    traced()
    prims = [getattr(threading, k)() for k in KINDS]
    tag = uuid.uuid4().hex[:8]
    for kind, p in zip(KINDS, prims):
        lock_class(p, f"{kind}-{tag}")           # fresh classes: a signal class of an earlier example stays one
    models = [Model(k) for k in KINDS]
    want: list[tuple[int, str]] = []
    for i, call in calls:
        p, m = prims[i], models[i]
        if call == "acquire" and m.busy():
            call = "timed"                          # an untimed acquire of a taken Lock would wait forever
        events, raises = m.step(call)
        try:
            if call == "acquire":
                p.acquire()
            elif call == "try":
                p.acquire(False)
            elif call == "timed":
                p.acquire(timeout=0.001)
            else:
                p.release()
            got_raise = None
        except (RuntimeError, ValueError) as exc:
            got_raise = type(exc)
        assert got_raise is raises, (KINDS[i], call)
        want += [(op, f"{KINDS[i]}-{tag}") for op in events]
    assert [(op, name) for op, name, _ in traced()] == want
