"""`lockfleet serve`: the service (or, with --bus, a cluster gateway), its durability, limits,
security and publishing options turned into a `ServeConfig`."""

from __future__ import annotations

import argparse
from typing import Any

from ..server.config import Limits, ServeConfig
from ..store.segment_log import FSYNC_MODES
from .cluster import add_bus_options, serve_gateway
from .common import (EXIT_OK, EXIT_USAGE, CliError, DefaultsFormatter, hostport, nonneg_float, nonneg_int,
                     positive_int)
from .connection import DEFAULT_TARGET


def register(sub: Any) -> None:
    """`lockfleet serve`; its `func` runs it."""
    p = sub.add_parser("serve", help="run the service (gRPC: Ingest, Query, health, reflection)",
                       formatter_class=DefaultsFormatter,
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
    p.add_argument("--listen", metavar="HOST:PORT", type=hostport, default=DEFAULT_TARGET,
                   help="address to listen on (loopback only without TLS); port 0 picks a free one")
    p.add_argument("--data-dir", metavar="DIR",
                   help="log, snapshots and archive; created if missing; one service per dir (required, "
                        "except with --bus)")
    add_bus_options(p.add_argument_group(
        "cluster (with --bus this process is a stateless gateway: it checks each batch as the service does, "
        "publishes it to NATS JetStream on its host's partition and acks it once JetStream has; no data dir, no "
        "engine: `lockfleet worker` and `lockfleet authority` do the rest)"), gateway=True)
    g = p.add_argument_group("durability")
    g.add_argument("--fsync", choices=FSYNC_MODES, default=ServeConfig.fsync,
                   help="always: one fsync per batch; group: one fsync per group of batches (group commit); "
                        "never: leave it to the OS (survives a process crash, not a machine crash)")
    g.add_argument("--group-commit-ms", type=nonneg_float, default=ServeConfig.group_commit_ms, metavar="MS",
                   help="how long the log writer waits for more batches to share an fsync")
    g.add_argument("--segment-bytes", type=positive_int, default=ServeConfig.segment_bytes, metavar="N",
                   help="seal a log segment at this size")
    g.add_argument("--segment-seconds", type=nonneg_float, default=ServeConfig.segment_seconds, metavar="S",
                   help="seal a non-empty log segment at this age, so that it is archived (0: only by size)")
    g.add_argument("--snapshot-seconds", type=nonneg_float, default=ServeConfig.snapshot_seconds, metavar="S",
                   help="write a snapshot this often (0: only by --snapshot-bytes and at shutdown)")
    g.add_argument("--snapshot-bytes", type=nonneg_int, default=ServeConfig.snapshot_log_bytes, metavar="N",
                   help="also write one after this many bytes of batches (0: never by size)")
    g.add_argument("--archive-retention-days", type=nonneg_int, default=ServeConfig.archive_retention_days,
                   metavar="DAYS", help="delete archive day partitions older than this (0: keep forever)")
    g = p.add_argument_group("limits (a batch over one is refused with a reason, not applied; the stream stays open)")
    lim = Limits()
    g.add_argument("--max-message-bytes", type=positive_int, default=lim.max_message_bytes, metavar="N",
                   help="Arrow IPC bytes of one batch (over twice this, gRPC ends the call)")
    g.add_argument("--max-rows", type=positive_int, default=lim.max_rows, metavar="N", help="rows in one batch")
    g.add_argument("--max-string-bytes", type=positive_int, default=lim.max_string_bytes, metavar="N",
                   help="bytes of one lock, site, task or host value")
    g.add_argument("--max-lock-classes", type=positive_int, default=lim.max_lock_classes, metavar="N",
                   help="distinct lock classes, fleet-wide")
    g.add_argument("--max-threads-per-host", type=positive_int, default=lim.max_threads_per_host, metavar="N",
                   help="distinct threads tracked per host")
    g.add_argument("--max-inflight-per-stream", type=positive_int, default=lim.max_inflight_per_stream, metavar="N",
                   help="batches received but not yet acked, per stream (then the stream is not read)")
    g.add_argument("--max-host-bytes-per-second", type=nonneg_int, default=lim.max_host_bytes_per_second,
                   metavar="N", help="per host (a batch's envelope host), Arrow IPC bytes a second; over it that "
                                     "host's streams are slowed (not refused); 0: no limit")
    g.add_argument("--ack-stall-seconds", type=nonneg_float, default=lim.ack_stall_seconds, metavar="S",
                   help="end a Push call whose client has not taken an ack for this long (it stopped reading)")
    g.add_argument("--max-inflight-bytes", type=positive_int, default=lim.max_inflight_bytes, metavar="N",
                   help="memory held by batches not yet durable, all streams (then acks slow down)")
    g.add_argument("--max-streams", type=positive_int, default=lim.max_streams, metavar="N",
                   help="concurrent Push calls")
    g = p.add_argument_group("security and operation")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate (chain); with --tls-key turns TLS on")
    g.add_argument("--tls-key", metavar="PEM", help="server private key")
    g.add_argument("--client-ca", metavar="PEM",
                   help="require client certificates signed by this CA, and bind each stream to its host")
    g.add_argument("--token-file", metavar="FILE", help="bearer tokens, 'ingest <token>' / 'query <token>' lines")
    g.add_argument("--metrics-listen", metavar="HOST:PORT", type=hostport, default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    g.add_argument("--http", metavar="HOST:PORT", type=hostport, default=None,
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
    g.add_argument("--alertmanager-ttl-days", type=nonneg_float, default=365.0, metavar="DAYS",
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
    g.add_argument("--publish-interval", type=nonneg_float, default=ServeConfig.publish_interval, metavar="S",
                   help="how often the publisher looks for new or grown findings (only when batches came in)")
    g.add_argument("--republish-interval", type=nonneg_float, default=ServeConfig.republish_interval, metavar="S",
                   help="a finding that grew (new hosts, dependency kinds or witnesses) is published again at most "
                        "once per this many seconds; growth in between goes out at its end as one publication "
                        "(0: at once)")
    g.add_argument("--sink-retry-max", type=nonneg_float, default=ServeConfig.sink_retry_max, metavar="S",
                   help="longest back-off between retries of a failing sink (it starts at 0.5s and doubles)")
    g.add_argument("--max-watchers", type=positive_int, default=ServeConfig.max_watchers, metavar="N",
                   help="concurrent `lockfleet watch` (Query.WatchAlerts) streams")
    g.add_argument("--outbox-compact-records", type=positive_int, default=ServeConfig.outbox_compact_records,
                   metavar="N", help="compact the outbox once it holds more than N publications: every sink has "
                                     "acknowledged what is dropped, and each finding's latest publication stays")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..server import ServiceError, UsageError, serve_forever
    from ..server.logs import configure

    configure(args.log_format)
    if args.bus:
        return serve_gateway(args, Limits(max_message_bytes=args.max_message_bytes, max_rows=args.max_rows,
                                          max_string_bytes=args.max_string_bytes,
                                          max_inflight_per_stream=args.max_inflight_per_stream,
                                          max_streams=args.max_streams))
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
    try:
        serve_forever(config)
    except UsageError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except ServiceError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK


def _publishing_settings(args: argparse.Namespace) -> dict[str, Any]:
    from ..publishing.sinks import check_url

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
