"""What an `Agent` is told: where and as whom it streams, and how it batches, buffers and retries
(`AgentOptions`, checked once when the Agent is made), with the defaults."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...events import MAX_NAME_BYTES
from ...wire import COMPRESSION_CHOICES
from .channel import Connection, read_token

DEFAULT_TARGET = "127.0.0.1:50551"
BATCH_ROWS = 8192
BATCH_INTERVAL = 0.2
MAX_BUFFERED = 1_000_000
WINDOW = 8
OVERFLOW = ("block", "drop")
ON_REFUSED = ("skip", "fail")


@dataclass(frozen=True)
class AgentOptions:
    """An Agent's settings; see `Agent` for what each means. Build one with `AgentOptions.make`,
    which fills in the defaults from the environment and checks every value."""

    connection: Connection
    host: str
    stream_id: str
    first_seq: int = 1
    batch_rows: int = BATCH_ROWS
    batch_interval: float = BATCH_INTERVAL
    max_buffered_events: int = MAX_BUFFERED
    overflow: str = "block"
    window: int = WINDOW
    retry_for: float | None = None
    on_refused: str = "skip"
    compression: str = "auto"
    on_ack: Callable[[int, Any], None] | None = None
    quiet: bool = False

    @classmethod
    def make(cls, target: str | Connection | None = None, host: str | None = None, *,
             stream_id: str | None = None, first_seq: int = 1,
             token: str = "", token_file: str | Path | None = None, tls_ca: str | Path | None = None,
             tls_cert: str | Path | None = None, tls_key: str | Path | None = None, server_name: str = "",
             batch_rows: int = BATCH_ROWS, batch_interval: float = BATCH_INTERVAL,
             max_buffered_events: int = MAX_BUFFERED, overflow: str = "block", window: int = WINDOW,
             retry_for: float | None = None, on_refused: str = "skip", compression: str = "auto",
             on_ack: Callable[[int, Any], None] | None = None, quiet: bool = False) -> AgentOptions:
        """The Agent's arguments, checked (ValueError, AgentError for an unreadable token file):
        `target` HOST:PORT (default: $LOCKFLEET_TARGET, else 127.0.0.1:50551) or a `Connection`,
        else a Connection made of the token and TLS options; `host` (default: $LOCKFLEET_HOST,
        else the machine's name) and `stream_id` (default: the host plus a random id) 1..255
        bytes."""
        if overflow not in OVERFLOW:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW)}, not {overflow!r}")
        if on_refused not in ON_REFUSED:
            raise ValueError(f"on_refused must be one of {', '.join(ON_REFUSED)}, not {on_refused!r}")
        if compression not in COMPRESSION_CHOICES:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_CHOICES)}, not {compression!r}")
        if batch_rows < 1 or max_buffered_events < 1 or window < 1 or first_seq < 1:
            raise ValueError("batch_rows, max_buffered_events, window and first_seq must be >= 1")
        if token_file:
            token = read_token(token_file, "ingest")
        if isinstance(target, Connection):
            if token or tls_ca or tls_cert or tls_key or server_name:
                raise ValueError("give either a Connection or the token/TLS options, not both")
            connection = target
        else:
            connection = Connection(target or os.environ.get("LOCKFLEET_TARGET") or DEFAULT_TARGET,
                                    token=token, tls_ca=Path(tls_ca) if tls_ca else None,
                                    tls_cert=Path(tls_cert) if tls_cert else None,
                                    tls_key=Path(tls_key) if tls_key else None, server_name=server_name)
        if bool(connection.tls_cert) != bool(connection.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        host = host or os.environ.get("LOCKFLEET_HOST") or socket.gethostname()
        stream_id = stream_id or f"{host}/{uuid.uuid4().hex[:16]}"
        if not (0 < len(host.encode()) <= MAX_NAME_BYTES and 0 < len(stream_id.encode()) <= MAX_NAME_BYTES):
            raise UsageError(f"host and stream_id must be 1..{MAX_NAME_BYTES} bytes")
        return cls(connection=connection, host=host, stream_id=stream_id, first_seq=int(first_seq),
                   batch_rows=int(batch_rows), batch_interval=float(batch_interval),
                   max_buffered_events=int(max_buffered_events), overflow=overflow, window=int(window),
                   retry_for=retry_for, on_refused=on_refused, compression=compression, on_ack=on_ack, quiet=quiet)
