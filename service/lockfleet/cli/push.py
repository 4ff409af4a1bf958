"""`lockfleet push FILE... --host NAME`: send event files as an agent would and wait for every ack."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..agent.client.event_files import BATCH_ROWS
from ..wire import COMPRESSION_CHOICES
from .common import EXIT_OK, nonneg_float, positive_int, reported
from .connection import add_connection_options, connection


def register(sub: Any) -> None:
    """`lockfleet push`; its `func` runs it."""
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
    add_connection_options(p, "ingest")
    p.add_argument("--retry-for", type=nonneg_float, default=0.0, metavar="S",
                   help="keep retrying a lost connection (or a service that is shutting down or out of disk) for "
                        "this long, resending what was not acked (default: 0, fail at once)")
    p.add_argument("--streams", type=positive_int, default=1, metavar="N",
                   help="send each file on N Push streams side by side, its rows cut by thread (tid mod N): each "
                        "thread's events stay in order, threads of the host may interleave differently within a "
                        "few batches; pushing again with the same N applies nothing twice (default: 1)")
    p.add_argument("--compression", choices=COMPRESSION_CHOICES, default="auto",
                   help="Arrow IPC compression of the batches: auto uses lz4 when the service says it reads it, "
                        "else none (default: auto)")
    p.set_defaults(func=cmd_push)


@reported
def cmd_push(args: argparse.Namespace) -> int:
    from ..agent import Stream, push_streams, read_event_file

    conn = connection(args, "ingest")
    files = [read_event_file(path) for path in args.files]  # all checked before anything is sent
    streams = [Stream(f.stream_id(args.host), f.batches, label=str(f.path)) for f in files]
    t0 = time.perf_counter()
    result = push_streams(conn, args.host, streams, retry_for=args.retry_for, parallel=args.streams,
                          compression=args.compression)
    seconds = time.perf_counter() - t0
    rows = sum(f.rows for f in files)
    print(f"pushed {len(files)} file(s), {rows} events in {result.batches} batches for host {args.host} "
          f"to {args.target} in {seconds:.2f} s ({rows / max(seconds, 1e-9):,.0f} events/s)"
          + (f" ({result.duplicates} already there)" if result.duplicates else "")
          + (f"; new alerts: {', '.join(result.new_alerts)}" if result.new_alerts else ""))
    return EXIT_OK

