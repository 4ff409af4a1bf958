"""The `lockfleet` parser, its dispatch and the console script.

Each command family registers its sub-commands (`register(sub)`), each setting `func` (parsed
arguments -> exit status); any of lockfleet's errors (a `CliError` among them) becomes its one-line reason on stderr and the
status `lockfleet.errors.exit_status` gives it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import cluster, demo, kernel_logs, offline, push, queries, serve, simulate, suppressions, trace
from .common import LockfleetError, add_version_option, exit_status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockfleet",
        description="The kernel's lockdep, fleet-wide: agents stream lock events from many hosts into one "
                    "service, which keeps one lock-dependency graph and reports deadlocks no single host saw.",
        epilog="Exit status: 0 success, 2 bad usage or bad input, 1 any other failure.")
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(sub)
    push.register(sub)
    queries.register(sub)                 # alerts, stats, chain
    demo.register(sub)
    kernel_logs.register_dmesg(sub)
    kernel_logs.register_proc_lockdep(sub)
    simulate.register(sub)
    trace.register(sub)
    queries.register_graph(sub)           # lock, hosts, export, dot, watch
    suppressions.register(sub)            # suppress, unsuppress, suppressions
    offline.register(sub)                 # analyze, diff, report
    cluster.register(sub)                 # worker, authority, bus-archive, cluster-demo, health
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.bus and not args.data_dir:
        parser.error("serve: --data-dir is required (unless --bus)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        status: int = args.func(args)
        return status
    except LockfleetError as exc:      # a CliError or any of lockfleet's errors: one line, its status
        print(f"lockfleet {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt as exc:
        return exit_status(exc)
    except BrokenPipeError as exc:  # e.g. `lockfleet alerts | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_status(exc)


def run() -> None:
    """The console script: main(), then leave without running C++ static destructors. gRPC's and
    Arrow's thread pools can still be winding down when the interpreter finalizes, and tearing
    them down there has aborted the process ("terminate called without an active exception")
    after the command had already done its work and chosen its exit status."""
    try:
        code = main()
    except SystemExit as exc:          # argparse's usage errors and --help
        code = exit_status(exc)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
