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

import functools
import threading
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
                 retry_for: float = 0.0, on_ack: Callable[[str, int, pb.PushAck], None] | None = None,
                 parallel: int = 1, compression: str = "auto") -> PushResult:
    """Push every stream's batches for `host`; return when all are acked.

    With `parallel` N > 1, each stream is cut into N streams by thread (see `split_by_thread`) sent
    side by side on N Push calls. `compression` is the Agent's (see `lockfleet.wire`).
    Raises Unreachable when the service cannot be reached (for longer than `retry_for` seconds),
    Refused when it refuses a batch. `on_ack(stream_id, seq, ack)` sees every successful ack.
    """
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, not {parallel}")
    conn = as_connection(target)
    result = PushResult()
    for s in streams:
        if not s.batches:
            continue
        parts = [s] if parallel == 1 else split_by_thread(s, parallel)
        acked = [0] * len(parts)              # batches acked per part (the pacing of several parts)
        paced = threading.Condition()
        agents = []

        def callback(k: int, sid: str, seq: int, ack: pb.PushAck) -> None:
            with paced:
                acked[k] += 1
                paced.notify_all()
            if on_ack is not None:
                on_ack(sid, seq, ack)

        try:
            for k, p in enumerate(parts):
                agents.append(Agent(conn, host, stream_id=p.stream_id, first_seq=p.first_seq, window=window,
                                    retry_for=retry_for, on_refused="fail", compression=compression,
                                    on_ack=functools.partial(callback, k, p.stream_id),
                                    max_buffered_events=MAX_BUFFERED_EVENTS, quiet=True))
            for a in agents:
                a.connect()          # learns the service's codecs before the batches are encoded
            # round i of every part goes out once round i - window of every part is acked (applied):
            # the parts advance together (see split_by_thread on order)
            for i in range(max(len(p.batches) for p in parts)):
                if len(parts) > 1:
                    with paced:
                        while min(acked) < i - window:
                            for a in agents:
                                if a.stats()["failed"]:
                                    a.flush(timeout=0)     # raises its error
                            paced.wait(0.2)
                for a, p in zip(agents, parts):
                    if i < len(p.batches):
                        a.send_batch(p.batches[i])
            for a in agents:
                a.close()
        except Refused as exc:
            for a in agents:
                a.abort()
            if s.label:
                raise Refused(exc.code, f"{s.label}: {exc}", exc.reason) from None
            raise
        except BaseException:
            for a in agents:
                a.abort()
            raise
        finally:
            for a in agents:
                st = a.stats()
                result.batches += st["acked_batches"]
                result.duplicates += st["duplicate_batches"]
                result.events += st["applied_events"]
                result.new_alerts.extend(st["new_alerts"])
                result.retries += st["reconnects"]
    return result


def split_by_thread(stream: Stream, n: int) -> list[Stream]:
    """One stream of event batches as `n` streams, by thread: every row of thread `tid` goes to
    stream `tid mod n`, in its order, so each thread's events reach the service in order (what
    lockdep's per-task held-lock state needs). Events of different threads of the host may be
    applied in another order than the file's, within a bound: `push_streams` sends part i of
    each source batch only once part i - window of every stream is acknowledged, so two events
    more than `window` source batches apart are applied in the file's order. Findings are the
    same; which dependency of a cycle counts as its inversion (the alert id) can differ only when
    its two sides came from different threads less than that apart.

    Stream ids are `<id>/<k>of<n>`: pushing the same file again with the same `n` applies
    nothing twice. Batches given as IPC bytes are decoded first; empty parts are kept (as empty
    batches of the same schema), so that every part has the same number of sequence numbers."""
    import numpy as np

    parts: list[list[pa.RecordBatch]] = [[] for _ in range(n)]
    for b in stream.batches:
        if isinstance(b, (bytes, bytearray)):
            with pa.ipc.open_stream(pa.py_buffer(b)) as reader:
                b = reader.read_all()
        if isinstance(b, pa.Table):
            b = pa.RecordBatch.from_arrays([c.combine_chunks() for c in b.columns], schema=b.schema)
        if b.num_rows == 0:
            for p in parts:
                p.append(b)
            continue
        key = np.asarray(b.column("tid").to_numpy(zero_copy_only=False), dtype=np.int64) % n
        for k in range(n):
            parts[k].append(b.filter(pa.array(key == k)))
    return [Stream(f"{stream.stream_id}/{k + 1}of{n}", parts[k], label=stream.label, first_seq=stream.first_seq)
            for k in range(n)]


__all__ = ["AgentError", "PushResult", "Stream", "WINDOW", "push_batches", "push_streams", "split_by_thread"]
