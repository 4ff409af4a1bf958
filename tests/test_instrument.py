"""lockfleet.agent.instrument(): threading's locks traced into an Agent. The unit tests read the
Agent's buffer (nothing listens at its target, and it never cuts a batch); the end-to-end ones run
real programs under `python -m lockfleet.agent.run` against `lockfleet serve`: a two-thread ABBA
that never hangs comes back as the circular alert between the two locks' init sites."""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading

import pytest

import lockfleet.agent
from lockfleet.agent import Agent, fetch_alerts, fetch_stats
from lockfleet.agent.instrument import TracedLock, TracedRLock, uninstrument

ORIGINAL = {name: getattr(threading, name) for name in ("Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore")}
ACQ, REL, TRY = 0, 1, 2
HERE = "test_instrument.py"


@pytest.fixture
def traced(unused_target):
    """instrument() into an Agent that keeps every event in its buffer; yields a function giving
    the events so far as (op, lock, tid) and clearing them."""
    agent = Agent(unused_target, host="unit", batch_rows=1 << 30, batch_interval=3600, overflow="drop")
    returned = lockfleet.agent.instrument(agent=agent, close_at_exit=False)
    assert returned is agent

    def events(full: bool = False):
        with agent._lock:
            rows, agent._rows = agent._rows, []
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
    assert b.acquire(timeout=0.01)
    assert not b.acquire(timeout=0.01)        # gives up: acquire, then release
    b.release()
    rows = traced(full=True)
    assert [(op, name) for op, name, tid in [(r[2], r[3], r[1]) for r in rows]] == [
        (ACQ, A), (ACQ, B), (REL, B), (REL, A), (TRY, B), (REL, B), (ACQ, B), (ACQ, B), (REL, B), (REL, B)]
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
    with pytest.raises(RuntimeError):
        r.release()
    other = []
    r.acquire()
    t = threading.Thread(target=lambda: other.append(r.acquire(timeout=0.01)))
    t.start()
    t.join()
    r.release()
    assert other == [False]
    ops = [(op, name) for op, name, _ in traced()]
    assert ops == [(ACQ, R), (ACQ, R), (REL, R), (REL, R)]     # the other thread tried, gave up


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
        c2.wait(timeout=0.001)
    assert [(op, name) for op, name, _ in traced()] == [(ACQ, L), (REL, L), (ACQ, L), (REL, L)]


def test_semaphores_are_exclusive_acquisitions_of_their_class(traced):
    s = threading.Semaphore(2)  # <sem>
    S = f"{HERE}:{line_of('sem')}"
    assert isinstance(s, ORIGINAL["Semaphore"])
    with s:
        assert s.acquire(blocking=False)
        s.release()
    me = threading.get_native_id()
    assert traced() == [(ACQ, S, me), (TRY, S, me), (REL, S, me), (REL, S, me)]

    # a signal: taken by a waiter, released by another thread -> the waiter's release
    signal = threading.Semaphore(0)  # <signal>
    G = f"{HERE}:{line_of('signal')}"
    tids = []

    def waiter() -> None:
        tids.append(threading.get_native_id())
        assert signal.acquire(timeout=30)

    t = threading.Thread(target=waiter)
    t.start()
    while not signal._lf_holders:
        threading.Event().wait(0.001)
    signal.release()
    t.join()
    signal.release()                       # nobody holds it: nothing to record
    assert traced() == [(ACQ, G, tids[0]), (REL, G, tids[0])]

    b = threading.BoundedSemaphore(1)
    assert isinstance(b, ORIGINAL["BoundedSemaphore"])
    with b:
        pass
    with pytest.raises(ValueError):
        b.release()
    assert [op for op, _, _ in traced()] == [ACQ, REL]


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
    lockfleet.agent.instrument(agent=agent, close_at_exit=False)
    with pytest.raises(RuntimeError):
        lockfleet.agent.instrument(agent=agent, close_at_exit=False)
    traced_lock = threading.Lock()
    uninstrument(close=False)
    agent.abort()
    assert all(getattr(threading, n) is f for n, f in ORIGINAL.items())
    with traced_lock:                       # a traced lock made earlier still works, untraced
        pass
    assert uninstrument() is None


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
    return subprocess.run([sys.executable, "-m", "lockfleet.agent.run", "--target", target, "--host", host, *args],
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
    proc = subprocess.run([sys.executable, "-m", "lockfleet.agent.run", "--target", lockfleet_server.target,
                           "--host", "py-2", "-m", "app.worker", "x", "--y"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "['x', '--y']\n"
    assert "4 acked" in proc.stderr
    assert fetch_stats(lockfleet_server.target)["events"] == 4
