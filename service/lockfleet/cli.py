"""The `lockfleet` command: serve, push, alerts, stats, chain, demo.

Exit status: 0 on success, 2 on bad usage or bad input (a one-line reason on stderr), 1 on any
other failure (the service unreachable, a refused push, a service that cannot start).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from .agent.files import BATCH_ROWS
from .errors import EXIT_OK, EXIT_USAGE, CliError, LockfleetError, exit_status
from .options import add_version_option
from .alerts.model import KINDS
from .server.config import Limits, ServeConfig
from .store.segment_log import FSYNC_MODES

DEFAULT_TARGET = "127.0.0.1:50551"
HEADLINE = ("events", "locks", "edges", "alerts", "hosts", "threads")  # stats shown first


def _hostport(text: str) -> str:
    from .address import hostport_arg

    return hostport_arg(text)


def _target_option(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--target", metavar="HOST:PORT", type=_hostport, default=DEFAULT_TARGET,
                   help=f"address of the lockfleet service (default: {DEFAULT_TARGET})")
    g = p.add_argument_group("connection security (default: plain gRPC, no token)")
    g.add_argument("--token", metavar="TOKEN", default="", help=f"the {role} bearer token")
    g.add_argument("--token-file", metavar="FILE",
                   help=f"a file with the token alone, or with an '{role} <token>' line (the server's format)")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting the server certificate this CA signed")
    g.add_argument("--tls-cert", metavar="PEM", help="this client's certificate (mTLS)")
    g.add_argument("--tls-key", metavar="PEM", help="this client's private key (mTLS)")
    g.add_argument("--tls-server-name", metavar="NAME", default="",
                   help="check the server certificate against NAME instead of the --target host")


def _connection(args: argparse.Namespace, role: str) -> Any:
    from .agent import AgentError, Connection, read_token

    token = args.token
    if args.token_file:
        try:
            token = read_token(args.token_file, role)
        except AgentError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    for option in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, option)
        if path and not os.access(path, os.R_OK):
            raise CliError(f"--{option.replace('_', '-')} {path}: cannot read it", EXIT_USAGE)
    if (args.tls_cert or args.tls_key) and not args.tls_ca:
        raise CliError("--tls-cert/--tls-key need --tls-ca", EXIT_USAGE)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    return Connection(args.target, token=token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, server_name=args.tls_server_name)


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


_positive_int = _number(int, 1, "a positive integer")
_nonneg_int = _number(int, 0, "an integer >= 0")
_nonneg_float = _number(float, 0, "a number >= 0")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, "", False) or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action) or text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lockfleet",
        description="The kernel's lockdep, fleet-wide: agents stream lock events from many hosts into one "
                    "service, which keeps one lock-dependency graph and reports deadlocks no single host saw.",
        epilog="Exit status: 0 success, 2 bad usage or bad input, 1 any other failure.")
    add_version_option(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the service (gRPC: Ingest, Query, health, reflection)",
                       formatter_class=_DefaultsFormatter,
                       description="Run the lockfleet service until SIGTERM/SIGINT (which drain: every batch "
                                   "received is made durable and acked before it exits; SIGHUP re-reads the "
                                   "token file and the TLS files without a restart). A batch is acked only once "
                                   "it is in the segment log on disk (group commit) and applied; on start the "
                                   "newest snapshot and the log after it are replayed. Sealed log segments "
                                   "are compacted to Parquet under DIR/archive/day=YYYY-MM-DD/. Without TLS it "
                                   "listens only on loopback. Logs go to stderr. Suppressions ('lockfleet "
                                   "suppress') are kept in DIR/suppressions.json.",
                       epilog="Token file format: one token per line, 'ingest <token>', 'query <token>' or "
                              "'admin <token>' (at least 16 characters; '#' comments); clients send "
                              "'authorization: Bearer <token>'. An ingest token opens only Ingest, a query token "
                              "only Query's reads; an admin token opens all of Query, including Suppress and "
                              "Unsuppress (`lockfleet suppress/unsuppress`), which a query token cannot call; "
                              "without admin tokens in the file, nobody can change suppressions. Health and "
                              "reflection stay open. With --client-ca, a client certificate stands for the host "
                              "in its CN and DNS SANs, and a stream may push only for that host, unless the "
                              "certificate's subject has OU=lockfleet-relay (a relay may push for any host).")
    p.add_argument("--listen", metavar="HOST:PORT", type=_hostport, default=DEFAULT_TARGET,
                   help="address to listen on (loopback only without TLS); port 0 picks a free one")
    p.add_argument("--data-dir", metavar="DIR",
                   help="log, snapshots and archive; created if missing; one service per dir (required, "
                        "except with --bus)")
    from .cluster.cli import add_bus_options
    add_bus_options(p.add_argument_group(
        "cluster (with --bus this process is a stateless gateway: it checks each batch as the service does, "
        "publishes it to NATS JetStream on its host's partition and acks it once JetStream has; no data dir, no "
        "engine: `lockfleet worker` and `lockfleet authority` do the rest)"), gateway=True)
    g = p.add_argument_group("durability")
    g.add_argument("--fsync", choices=FSYNC_MODES, default=ServeConfig.fsync,
                   help="always: one fsync per batch; group: one fsync per group of batches (group commit); "
                        "never: leave it to the OS (survives a process crash, not a machine crash)")
    g.add_argument("--group-commit-ms", type=_nonneg_float, default=ServeConfig.group_commit_ms, metavar="MS",
                   help="how long the log writer waits for more batches to share an fsync")
    g.add_argument("--segment-bytes", type=_positive_int, default=ServeConfig.segment_bytes, metavar="N",
                   help="seal a log segment at this size")
    g.add_argument("--segment-seconds", type=_nonneg_float, default=ServeConfig.segment_seconds, metavar="S",
                   help="seal a non-empty log segment at this age, so that it is archived (0: only by size)")
    g.add_argument("--snapshot-seconds", type=_nonneg_float, default=ServeConfig.snapshot_seconds, metavar="S",
                   help="write a snapshot this often (0: only by --snapshot-bytes and at shutdown)")
    g.add_argument("--snapshot-bytes", type=_nonneg_int, default=ServeConfig.snapshot_log_bytes, metavar="N",
                   help="also write one after this many bytes of batches (0: never by size)")
    g.add_argument("--archive-retention-days", type=_nonneg_int, default=ServeConfig.archive_retention_days,
                   metavar="DAYS", help="delete archive day partitions older than this (0: keep forever)")
    g = p.add_argument_group("limits (a batch over one is refused with a reason, not applied; the stream stays open)")
    lim = Limits()
    g.add_argument("--max-message-bytes", type=_positive_int, default=lim.max_message_bytes, metavar="N",
                   help="Arrow IPC bytes of one batch (over twice this, gRPC ends the call)")
    g.add_argument("--max-rows", type=_positive_int, default=lim.max_rows, metavar="N", help="rows in one batch")
    g.add_argument("--max-string-bytes", type=_positive_int, default=lim.max_string_bytes, metavar="N",
                   help="bytes of one lock, site, task or host value")
    g.add_argument("--max-lock-classes", type=_positive_int, default=lim.max_lock_classes, metavar="N",
                   help="distinct lock classes, fleet-wide")
    g.add_argument("--max-threads-per-host", type=_positive_int, default=lim.max_threads_per_host, metavar="N",
                   help="distinct threads tracked per host")
    g.add_argument("--max-inflight-per-stream", type=_positive_int, default=lim.max_inflight_per_stream, metavar="N",
                   help="batches received but not yet acked, per stream (then the stream is not read)")
    g.add_argument("--max-host-bytes-per-second", type=_nonneg_int, default=lim.max_host_bytes_per_second,
                   metavar="N", help="per host (a batch's envelope host), Arrow IPC bytes a second; over it that "
                                     "host's streams are slowed (not refused); 0: no limit")
    g.add_argument("--ack-stall-seconds", type=_nonneg_float, default=lim.ack_stall_seconds, metavar="S",
                   help="end a Push call whose client has not taken an ack for this long (it stopped reading)")
    g.add_argument("--max-inflight-bytes", type=_positive_int, default=lim.max_inflight_bytes, metavar="N",
                   help="memory held by batches not yet durable, all streams (then acks slow down)")
    g.add_argument("--max-streams", type=_positive_int, default=lim.max_streams, metavar="N",
                   help="concurrent Push calls")
    g = p.add_argument_group("security and operation")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain); with --tls-key turns TLS on")
    g.add_argument("--tls-key", metavar="PEM", help="server private key")
    g.add_argument("--client-ca", metavar="PEM",
                   help="require client certificates signed by this CA, and bind each stream to its host")
    g.add_argument("--token-file", metavar="FILE", help="bearer tokens, 'ingest <token>' / 'query <token>' lines")
    g.add_argument("--metrics-listen", metavar="HOST:PORT", type=_hostport, default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    g.add_argument("--http", metavar="HOST:PORT", type=_hostport, default=None,
                   help="also serve the web console at http(s)://HOST:PORT/ (default: off): findings, their "
                        "reports, evidence and graphs, locks, hosts, suppressions, updated live; the same TLS "
                        "and tokens as gRPC (a query token reads, an admin token suppresses); loopback only "
                        "without TLS")
    g.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="stderr log lines as text or as one JSON object each")
    g = p.add_argument_group(
        "publishing (each new finding, and each finding that grew a new host or dependency kind, goes once to "
        "every sink, in order, from a durable outbox under DIR/publish/; a failing sink is retried with back-off "
        "and never slows ingest; DIR/alerts.jsonl always gets every publication, one JSON a line)")
    g.add_argument("--alertmanager", action="append", default=None, metavar="URL",
                   help="Prometheus Alertmanager to POST to (URL/api/v2/alerts), e.g. http://127.0.0.1:9093; "
                        "labels alertname, kind, locks, severity, finding, service; the lockdep report is the "
                        "'description' annotation; repeatable")
    g.add_argument("--alertmanager-label", action="append", default=None, metavar="NAME=VALUE",
                   help="an extra label on every Alertmanager alert (e.g. cluster=prod); repeatable")
    g.add_argument("--alertmanager-ttl-days", type=_nonneg_float, default=365.0, metavar="DAYS",
                   help="endsAt of an Alertmanager alert is this far after its publication (a lock-order "
                        "finding does not resolve by itself)")
    g.add_argument("--webhook", action="append", default=None, metavar="URL",
                   help="POST each publication as JSON to URL (headers X-Lockfleet-Seq, X-Lockfleet-Event, "
                        "Idempotency-Key); repeatable")
    g.add_argument("--webhook-secret-file", metavar="FILE",
                   help="sign webhook bodies: header X-Lockfleet-Signature: sha256=<hex HMAC-SHA256 of the body> "
                        "keyed with this file's content (at least 16 bytes)")
    g.add_argument("--blessed", metavar="FILE",
                   help="lock orders never reported, lines 'HELD -> TAKEN' ('#' comments): a finding that rests "
                        "on one is listed as suppressed and not published")
    g.add_argument("--publish-interval", type=_nonneg_float, default=ServeConfig.publish_interval, metavar="S",
                   help="how often the publisher looks for new or grown findings (only when batches came in)")
    g.add_argument("--republish-interval", type=_nonneg_float, default=ServeConfig.republish_interval, metavar="S",
                   help="a finding that grew (new hosts, dependency kinds or witnesses) is published again at most "
                        "once per this many seconds; growth in between goes out at its end as one publication "
                        "(0: at once)")
    g.add_argument("--sink-retry-max", type=_nonneg_float, default=ServeConfig.sink_retry_max, metavar="S",
                   help="longest back-off between retries of a failing sink (it starts at 0.5s and doubles)")
    g.add_argument("--max-watchers", type=_positive_int, default=ServeConfig.max_watchers, metavar="N",
                   help="concurrent `lockfleet watch` (Query.WatchAlerts) streams")
    g.add_argument("--outbox-compact-records", type=_positive_int, default=ServeConfig.outbox_compact_records,
                   metavar="N", help="compact the outbox once it holds more than N publications: every sink has "
                                     "acknowledged what is dropped, and each finding's latest publication stays")

    p = sub.add_parser("push", help="send event files (Parquet or Arrow IPC) and wait for every ack",
                       description="Send lock-event files (Parquet, or Arrow IPC file or stream format, with the "
                                   "columns ts_ns, tid, op, lock and optionally mode, subclass, instance, irq, "
                                   "site, task, host) as an agent would: checked locally first, then cut into "
                                   f"batches of {BATCH_ROWS} rows sent on one Push stream, and the command waits "
                                   "until every batch is acknowledged. Idempotent: the same file pushed again "
                                   "for the same host applies nothing twice.")
    p.add_argument("files", nargs="+", metavar="FILE", help="event files to send, in order")
    p.add_argument("--host", required=True, metavar="NAME",
                   help="the host whose events these are; a row's `host` column value, if any, overrides it (required)")
    _target_option(p, "ingest")
    p.add_argument("--retry-for", type=_nonneg_float, default=0.0, metavar="S",
                   help="keep retrying a lost connection (or a service that is shutting down or out of disk) for "
                        "this long, resending what was not acked (default: 0, fail at once)")

    p = sub.add_parser("alerts", help="print the current alerts",
                       description="Print the service's current alerts: a table (seq, id, kind, locks, hosts, "
                                   "first seen, published or suppressed), then each as a lockdep-style report, "
                                   "separated by blank lines; or one JSON document with --json. Suppressed "
                                   "findings are listed, marked, unless --hide-suppressed.")
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help='print {"alerts": [alert.to_dict(), ...]} instead')
    p.add_argument("--kind", default="", choices=KINDS, metavar="KIND",
                   help=f"only alerts of this kind: {', '.join(KINDS)} (default: every kind)")
    p.add_argument("--lock", default="", metavar="NAME", help="only alerts involving this lock (default: any)")
    p.add_argument("--host", default="", metavar="NAME", help="only alerts involving this host (default: any)")
    from .cli_query import add_alert_filters
    add_alert_filters(p)

    p = sub.add_parser("stats", help="print the service's counters",
                       description="Print the service's counters (events, locks, edges, alerts, ...; ingest.* "
                                   "are the gateway's) as a table, or as one JSON document with --json.")
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help="print the counters as one JSON object instead")

    p = sub.add_parser("chain", help="print the dependency path A ~> B with each edge's evidence",
                       description="Print the shortest lock-dependency path from lock A to lock B, each "
                                   "dependency with its first evidence (host, task, time, sites), or as one "
                                   "JSON document with --json. Exits 0 also when there is no path.")
    p.add_argument("src", metavar="A", help="lock class name to start from, e.g. tracepoints_mutex")
    p.add_argument("dst", metavar="B", help="lock class name to reach, e.g. bpf_event_mutex")
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help='print {"found": ..., "locks": [...], "links": [...]} instead')

    p = sub.add_parser("demo", help="what `make demo` runs: the seed deadlock found across a simulated fleet",
                       description="Start the service in-process on 127.0.0.1 (a free port, a temporary data "
                                   "dir), push a simulated fleet of 4 hosts over gRPC whose events hold the "
                                   "seed report's five-lock cycle spread so that no host saw all of it, and "
                                   "print the resulting alert as a lockdep-style report. Exits 0 when the "
                                   "cycle is found.")
    p.add_argument("--seed", type=int, default=0, help="random seed of the background traffic (default: 0)")
    p.add_argument("--events", type=int, default=3000, metavar="N",
                   help="background lock events per host (default: 3000)")

    from .agent.dmesg import add_dmesg_parser
    add_dmesg_parser(sub)
    from .agent.proclockdep import add_proc_lockdep_parser
    add_proc_lockdep_parser(sub, _target_option, _connection)
    from .agent.simulate import add_simulate_parser
    add_simulate_parser(sub, _target_option, _connection)
    from .agent.trace import add_trace_parser
    add_trace_parser(sub, _target_option, _connection)
    from .cli_query import add_query_parsers
    add_query_parsers(sub)
    from .offline import add_offline_parsers
    COMMANDS.update(add_offline_parsers(sub))
    from .cluster.cli import add_cluster_parsers
    COMMANDS.update(add_cluster_parsers(sub, _DefaultsFormatter, CliError))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and not args.bus and not args.data_dir:
        parser.error("serve: --data-dir is required (unless --bus)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler = COMMANDS.get(args.command) or (lambda a: a.func(a))
    try:
        return handler(args)
    except LockfleetError as exc:
        print(f"lockfleet {args.command}: {' '.join(str(exc).split())}", file=sys.stderr)
        return exit_status(exc)
    except KeyboardInterrupt as exc:
        return exit_status(exc)
    except BrokenPipeError as exc:  # e.g. `lockfleet alerts | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_status(exc)


def _agent_errors(fn: Any) -> Any:
    """The agent's errors as one-line CliErrors, with the status lockfleet.errors maps them to (a
    bad file or a refused batch of bad input 2, the rest 1)."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            result: int = fn(args)
            return result
        except LockfleetError as exc:
            raise CliError(str(exc), exit_status(exc)) from None

    return wrapped


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .server import serve_forever
    from .server.logs import configure

    configure(args.log_format)
    if args.bus:
        from .cluster.cli import serve_gateway
        return serve_gateway(args, Limits(max_message_bytes=args.max_message_bytes, max_rows=args.max_rows,
                                          max_string_bytes=args.max_string_bytes,
                                          max_inflight_per_stream=args.max_inflight_per_stream,
                                          max_streams=args.max_streams), CliError)
    if not args.data_dir:
        raise CliError("--data-dir is required (unless --bus)", EXIT_USAGE)
    limits = Limits(max_message_bytes=args.max_message_bytes, max_rows=args.max_rows,
                    max_string_bytes=args.max_string_bytes, max_lock_classes=args.max_lock_classes,
                    max_threads_per_host=args.max_threads_per_host,
                    max_inflight_per_stream=args.max_inflight_per_stream,
                    max_inflight_bytes=args.max_inflight_bytes, max_streams=args.max_streams,
                    max_host_bytes_per_second=args.max_host_bytes_per_second,
                    ack_stall_seconds=args.ack_stall_seconds)
    path = ServeConfig.path
    config = ServeConfig(data_dir=Path(args.data_dir), listen=args.listen, fsync=args.fsync,
                         group_commit_ms=args.group_commit_ms, segment_bytes=args.segment_bytes,
                         segment_seconds=args.segment_seconds, snapshot_seconds=args.snapshot_seconds,
                         snapshot_log_bytes=args.snapshot_bytes, archive_retention_days=args.archive_retention_days,
                         tls_cert=path(args.tls_cert), tls_key=path(args.tls_key), client_ca=path(args.client_ca),
                         token_file=path(args.token_file), metrics_listen=args.metrics_listen or "",
                         http_listen=args.http or "", limits=limits,
                         **_publishing_settings(args))
    serve_forever(config)   # its UsageError exits 2, ServiceError 1 (main, lockfleet.errors)
    return EXIT_OK


