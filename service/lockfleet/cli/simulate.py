"""`lockfleet simulate`: a fleet of agent processes streaming a seeded lock workload to a service
(`lockfleet.agent.simulator`), with the same connection options (TLS, tokens) as every command."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from .connection import add_connection_options, connection


def register(subparsers: Any) -> None:
    """`lockfleet simulate`; its `func` runs it."""
    from ..agent.simulator import SimConfig

    d = SimConfig()
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate", help="run a simulated fleet of agent processes against a service (demos, load tests)",
        description="Start N agent processes, each a simulated host streaming R lock events per second for T "
                    "seconds over its own Push stream: a seeded, layered lock graph with Zipf-skewed reuse, "
                    "interleaved threads, trylocks and readers, plus a few planted cycles whose dependencies are "
                    "split across hosts (no host sees a whole one). Prints the plan and what each host sent; "
                    "with --check, which planted cycles came back as alerts (exit 1 if one did not).")
    p.add_argument("--hosts", type=int, default=d.hosts, metavar="N", help="agent processes (default: %(default)s)")
    p.add_argument("--rate", type=float, default=d.rate, metavar="R",
                   help="events per second per host (default: %(default)s)")
    p.add_argument("--duration", type=float, default=d.duration, metavar="T", help="seconds (default: %(default)s)")
    add_connection_options(p, "ingest")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the lock graph and workload (default: 0)")
    p.add_argument("--classes", type=int, default=d.classes, metavar="N",
                   help="background lock classes (default: %(default)s)")
    p.add_argument("--layers", type=int, default=d.layers, metavar="N", help="layers of classes (default: %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads, metavar="N",
                   help="threads per host (default: %(default)s)")
    p.add_argument("--depth", type=int, default=d.depth, metavar="N",
                   help="most locks held at once by a session (default: %(default)s)")
    p.add_argument("--zipf", type=float, default=d.zipf, metavar="S",
                   help="skew of lock reuse within a layer (default: %(default)s)")
    p.add_argument("--cycles", type=int, default=d.cycles, metavar="N",
                   help="planted cycles, split across hosts (default: %(default)s)")
    p.add_argument("--host-prefix", default=d.host_prefix, metavar="NAME",
                   help="hosts are NAME-0, NAME-1, ... (default: %(default)s)")
    p.add_argument("--batch-rows", type=int, default=d.batch_rows, metavar="N",
                   help="rows per batch at most (default: %(default)s)")
    p.add_argument("--retry-for", type=float, default=d.retry_for, metavar="S",
                   help="an agent gives up when the service has been unreachable this long (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="afterwards, query the alerts (needs query access) and report each planted cycle")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the report")

    def run(args: argparse.Namespace) -> int:
        cfg = SimConfig(hosts=args.hosts, rate=args.rate, duration=args.duration, seed=args.seed,
                        classes=args.classes, layers=args.layers, threads=args.threads, depth=args.depth,
                        zipf=args.zipf, cycles=args.cycles, host_prefix=args.host_prefix, batch_rows=args.batch_rows,
                        retry_for=args.retry_for)
        try:
            cfg.check()
        except ValueError as exc:
            print(f"lockfleet simulate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        conn = connection(args, "ingest")
        check = connection(args, "query") if args.check else None
        from ..agent import AgentError
        from ..agent.simulator import run_fleet

        try:
            result = run_fleet(cfg, conn, check, out=None if args.json else sys.stdout)
        except AgentError as exc:
            print(f"lockfleet simulate: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_FAILURE
        if args.json:
            print(json.dumps(result.to_dict(), indent=2))
        for h in result.hosts:
            if "error" in h:
                print(f"lockfleet simulate: {h['host']}: {h['error']}", file=sys.stderr)
        if result.found is not None and not all(result.found):
            print("lockfleet simulate: a planted cycle was not found among the alerts", file=sys.stderr)
        return EXIT_OK if result.ok else EXIT_FAILURE

    p.set_defaults(func=run)

