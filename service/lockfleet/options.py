"""Command-line options shared by several commands: `--irq-rule` for those that run an Engine
(offline analyze, dmesg), `--version` for every entry point."""

from __future__ import annotations

import argparse

from . import __version__
from .engine import IRQ_RULE_DEFAULT, IRQ_RULES


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """`--version`: prints `PROG VERSION` (lockfleet.__version__, the one version string) and exits 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_irq_rule_option(parser: argparse.ArgumentParser) -> None:
    """`--irq-rule`: which lockdep irq rule for read locks the Engine follows (docs/semantics.md)."""
    parser.add_argument("--irq-rule", choices=IRQ_RULES, default=IRQ_RULE_DEFAULT,
                        help="the irq_inversion rule for read locks: lockdep's since 5.10 (default: a read usage "
                             "counts only where the path holds that lock exclusive, or does not take it as a "
                             "recursive read) or the one before 5.10 (two read usages never conflict); see "
                             "docs/semantics.md")
