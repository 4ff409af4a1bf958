"""Settings of `lockfleet serve`, with the defaults that `--help` shows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one batch, one stream and the whole service may hold. A batch over a limit is refused
    with an ack naming the limit; it is not applied and the stream stays open."""

    max_message_bytes: int = 64 * MiB        # arrow_ipc of one PushRequest
    max_rows: int = 1_000_000                # rows in one batch
    max_string_bytes: int = 64 * 1024        # one lock/site/task/host value
    max_lock_classes: int = 100_000          # distinct lock classes, fleet-wide
    max_threads_per_host: int = 262_144      # distinct thread ids tracked per host
    max_inflight_per_stream: int = 16        # batches received but not yet acked, per stream
    max_inflight_bytes: int = 512 * MiB      # all batches received but not yet durable, all streams
    max_streams: int = 64                    # concurrent Push calls
    max_host_bytes_per_second: int = 0       # per host (envelope), Arrow IPC bytes; 0: no limit
    ack_stall_seconds: float = 60.0          # a Push call whose client takes no ack for this long is ended

    @property
    def grpc_message_bytes(self) -> int:
        """The transport's cap: above it gRPC ends the call (RESOURCE_EXHAUSTED) instead of the
        gateway refusing the one batch with an ack."""
        return 2 * self.max_message_bytes + MiB


@dataclass(frozen=True)
class ServeConfig:
    data_dir: Path
    listen: str = "127.0.0.1:50551"
    fsync: str = "group"                     # always | group | never
    group_commit_ms: float = 2.0
    segment_bytes: int = 64 * MiB
    segment_seconds: float = 600.0           # seal the active segment (so it can be archived) at this age
    snapshot_seconds: float = 300.0          # 0: only at shutdown
    snapshot_log_bytes: int = 256 * MiB      # also after this much log since the last snapshot
    archive_retention_days: int = 30         # 0: keep forever
    archive_interval: float = 60.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None
    token_file: Path | None = None
    metrics_listen: str = ""
    http_listen: str = ""                    # the web console (same TLS and tokens as gRPC); "" = off
    grace_seconds: float = 10.0
    limits: Limits = field(default_factory=Limits)
    # publishing (the JSONL sink, <data-dir>/alerts.jsonl, is always on)
    alertmanagers: tuple[str, ...] = ()      # Alertmanager base URLs (POST <url>/api/v2/alerts)
    alertmanager_labels: tuple[tuple[str, str], ...] = ()   # extra static labels
    alertmanager_ttl_seconds: float = 365 * 86400.0          # endsAt this far after a publication
    webhooks: tuple[str, ...] = ()           # URLs that get each publication as a JSON POST
    webhook_secret_file: Path | None = None  # HMAC-SHA256 key for X-Lockfleet-Signature
    blessed: Path | None = None              # lock orders 'A -> B' that are never reported
    publish_interval: float = 0.2            # how often the publisher looks for new or grown findings
    republish_interval: float = 300.0        # at most one republication of a grown finding per this
    sink_retry_max: float = 30.0             # longest back-off between retries of a failing sink
    max_watchers: int = 16                   # concurrent WatchAlerts streams
    outbox_compact_records: int = 10_000     # compact the outbox past this many publications

    @staticmethod
    def path(value: str | os.PathLike[str] | None) -> Path | None:
        return Path(value) if value else None
