"""lockfleet's errors, and the one table from an error to a command's exit status.

Every exception the package raises on purpose is a `LockfleetError`, in one of two families:

- `UsageError` (a `ValueError`): the caller asked for something wrong, a bad option or bad input
  (`InputError`: a file, batch, row or rules line that does not follow its format, the message
  naming where). A command exits 2 with the one-line reason on stderr.
- `OperationalError`: the request was fine but the work failed (a service unreachable, a data dir
  locked, a log corrupt, a sink down). A command exits 1.

Each module keeps its own named classes (`EventError`, `FileError`, `LogCorrupt`, ...) under one of
these, with its old built-in base kept as a second parent, so that `except ValueError` and
`except RuntimeError` written against them catch what they caught before. `exit_status()` is the
mapping every command uses (docs/contract.md section 4); nothing else decides 1 or 2.

This module imports nothing from the package: any layer may raise these.
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a command stopped with Ctrl-C


class LockfleetError(Exception):
    """Any failure lockfleet reports on purpose, with its one-line reason as the message."""

    @property
    def exit_status(self) -> int:
        """The status a command exits with when this stops it."""
        return EXIT_FAILURE


class UsageError(LockfleetError, ValueError):
    """Bad usage: an option, argument or request that cannot be right (exit 2)."""

    @property
    def exit_status(self) -> int:
        return EXIT_USAGE


class InputError(UsageError):
    """Bad input: data that does not follow its format; the message names the file, column, row
    or line (exit 2)."""


class OperationalError(LockfleetError):
    """The work failed though the request was fine: I/O, the network, a peer, corrupt state (exit 1,
    LockfleetError's own status; not set here, so that a subclass that is also a `RefusedError`
    takes that one's)."""


class RefusedError(LockfleetError):
    """A request a service refused, with its gRPC status code name: an `INVALID_ARGUMENT` refusal
    is the caller's bad input (exit 2), any other is operational (exit 1)."""

    code: str = ""

    @property
    def exit_status(self) -> int:
        return EXIT_USAGE if self.code == "INVALID_ARGUMENT" else EXIT_FAILURE


class CliError(LockfleetError):
    """A command's failure to report in one line, with the exit status it chose."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status

    @property
    def exit_status(self) -> int:
        return self.status


def exit_status(exc: BaseException) -> int:
    """The exit status a command ends with when `exc` stops it: the one table (docs/contract.md)."""
    if isinstance(exc, LockfleetError):
        return exc.exit_status
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):     # argparse: --help (0) and usage errors (2)
        code = exc.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    return EXIT_FAILURE
