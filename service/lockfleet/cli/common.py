"""What every command of `lockfleet` shares: the exit statuses, the one-line error a command
reports (`CliError`), the one table from error to exit status (`exit_status`), argument types,
help formatters and the engine's `--irq-rule` option.

Exit status: 0 on success, 2 on bad usage or bad input (a one-line reason on stderr), 1 on any
other failure (the service unreachable, a refused push, a service that cannot start).
"""

from __future__ import annotations

import argparse
import functools
import textwrap
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report in one line, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def exit_status(exc: BaseException) -> int | None:
    """The one table from error to exit status: 2 for bad usage or bad input, 1 for any other
    failure, None for an exception that is not one of lockfleet's errors (a bug: let it show).

    Imports lazily, so that `lockfleet --help` does not load gRPC, the engine or the cluster."""
    from ..agent import AgentError, FileError, Refused
    from ..agent.kernel.class_names import RulesError
    from ..server import ServiceError, UsageError

    if isinstance(exc, CliError):
        return exc.status
    if isinstance(exc, Refused):            # the service refused a batch: bad input, or not allowed
        return EXIT_USAGE if exc.code == "INVALID_ARGUMENT" else EXIT_FAILURE
    if isinstance(exc, (FileError, RulesError, UsageError)):
        return EXIT_USAGE
    if isinstance(exc, (AgentError, ServiceError)):
        return EXIT_FAILURE
    from ..cluster.bus import BusError
    from ..cluster.roles import UsageError as RoleUsageError

    if isinstance(exc, RoleUsageError):
        return EXIT_USAGE
    if isinstance(exc, BusError):
        return EXIT_FAILURE
    return None


def reported(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, turning lockfleet's errors into a `CliError` with the status `exit_status`
    gives them (the message as one line)."""

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CliError:
            raise
        except Exception as exc:
            status = exit_status(exc)
            if status is None:
                raise
            raise CliError(str(exc), status) from None

    return wrapped


def hostport(text: str) -> str:
    """An argument type: HOST:PORT, checked (`lockfleet.address`)."""
    from ..address import hostport_arg

    return hostport_arg(text)


def _number(kind: type, low: float, what: str) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


positive_int = _number(int, 1, "a positive integer")
nonneg_int = _number(int, 0, "an integer >= 0")
nonneg_float = _number(float, 0, "a number >= 0")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, "", False) or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action) or text


class UnhyphenatedFormatter(argparse.HelpFormatter):
    """argparse's formatter, without breaking words at hyphens (dates, paths, options)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(self._whitespace_matcher.sub(" ", text).strip(), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


def add_irq_rule_option(parser: argparse.ArgumentParser) -> None:
    """`--irq-rule`: which lockdep irq rule for read locks the Engine follows (docs/semantics.md)."""
    from ..engine import IRQ_RULE_DEFAULT, IRQ_RULES

    parser.add_argument("--irq-rule", choices=IRQ_RULES, default=IRQ_RULE_DEFAULT,
                        help="the irq_inversion rule for read locks: lockdep's since 5.10 (default: a read usage "
                             "counts only where the path holds that lock exclusive, or does not take it as a "
                             "recursive read) or the one before 5.10 (two read usages never conflict); see "
                             "docs/semantics.md")
