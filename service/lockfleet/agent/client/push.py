"""Push ordered streams of pre-built batches (event files, dmesg reports) and wait for every ack,
on the Agent SDK (`sdk.Agent`, one Agent and Push call per stream, one stream after another).

Each stream's batches go out as sequence numbers first_seq, first_seq + 1, ... with a bounded
window of unacknowledged ones; a duplicate ack (a batch the service already had) counts as
acknowledged. A refusal stops the push and raises Refused with the service's code, reason and
message.

With `retry_for` > 0, a lost connection or a refusal the service marks as passing (UNAVAILABLE: it
is shutting down or its disk is full) is retried on a new call for up to that many seconds of
outage, resending every batch not yet acknowledged; the service acks the ones it already has as
duplicates, so nothing is applied twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from ...v1 import lockfleet_pb2 as pb
from .channel import AgentError, Connection, Refused, as_connection
from .sdk import Agent

WINDOW = 8
MAX_BUFFERED_EVENTS = 4 << 20     # events encoded ahead of their acks, per stream


@dataclass(frozen=True)
class Stream:
    """One ordered stream of batches: seq first_seq, first_seq + 1, ... in the order given
    (first_seq > 1 resumes a stream whose earlier batches were acked)."""

    stream_id: str
    batches: Sequence[pa.RecordBatch | bytes]
    label: str = ""           # for messages, e.g. the file name
    first_seq: int = 1


@dataclass
class PushResult:
    batches: int = 0          # batches acknowledged (fresh or duplicate)
    duplicates: int = 0
    events: int = 0           # events the service applied for these acks (duplicates count 0)
    new_alerts: list[str] = field(default_factory=list)
    retries: int = 0          # new calls made after a lost connection or a passing refusal


def push_batches(target: str | Connection, host: str, stream_id: str,
                 batches: Sequence[pa.RecordBatch | bytes], **kwargs: object) -> PushResult:
    """Push one stream of batches (RecordBatches or IPC bytes) for `host`; see push_streams."""
    return push_streams(target, host, [Stream(stream_id, batches)], **kwargs)  # type: ignore[arg-type]


def push_streams(target: str | Connection, host: str, streams: Iterable[Stream], window: int = WINDOW,
                 retry_for: float = 0.0, on_ack: Callable[[str, int, pb.PushAck], None] | None = None) -> PushResult:
    """Push every stream's batches for `host`; return when all are acked.

    Raises Unreachable when the service cannot be reached (for longer than `retry_for` seconds),
    Refused when it refuses a batch. `on_ack(stream_id, seq, ack)` sees every successful ack.
    """
    conn = as_connection(target)
    result = PushResult()
    for s in streams:
        if not s.batches:
            continue
        callback = None if on_ack is None else (lambda seq, ack, sid=s.stream_id: on_ack(sid, seq, ack))
        agent = Agent(conn, host, stream_id=s.stream_id, first_seq=s.first_seq, window=window, retry_for=retry_for,
                      on_refused="fail", on_ack=callback, max_buffered_events=MAX_BUFFERED_EVENTS, quiet=True)
        try:
            for batch in s.batches:
                agent.send_batch(batch)
            agent.close()
        except Refused as exc:
            agent.abort()
            if s.label:
                raise Refused(exc.code, f"{s.label}: {exc}", exc.reason) from None
            raise
        except BaseException:
            agent.abort()
            raise
        finally:
            st = agent.stats()
            result.batches += st["acked_batches"]
            result.duplicates += st["duplicate_batches"]
            result.events += st["applied_events"]
            result.new_alerts.extend(st["new_alerts"])
            result.retries += st["reconnects"]
    return result


__all__ = ["AgentError", "PushResult", "Stream", "WINDOW", "push_batches", "push_streams"]
