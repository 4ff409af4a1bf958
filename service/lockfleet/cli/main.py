"""The `lockfleet` parser, its dispatch and the console script.

Each command family registers its sub-commands (`register(sub)`), each setting `func` (parsed
arguments -> exit status); a `CliError` becomes its one-line reason on stderr and its status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import cluster, demo, kernel_logs, offline, push, queries, serve, simulate, suppressions, trace
from .common import EXIT_FAILURE, CliError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockfleet",
        description="The kernel's lockdep, fleet-wide: agents stream lock events from many hosts into one "
                    "service, which keeps one lock-dependency graph and reports deadlocks no single host saw.",
        epilog="Exit status: 0 success, 2 bad usage or bad input, 1 any other failure.")
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
    except CliError as exc:
        print(f"lockfleet {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `lockfleet alerts | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE


def run() -> None:
    """The console script: main(), then leave without running C++ static destructors. gRPC's and
    Arrow's thread pools can still be winding down when the interpreter finalizes, and tearing
    them down there has aborted the process ("terminate called without an active exception")
    after the command had already done its work and chosen its exit status."""
    try:
        code = main()
    except SystemExit as exc:          # argparse's usage errors and --help
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
