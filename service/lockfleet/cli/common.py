"""What every command of `lockfleet` shares: the exit statuses, the one-line error a command
reports (`CliError`), argument types, help formatters, `--version` and the engine's `--irq-rule`
option. The exit statuses, `CliError` and the one table from error to exit status (`exit_status`)
are `lockfleet.errors`', re-exported here for the commands.

Exit status: 0 on success, 2 on bad usage or bad input (a one-line reason on stderr), 1 on any
other failure (the service unreachable, a refused push, a service that cannot start).
"""

from __future__ import annotations

import argparse
import functools
import textwrap
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, LockfleetError, exit_status

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError", "LockfleetError", "exit_status"]


def reported(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command, turning lockfleet's errors into a `CliError` with the status `exit_status`
    gives them (the message as one line)."""

    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except CliError:
            raise
        except LockfleetError as exc:        # any other exception is a bug: let it show
            raise CliError(str(exc), exit_status(exc)) from None

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


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version`: prints `PROG VERSION` (lockfleet.__version__, the one version string) and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_irq_rule_option(parser: argparse.ArgumentParser) -> None:
    """`--irq-rule`: which lockdep irq rule for read locks the Engine follows (docs/semantics.md)."""
    from ..engine import IRQ_RULE_DEFAULT, IRQ_RULES

    parser.add_argument("--irq-rule", choices=IRQ_RULES, default=IRQ_RULE_DEFAULT,
                        help="the irq_inversion rule for read locks: lockdep's since 5.10 (default: a read usage "
                             "counts only where the path holds that lock exclusive, or does not take it as a "
                             "recursive read) or the one before 5.10 (two read usages never conflict); see "
                             "docs/semantics.md")
