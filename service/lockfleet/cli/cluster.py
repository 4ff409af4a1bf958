"""The cluster's roles on the command line: `serve --bus` (a stateless gateway), `worker`,
`authority`, `bus-archive`, `cluster-demo` and `health` (`lockfleet.cluster`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cluster import bus
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, DefaultsFormatter, hostport


def add_bus_options(g: Any, gateway: bool = False) -> None:
    g.add_argument("--bus", metavar="URLS", default="" if gateway else None, required=not gateway,
                   help="NATS servers, comma-separated nats:// URLs (one is enough: the client learns the cluster)")
    g.add_argument("--partitions", type=int, default=bus.DEFAULT_PARTITIONS, metavar="N",
                   help="partitions of the event stream (hosts are spread over them; the same on every process)")
    g.add_argument("--replicas", type=int, default=1, metavar="R",
                   help="JetStream replicas of lockfleet's streams when this process creates them (3 in a "
                        "three-node cluster)")
    g.add_argument("--lease", type=float, default=bus.DEFAULT_LEASE, metavar="S",
                   help="lease time of partitions and of the authority: a dead holder is replaced after about this")
    g.add_argument("--health-listen", metavar="HOST:PORT", default="",
                   help="also serve the gRPC health service alone, in plain text, here (for probes that cannot "
                        "speak TLS, such as Kubernetes' grpc probes)")


def _bus_config(args: argparse.Namespace) -> bus.BusConfig:
    if args.partitions < 1 or args.partitions > 4096:
        raise CliError("--partitions must be between 1 and 4096", EXIT_USAGE)
    if args.replicas < 1 or args.replicas > 5:
        raise CliError("--replicas must be between 1 and 5", EXIT_USAGE)
    if args.lease <= 0.2:
        raise CliError("--lease must be more than 0.2 seconds", EXIT_USAGE)
    try:
        return bus.BusConfig.parse(args.bus, partitions=args.partitions, replicas=args.replicas, lease=args.lease)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def serve_gateway(args: argparse.Namespace, limits: Any) -> int:
    """`lockfleet serve --bus ...`: a stateless gateway in front of the bus."""
    from ..cluster.roles import UsageError, run_gateway
    from ..server.config import ServeConfig

    cfg = _bus_config(args)
    path = ServeConfig.path
    serve = ServeConfig(data_dir=Path("."), listen=args.listen, tls_cert=path(args.tls_cert),
                        tls_key=path(args.tls_key), client_ca=path(args.client_ca), token_file=path(args.token_file))
    try:
        run_gateway(cfg, args.listen, limits, serve, args.health_listen)
    except UsageError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except bus.BusError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def register(sub: Any) -> None:
    """`worker`, `authority`, `bus-archive`, `cluster-demo`, `health`; each sets `func`."""
    formatter = DefaultsFormatter
    p = sub.add_parser("worker", help="a derivation worker of a cluster (consumes partitions of the bus)",
                       formatter_class=formatter,
                       description="Take a share of the event stream's partitions (leases in the bus's key-value "
                                   "store; workers that join or die spread or take over partitions), run the core "
                                   "per host on each partition in order (edge mode's derivation) and publish only "
                                   "what is new to the authority's stream. Runs until SIGTERM/SIGINT.")
    add_bus_options(p)
    p.add_argument("--id", default="", help="this worker's name in the leases (default: hostname-pid-random)")

    p = sub.add_parser("authority", help="a graph authority of a cluster (or its standby)",
                       formatter_class=formatter,
                       description="Follow the derived stream into one fleet-wide graph (a lockfleet service with "
                                   "its own data dir, serving Query and health on --listen). The one holding the "
                                   "lease publishes each finding once to the bus (stream LF_ALERTS); another "
                                   "instance is a hot standby that takes over when the lease lapses. Runs until "
                                   "SIGTERM/SIGINT.")
    add_bus_options(p)
    p.add_argument("--name", required=True, help="this authority's name (its durable consumer and lease value)")
    p.add_argument("--data-dir", metavar="DIR", required=True, help="its log and snapshots")
    p.add_argument("--listen", metavar="HOST:PORT", type=hostport, default="127.0.0.1:50552",
                   help="Query service and health")
    p.add_argument("--tls-cert", metavar="PEM", help="server certificate for the Query service (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--client-ca", metavar="PEM", help="require client certificates signed by this CA")
    p.add_argument("--token-file", metavar="FILE", help="bearer tokens ('query <token>' lines), as `serve` reads them")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", default="", help="Prometheus metrics (default: off)")
    p.add_argument("--print", action="store_true", dest="print_alerts",
                   help="print each finding this instance publishes as one JSON line on stdout")

    p = sub.add_parser("bus-archive", help="compact the cluster's event stream into a Parquet archive",
                       formatter_class=formatter,
                       description="Consume the event stream (a durable consumer) and write it to "
                                   "DIR/archive/day=YYYY-MM-DD/*.parquet in the layout `lockfleet analyze` reads, "
                                   "each raw batch once. Runs until SIGTERM/SIGINT.")
    add_bus_options(p)
    p.add_argument("--data-dir", metavar="DIR", required=True, help="where archive/ goes")
    p.add_argument("--interval", type=float, default=5.0, metavar="S", help="write a part at least this often")

    p = sub.add_parser("cluster-demo", help="what `make cluster-demo` runs",
                       formatter_class=formatter,
                       description="Start a three-node NATS JetStream cluster on loopback (needs nats-server), "
                                   "two gateways, two workers, an authority and a standby; push the seed fleet "
                                   "through both gateways; kill one NATS node and then the authority mid-stream; "
                                   "print the alerts from the standby. Exits 0 when the seed's five-lock finding "
                                   "was published exactly once, with its four hosts.")
    p.add_argument("--workdir", metavar="DIR", default="",
                   help="keep the cluster's files and logs here (default: a temporary dir, removed)")

    p = sub.add_parser("health", help="check a lockfleet process's gRPC health (exit 0 when SERVING)",
                       formatter_class=formatter,
                       description="Ask the gRPC health service at --target (plain text: a --health-listen port, "
                                   "or a service without TLS) whether it is SERVING; exit 0 if so, 1 if not or "
                                   "unreachable. For container health checks.")
    p.add_argument("--target", metavar="HOST:PORT", type=hostport, required=True,
                   help="the process's plain gRPC health port (required)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="give up after this many seconds")

    def cmd_health(args: argparse.Namespace) -> int:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            with grpc.insecure_channel(args.target) as ch:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
        except grpc.RpcError as exc:
            raise CliError(f"{args.target}: {exc.code().name}") from None
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        print(name)
        return EXIT_OK if reply.status == health_pb2.HealthCheckResponse.SERVING else EXIT_FAILURE

    def cmd_worker(args: argparse.Namespace) -> int:
        from ..cluster.roles import UsageError, run_worker

        cfg = _bus_config(args)
        try:
            run_worker(cfg, args.id, args.health_listen)
        except UsageError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        except bus.BusError as exc:
            raise CliError(str(exc)) from None
        return EXIT_OK

    def cmd_authority(args: argparse.Namespace) -> int:
        from ..server import ServeConfig, ServiceError, UsageError
        from ..cluster.roles import UsageError as RoleUsage
        from ..cluster.roles import run_authority

        cfg = _bus_config(args)
        path = ServeConfig.path
        serve = ServeConfig(data_dir=Path(args.data_dir), listen=args.listen, tls_cert=path(args.tls_cert),
                            tls_key=path(args.tls_key), client_ca=path(args.client_ca),
                            token_file=path(args.token_file), metrics_listen=args.metrics_listen)

        def show(alert: Any) -> None:
            print(json.dumps(alert.to_dict(), sort_keys=True), flush=True)

        try:
            run_authority(cfg, serve, args.name, show if args.print_alerts else None, args.health_listen)
        except (UsageError, RoleUsage) as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        except (ServiceError, bus.BusError) as exc:
            raise CliError(str(exc)) from None
        return EXIT_OK

    def cmd_archive(args: argparse.Namespace) -> int:
        from ..cluster.roles import UsageError, run_archiver

        cfg = _bus_config(args)
        try:
            run_archiver(cfg, Path(args.data_dir), args.interval, args.health_listen)
        except UsageError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        except bus.BusError as exc:
            raise CliError(str(exc)) from None
        return EXIT_OK

    def cmd_demo(args: argparse.Namespace) -> int:
        from ..cluster.demo import DemoError, run_cluster_demo

        try:
            return run_cluster_demo(args.workdir or None, out=sys.stdout)
        except DemoError as exc:
            raise CliError(str(exc)) from None

    for name, func in (("health", cmd_health), ("worker", cmd_worker), ("authority", cmd_authority),
                       ("bus-archive", cmd_archive), ("cluster-demo", cmd_demo)):
        sub.choices[name].set_defaults(func=func)