def _publishing_settings(args: argparse.Namespace) -> dict[str, Any]:
    from .alerts.sinks import check_url

    labels = []
    for item in args.alertmanager_label or ():
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier() or not name.isascii():
            raise CliError(f"--alertmanager-label {item!r}: expected NAME=VALUE with NAME a label name "
                           "([a-zA-Z_][a-zA-Z0-9_]*)", EXIT_USAGE)
        labels.append((name, value))
    try:
        ams = tuple(check_url(u, "--alertmanager") for u in args.alertmanager or ())
        hooks = tuple(check_url(u, "--webhook") for u in args.webhook or ())
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if args.webhook_secret_file and not hooks:
        raise CliError("--webhook-secret-file needs a --webhook", EXIT_USAGE)
    return {"alertmanagers": ams, "alertmanager_labels": tuple(labels),
            "alertmanager_ttl_seconds": args.alertmanager_ttl_days * 86400.0, "webhooks": hooks,
            "webhook_secret_file": ServeConfig.path(args.webhook_secret_file), "blessed": ServeConfig.path(args.blessed),
            "publish_interval": max(args.publish_interval, 0.01), "sink_retry_max": args.sink_retry_max,
            "republish_interval": args.republish_interval,
            "max_watchers": args.max_watchers, "outbox_compact_records": args.outbox_compact_records}


