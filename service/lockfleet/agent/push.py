"""Push batches to the service on one Ingest.Push stream and wait for every ack.

Batches go out with a bounded window of unacknowledged ones; acks come back in order. A duplicate
ack (a batch the service already had) counts as acknowledged. A refusal stops the push and raises
Refused with the service's code, reason and message.

With `retry_for` > 0, a lost connection or a refusal the service marks as passing (UNAVAILABLE: it
is shutting down or its disk is full) is retried on a new call, resending every batch not yet
acknowledged; the service acks the ones it already has as duplicates, so nothing is applied twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import pyarrow as pa

from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .channel import AgentError, Connection, Refused, Unreachable, as_connection, from_rpc_error, open_channel
from .files import to_ipc

WINDOW = 8
RETRYABLE = ("UNAVAILABLE",)


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


@dataclass
class _Item:
    stream: Stream
    seq: int
    batch: pa.RecordBatch | bytes
    ipc: bytes = b""

    def payload(self) -> bytes:
        if not self.ipc:
            self.ipc = self.batch if isinstance(self.batch, bytes) else to_ipc(self.batch)
        return self.ipc


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
    items = [_Item(s, seq, b) for s in streams for seq, b in enumerate(s.batches, start=s.first_seq)]
    result = PushResult()
    done = 0
    deadline = time.monotonic() + retry_for
    backoff = 0.1
    while done < len(items):
        try:
            done += _push_once(conn, host, items[done:], window, result, on_ack)
        except (Unreachable, Refused) as exc:
            retryable = isinstance(exc, Unreachable) or exc.code in RETRYABLE
            if not retryable or time.monotonic() + backoff > deadline:
                raise
            done += getattr(exc, "acked", 0)
            result.retries += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
    return result


def _push_once(conn: Connection, host: str, items: list[_Item], window: int, result: PushResult,
               on_ack: Callable[[str, int, pb.PushAck], None] | None) -> int:
    """One Push call for `items`; returns how many were acked. On failure the exception carries
    `acked`, the number acked before it."""
    slots = threading.Semaphore(window)
    stop = threading.Event()
    pending: deque[_Item] = deque()
    pending_lock = threading.Lock()
    acked = 0

    def requests() -> Iterator[pb.PushBatch]:
        for item in items:
            slots.acquire()
            if stop.is_set():
                return
            ipc = item.payload()
            with pending_lock:
                pending.append(item)
            yield pb.PushBatch(host=host, stream_id=item.stream.stream_id, seq=item.seq, arrow_ipc=ipc)

    try:
        with open_channel(conn) as channel:
            call = pb_grpc.IngestStub(channel).Push(requests(), metadata=conn.metadata)
            try:
                for ack in call:
                    with pending_lock:
                        item = pending.popleft() if pending else None
                    if item is None or ack.seq != item.seq:
                        raise AgentError(f"lockfleet at {conn.target} acked seq {ack.seq}, expected "
                                         f"{item.seq if item else 'none'}")
                    if not ack.ok:
                        where = f" ({item.stream.label})" if item.stream.label else ""
                        raise Refused(ack.code or "UNKNOWN", f"batch {item.seq}{where} refused ({ack.code}): {ack.error}",
                                      ack.reason)
                    acked += 1
                    result.batches += 1
                    result.duplicates += ack.duplicate
                    result.events += ack.events
                    result.new_alerts.extend(ack.new_alerts)
                    if on_ack is not None:
                        on_ack(item.stream.stream_id, item.seq, ack)
                    slots.release()
                    if acked == len(items):
                        break
            except grpc.RpcError as err:
                raise from_rpc_error(conn, err) from None
            finally:
                stop.set()
                slots.release()  # wake the request generator if it waits for a slot
                call.cancel()
    except AgentError as exc:
        exc.acked = acked  # type: ignore[attr-defined]
        raise
    if acked != len(items):
        exc = Unreachable(f"lockfleet at {conn.target} closed the stream after {acked} of {len(items)} acks")
        exc.acked = acked  # type: ignore[attr-defined]
        raise exc
    return acked
