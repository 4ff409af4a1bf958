"""Run parts of CPython's own test suite (the `test` package of this interpreter) with unittest
and write each test's outcome as JSON, so that a run under `python -m lockfleet.agent.pylocks.run` can be
compared with a plain one (tests/test_cpython_suites.py).

    python tests/cpython_suites.py --json out.json test.test_threading.LockTests test.test_queue

Outcomes: "ok", "fail", "error", "skip", "xfail", "xpass"; the JSON also has each test's seconds
and, for failures, the first lines of the traceback. Exit status 0 when the run completed
(whatever the outcomes), 2 on bad usage (a name that does not load).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import unittest
from typing import Any


class Recorder(unittest.TextTestResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._t0 = 0.0

    def startTest(self, test: unittest.TestCase) -> None:
        self._t0 = time.monotonic()
        super().startTest(test)

    def _put(self, test: Any, outcome: str, detail: str = "") -> None:
        entry = {"outcome": outcome, "seconds": round(time.monotonic() - self._t0, 3)}
        if detail:
            entry["detail"] = detail[-2000:]
        self.outcomes[test.id()] = entry

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._put(test, "ok")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._put(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._put(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._put(test, "skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._put(test, "xfail")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._put(test, "xpass")

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._put(subtest, kind, self._exc_info_to_string(err, test))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, metavar="FILE", help="where to write the outcomes")
    ap.add_argument("names", nargs="+", help="unittest names: modules, classes or tests of the test package")
    args = ap.parse_args(argv)
    try:
        suite = unittest.defaultTestLoader.loadTestsFromNames(args.names)
    except (ImportError, AttributeError) as exc:
        print(f"cpython_suites: cannot load {' '.join(args.names)}: {exc}", file=sys.stderr)
        return 2
    if unittest.defaultTestLoader.errors:
        print(f"cpython_suites: {unittest.defaultTestLoader.errors[0].splitlines()[-1]}", file=sys.stderr)
        return 2
    runner = unittest.TextTestRunner(stream=sys.stderr, resultclass=Recorder, verbosity=0)
    t0 = time.monotonic()
    result = runner.run(suite)
    seconds = time.monotonic() - t0
    assert isinstance(result, Recorder)
    with open(args.json, "w") as f:
        json.dump({"seconds": seconds, "tests_run": result.testsRun, "outcomes": result.outcomes}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
