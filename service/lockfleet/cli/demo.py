"""`lockfleet demo`: what `make demo` runs (`lockfleet.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_USAGE, CliError


def register(sub: Any) -> None:
    """`lockfleet demo`; its `func` runs it."""
    p = sub.add_parser("demo", help="what `make demo` runs: the seed deadlock found across a simulated fleet",
                       description="Start the service in-process on 127.0.0.1 (a free port, a temporary data "
                                   "dir), push a simulated fleet of 4 hosts over gRPC whose events hold the "
                                   "seed report's five-lock cycle spread so that no host saw all of it, and "
                                   "print the resulting alert as a lockdep-style report. Exits 0 when the "
                                   "cycle is found.")
    p.add_argument("--seed", type=int, default=0, help="random seed of the background traffic (default: 0)")
    p.add_argument("--events", type=int, default=3000, metavar="N",
                   help="background lock events per host (default: 3000)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..agent import AgentError
    from ..demo import run_demo
    from ..server import ServiceError

    if args.events < 0:
        raise CliError("--events must be >= 0", EXIT_USAGE)
    try:
        return run_demo(seed=args.seed, events=args.events)
    except (AgentError, ServiceError) as exc:
        raise CliError(str(exc)) from None
