"""CPython's own threading tests as the judge of the Python tracer: the same tests run plain and
under `python -m lockfleet.agent.pylocks.run --include-stdlib` into a real `lockfleet serve` must have the
same outcome, test by test, and the findings the traced run raises must be exactly the ones
docs/python-agent.md explains.

The subset, chosen to fit CI (about 60 s for both runs on a busy 2-core machine), is every
TestCase class of test_threading, test_thread, test_queue and test_logging but those LEFT_OUT
names, with why: all of lock_tests' classes for threading's Lock, C RLock, Event, Condition (over
an RLock and over a Lock), Semaphore, BoundedSemaphore and Barrier; the thread tests; both
modules' `__all__` checks; the queues over threading's locks (Queue, the Python SimpleQueue on a
Semaphore(0)); and every logging class that is not slow. docs/python-agent.md gives the figures
of the whole four modules (495 tests) both ways.

The `test` package must be importable by this Python (it is part of CPython; Debian ships it
apart as libpython3.X-testsuite, which .ci/install-deps installs when missing): without it the
test is skipped, saying so, except under CI=true where it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lockfleet.agent import fetch_alerts, fetch_stats

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "cpython_suites.py"

# left out to fit CI's time: (module, classes). test_threading's PyRLockTests test threading's
# pure-Python RLock (`threading._PyRLock`, which the tracer does not replace) and
# ThreadJoinOnShutdown runs its programs in fresh (untraced) interpreters; test_queue's Lifo and
# Priority queues are the same Queue machinery as PyQueueTest, and CSimpleQueueTest is C's
# SimpleQueue (no threading lock); test_logging's six slowest classes use sockets, timed
# rotation, dictConfig and formatter styles (21 s plain), none nesting one handler in another.
LEFT_OUT = {
    "test.test_threading": {"PyRLockTests", "ThreadJoinOnShutdown"},
    "test.test_thread": set(),
    "test.test_queue": {"PyLifoQueueTest", "PyPriorityQueueTest", "CQueueTest", "CLifoQueueTest",
                        "CPriorityQueueTest", "CFailingQueueTest", "CSimpleQueueTest"},
    "test.test_logging": {"HandlerTest", "ConfigDictTest", "UnixSocketHandlerTest", "SocketHandlerTest",
                          "TimedRotatingFileHandlerTest", "FormatterTest"},
}

# What the traced run may raise, each explained in docs/python-agent.md ("Findings on CPython's
# own tests"): MemoryHandler.flush() holds its own Handler lock while its target Handler takes its
# lock; both are made by logging/__init__.py:916 (Handler.createLock), so lockdep's rule sees
# one class taken twice.
EXPECTED_FINDINGS = [("recursive", ["logging/__init__.py:916"])]


def _have_cpython_tests() -> str | None:
    for name in ("test.test_threading", "test.test_thread", "test.test_queue", "test.test_logging",
                 "test.lock_tests"):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except ImportError:
            return name
    return None


def _subset() -> list[str]:
    """The TestCase classes of the four modules, less LEFT_OUT, as unittest names."""
    import importlib
    import unittest

    names = []
    for module_name, left_out in LEFT_OUT.items():
        module = importlib.import_module(module_name)
        names += sorted(f"{module_name}.{name}" for name, obj in vars(module).items()
                        if isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                        and obj.__module__ == module_name and name not in left_out)
    return names


@pytest.fixture(scope="module")
def cpython_tests() -> None:
    missing = _have_cpython_tests()
    if missing is None:
        return
    reason = (f"{missing} is not importable: this Python has no CPython test package "
              f"(Debian: apt-get install libpython{sys.version_info[0]}.{sys.version_info[1]}-testsuite; "
              f".ci/install-deps does it)")
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _outcomes(path: Path) -> tuple[dict[str, str], dict]:
    data = json.loads(path.read_text())
    return {k: v["outcome"] for k, v in data["outcomes"].items()}, data


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_cpython_threading_suites_pass_the_same_traced_and_plain(cpython_tests, lockfleet_server, tmp_path):
    names = _subset()
    plain_json, traced_json = tmp_path / "plain.json", tmp_path / "traced.json"
    plain = subprocess.run([sys.executable, str(RUNNER), "--json", str(plain_json), *names],
                           capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    # every argument after the script is the program's, --json included
    traced = subprocess.run([sys.executable, "-m", "lockfleet.agent.pylocks.run", "--target", lockfleet_server.target,
                             "--host", "cpython", "--include-stdlib", str(RUNNER), "--json", str(traced_json),
                             *names], capture_output=True, text=True, timeout=280, cwd=tmp_path)
    assert traced.returncode == 0, traced.stderr[-3000:]
    want, plain_data = _outcomes(plain_json)
    got, traced_data = _outcomes(traced_json)
    assert plain_data["tests_run"] > 300
    assert set(want.values()) <= {"ok", "skip"}, {k: v for k, v in want.items() if v not in ("ok", "skip")}
    differ = {k: (want.get(k), got.get(k), traced_data["outcomes"].get(k, {}).get("detail", "")[-800:])
              for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert not differ, differ
    summary = [line for line in traced.stderr.splitlines() if line.startswith("lockfleet: ")]
    assert summary and "dropped" not in summary[-1] and "NOT DELIVERED" not in summary[-1], traced.stderr[-2000:]
    stats = fetch_stats(lockfleet_server.target)
    assert stats["events"] > 2000                   # the tests' own locks were traced
    found = sorted((a.data["kind"], a.data["locks"]) for a in fetch_alerts(lockfleet_server.target))
    assert found == sorted(EXPECTED_FINDINGS)
    print(f"\nCPython subset: {plain_data['tests_run']} tests, plain {plain_data['seconds']:.1f} s, "
          f"traced {traced_data['seconds']:.1f} s, {stats['events']} events")
