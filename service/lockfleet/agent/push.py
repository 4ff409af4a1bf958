"""Push batches to the service on one Ingest.Push stream and wait for every ack.

Batches go out with a bounded window of unacknowledged ones; acks come back in order. A duplicate
ack (a batch the service already had) counts as acknowledged. A refusal stops the push and raises
Refused with the service's code and message.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
import pyarrow as pa

from ..v1 import lockfleet_pb2 as pb
from ..v1 import lockfleet_pb2_grpc as pb_grpc
from .channel import AgentError, Refused, from_rpc_error, open_channel
from .files import to_ipc

WINDOW = 8


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
    batches: int = 0
    duplicates: int = 0
    events: int = 0
    new_alerts: list[str] = field(default_factory=list)


def push_batches(target: str, host: str, stream_id: str,
                 batches: Sequence[pa.RecordBatch | bytes]) -> PushResult:
    """Push one stream of batches (RecordBatches or IPC bytes) for `host`; see push_streams."""
    return push_streams(target, host, [Stream(stream_id, batches)])


def push_streams(target: str, host: str, streams: Iterable[Stream], window: int = WINDOW) -> PushResult:
    """Push every stream's batches for `host` on one Push call; return when all are acked.

    Raises Unreachable when the service cannot be reached, Refused when it refuses a batch.
    """
    items = [(s, seq, b) for s in streams for seq, b in enumerate(s.batches, start=s.first_seq)]
    result = PushResult()
    if not items:
        return result
    slots = threading.Semaphore(window)
    stop = threading.Event()
    pending: deque[tuple[Stream, int]] = deque()
    pending_lock = threading.Lock()

    def requests() -> Iterator[pb.PushBatch]:
        for stream, seq, batch in items:
            slots.acquire()
            if stop.is_set():
                return
            ipc = batch if isinstance(batch, bytes) else to_ipc(batch)
            with pending_lock:
                pending.append((stream, seq))
            yield pb.PushBatch(host=host, stream_id=stream.stream_id, seq=seq, arrow_ipc=ipc)

    with open_channel(target) as channel:
        call = pb_grpc.IngestStub(channel).Push(requests())
        try:
            for ack in call:
                with pending_lock:
                    stream, seq = pending.popleft() if pending else (None, 0)
                if stream is None or ack.seq != seq:
                    raise AgentError(f"lockfleet at {target} acked seq {ack.seq}, expected {seq}")
                if not ack.ok:
                    where = f" ({stream.label})" if stream.label else ""
                    raise Refused(ack.code or "UNKNOWN", f"batch {seq}{where} refused: {ack.error}")
                result.batches += 1
                result.duplicates += ack.duplicate
                result.events += ack.events
                result.new_alerts.extend(ack.new_alerts)
                slots.release()
        except grpc.RpcError as err:
            raise from_rpc_error(target, err) from None
        finally:
            stop.set()
            slots.release()  # wake the request generator if it waits for a slot
            call.cancel()
    if result.batches != len(items):
        raise AgentError(f"lockfleet at {target} closed the stream after {result.batches} of {len(items)} acks")
    return result