@_agent_errors
def cmd_push(args: argparse.Namespace) -> int:
    from .agent import Stream, push_streams, read_event_file

    conn = _connection(args, "ingest")
    files = [read_event_file(path) for path in args.files]  # all checked before anything is sent
    streams = [Stream(f.stream_id(args.host), f.batches, label=str(f.path)) for f in files]
    result = push_streams(conn, args.host, streams, retry_for=args.retry_for)
    rows = sum(f.rows for f in files)
    print(f"pushed {len(files)} file(s), {rows} events in {result.batches} batches for host {args.host} "
          f"to {args.target}" + (f" ({result.duplicates} already there)" if result.duplicates else "")
          + (f"; new alerts: {', '.join(result.new_alerts)}" if result.new_alerts else ""))
    return EXIT_OK


@_agent_errors
def cmd_alerts(args: argparse.Namespace) -> int:
    from .agent.query import fetch_alerts, fetch_witnesses
    from .cli_query import alerts_table, print_witnesses, suppression_line

    if args.witnesses:
        print_witnesses(fetch_witnesses(_connection(args, "query"), args.witnesses), args.witnesses, args.json)
        return EXIT_OK

    alerts = fetch_alerts(_connection(args, "query"), kind=args.kind, lock=args.lock, host=args.host,
                          since_ns=args.since, until_ns=args.until, alert_id=args.alert_id,
                          hide_suppressed=args.hide_suppressed)
    if args.json:
        print(json.dumps({"alerts": [a.data for a in alerts]}, indent=2))
    elif not alerts:
        print("no alerts")
    else:
        print(alerts_table(alerts))
        if not args.brief:
            print("\n" + "\n\n".join("\n".join(filter(None, [suppression_line(a.data), a.report.rstrip("\n")]))
                                    for a in alerts))
    return EXIT_OK


@_agent_errors
def cmd_stats(args: argparse.Namespace) -> int:
    from .agent import fetch_stats

    stats = fetch_stats(_connection(args, "query"))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    flat = dict(_flatten(stats))
    first = [k for k in HEADLINE if k in flat]
    flat = {k: flat[k] for k in [*first, *(k for k in flat if k not in first)]}
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key in sorted(d, key=lambda k: (isinstance(d[k], dict), k)):
        if isinstance(d[key], dict):
            items += _flatten(d[key], f"{prefix}{key}.")
        else:
            items.append((prefix + key, d[key]))
    return items


@_agent_errors
def cmd_chain(args: argparse.Namespace) -> int:
    from .agent import fetch_chain

    chain = fetch_chain(_connection(args, "query"), args.src, args.dst)
    if args.json:
        print(json.dumps({"found": chain.found, "locks": chain.locks, "links": chain.links}, indent=2))
        return EXIT_OK
    if not chain.found:
        print(f"no dependency path {args.src} ~> {args.dst}")
        return EXIT_OK
    print(" -> ".join(chain.locks) + f"   ({len(chain.links)} dependencies)")
    for link in chain.links:
        print(f"\n{link['held']} -> {link['taken']}  [{', '.join(link['kinds'])}]")
        print(f"  first taken on {link['host']} by {link['task'] or '?'} at {_when(link['ts_ns'])}; "
              f"seen {link['count']} time(s) on {', '.join(link['hosts']) or link['host']}")
        _print_site("held at", link["held_site"])
        _print_site("taken at", link["taken_site"])
    return EXIT_OK


def _print_site(label: str, site: str) -> None:
    frames = [f for f in site.split("\n") if f]
    if not frames:
        print(f"  {label}: (unknown)")
    elif len(frames) == 1:
        print(f"  {label}: {frames[0]}")
    else:
        print(f"  {label}:")
        for frame in frames:
            print(f"       {frame}")


def _when(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def cmd_demo(args: argparse.Namespace) -> int:
    from .agent import AgentError
    from .demo import run_demo
    from .server import ServiceError

    if args.events < 0:
        raise CliError("--events must be >= 0", EXIT_USAGE)
    try:
        return run_demo(seed=args.seed, events=args.events)
    except (AgentError, ServiceError) as exc:
        raise CliError(str(exc)) from None


COMMANDS = {"serve": cmd_serve, "push": cmd_push, "alerts": cmd_alerts, "stats": cmd_stats,
            "chain": cmd_chain, "demo": cmd_demo, "dmesg": lambda args: args.func(args),
            "simulate": lambda args: args.func(args), "trace": lambda args: args.func(args),
            "proc-lockdep": lambda args: args.func(args)}



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
