"""A stateless gateway: `lockfleet serve --bus nats://...`.

It takes IngestService.Push streams exactly as the single-process service does (same servicer, same
acks), checks each batch the same way (envelope, Arrow IPC decode, docs/contract.md section 2, one schema
per stream), and publishes it to JetStream on the subject of its host's partition
(`bus.event_subject`). The ack goes back only once JetStream has acknowledged the message, that
is once the stream holds it with its replicas (R3 in a three-node cluster); a batch the bus did
not acknowledge is refused with UNAVAILABLE and the agent resends it.

Dedupe across gateways: a gateway keeps no state that matters. Its per-stream high-water mark is
a cache; when a batch's seq is not the next one after the cached mark (or nothing is cached), the
gateway reads the last message of the stream's subject from JetStream (its Lf-Seq and Lf-Schema
headers). So an agent may reconnect to any gateway: a resent batch is acked as a duplicate, a
skipped one is refused. Each message also carries Nats-Msg-Id "<host>/<stream>/<seq>", so two
gateways racing to publish the same batch store it once (JetStream's duplicate window).

One stream's batches are published one after another (the next waits for the previous one's
JetStream ack), so the bus never holds a gap: if a publish fails, every later batch of that stream
admitted behind it is refused too and resent by the agent in order.

Limits that need the whole fleet's state (lock classes, threads per host) belong to the graph
authority and are not checked here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ..events import MAX_NAME_BYTES, EventError, normalize
from ..server.config import Limits
from ..server.gateway import (
    ANYONE,
    Outcome,
    Peer,
    Refusal,
    Ticket,
    batch_host_rows,
    check_strings,
    decode,
    event_reason,
    fingerprint,
    schema_change,
)
from . import bus

log = logging.getLogger(__name__)
PUBLISH_TIMEOUT = 5.0


@dataclass
class BusTicket(Ticket):
    future: Future[Outcome] | None = None


@dataclass
class _Mark:
    seq: int
    schema: str


class BusGateway:
    """The part of a gateway between a Push stream and the bus (`admit`, then `complete`)."""

    def __init__(self, cfg: bus.BusConfig, limits: Limits | None = None) -> None:
        self.cfg = cfg
        self.limits = limits or Limits()
        self._loop = bus.Loop("lockfleet-gateway-bus")
        self._nc: Any = None
        self._js: Any = None
        self._marks: dict[tuple[str, str], _Mark] = {}
        self._tails: dict[tuple[str, str], asyncio.Future[Any]] = {}
        self._lock = threading.Lock()
        self._closing = ""
        self.counters = {"published": 0, "duplicates": 0, "refused": 0, "bus_failures": 0, "events": 0,
                         "lookups": 0, "push_calls": 0, "stalled_calls": 0, "window_peak": 0}
        self.drops: dict[tuple[str, str], int] = {}     # (host, stream) -> the agent's dropped events

    def start(self, timeout: float = 30.0) -> BusGateway:
        async def go() -> None:
            self._nc = await bus.connect(self.cfg, "lockfleet-gateway")
            self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT)
            await bus.ensure(self._js, self.cfg)

        self._loop.run(go(), timeout)
        return self

    @property
    def max_payload(self) -> int:
        return int(getattr(self._nc, "max_payload", 1 << 20) or (1 << 20))

    # -- admission ---------------------------------------------------------------------------

    def admit(self, host: str, stream_id: str, seq: int, ipc: bytes, peer: Peer = ANYONE) -> Ticket:
        ticket = BusTicket(seq=seq, received=time.monotonic())
        try:
            schema, events = self._check(host, stream_id, seq, ipc, peer)
        except Refusal as r:
            ticket.outcome = self._refused(host, stream_id, seq, r)
            return ticket
        ticket.events = events
        ticket.future = self._loop.submit(self._publish(host, stream_id, seq, ipc, schema, events))
        return ticket

    def _check(self, host: str, stream_id: str, seq: int, ipc: bytes, peer: Peer) -> tuple[str, int]:
        lim = self.limits
        if self._closing:
            raise Refusal("UNAVAILABLE", "shutting_down", self._closing)
        if not host:
            raise Refusal("INVALID_ARGUMENT", "empty_host", "host is empty: every batch names the host whose events it holds")
        if not stream_id:
            raise Refusal("INVALID_ARGUMENT", "empty_stream_id", "stream_id is empty: name the agent's stream of batches")
        if len(host.encode()) > MAX_NAME_BYTES or len(stream_id.encode()) > MAX_NAME_BYTES:
            raise Refusal("INVALID_ARGUMENT", "name_too_long", f"host and stream_id may be at most {MAX_NAME_BYTES} bytes")
        if seq < 1:
            raise Refusal("INVALID_ARGUMENT", "bad_seq", "seq must start at 1 and count up within (host, stream_id)")
        if not peer.may_speak_for(host):
            raise Refusal("PERMISSION_DENIED", "host_not_in_certificate",
                          f"this client's certificate does not name host {host!r}")
        cap = min(lim.max_message_bytes, self.max_payload - 4096)
        if len(ipc) > cap:
            raise Refusal("RESOURCE_EXHAUSTED", "message_too_large",
                          f"batch seq {seq}: {len(ipc)} bytes of arrow_ipc is over the limit of {cap} (the smaller "
                          "of --max-message-bytes and the bus's max_payload); send smaller batches")
        table = decode(ipc, lim.max_rows, seq)
        check_strings(table, lim.max_string_bytes, seq)
        try:
            ev = normalize(table)
        except EventError as exc:
            raise Refusal("INVALID_ARGUMENT", event_reason(str(exc)), f"batch seq {seq}: {exc}") from None
        if peer.mtls and not peer.relay and ev.host is not None:
            others = sorted(set(batch_host_rows(ev, host)) - {host})
            if others:
                raise Refusal("PERMISSION_DENIED", "host_not_in_certificate",
                              f"batch seq {seq}: column 'host' names {', '.join(map(repr, others[:3]))}, but this "
                              "client's certificate is not a relay's (OU=lockfleet-relay)")
        return fingerprint(table.schema), table.num_rows

    async def _publish(self, host: str, stream_id: str, seq: int, ipc: bytes, schema: str, events: int) -> Outcome:
        """On the bus loop: wait for the stream's previous batch, check seq and schema against the
        bus, publish, wait for JetStream's ack."""
        key = (host, stream_id)
        prev = self._tails.get(key)
        mine: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if prev is not None:
                ok = await prev
                if not ok:
                    raise Refusal("UNAVAILABLE", "earlier_batch_failed",
                                  f"batch seq {seq}: an earlier batch of this stream was not acknowledged by the bus; "
                                  "resend from there")
            out = await self._publish_ordered(key, seq, ipc, schema, events)
            mine.set_result(out.ok or out.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED"))
            return out
        except Refusal as r:
            mine.set_result(False)
            return self._refused(host, stream_id, seq, r)
        except BaseException:
            mine.set_result(False)
            raise
        finally:
            if self._tails.get(key) is mine:
                del self._tails[key]

    async def _mark(self, key: tuple[str, str], fresh: bool) -> _Mark:
        mark = None if fresh else self._marks.get(key)
        if mark is not None:
            return mark
        from nats.js.errors import NotFoundError

        self.counters["lookups"] += 1
        subject = bus.event_subject(key[0], key[1], self.cfg.partitions)
        try:
            msg = await self._js.get_last_msg(bus.EVENTS, subject)
            headers = msg.headers or {}
            mark = _Mark(int(headers.get(bus.H_SEQ, "0")), headers.get(bus.H_SCHEMA, ""))
        except NotFoundError:
            mark = _Mark(0, "")
        self._marks[key] = mark
        return mark

    async def _publish_ordered(self, key: tuple[str, str], seq: int, ipc: bytes, schema: str, events: int) -> Outcome:
        host, stream_id = key
        try:
            mark = await self._mark(key, fresh=False)
            if seq > mark.seq + 1 or (seq == mark.seq + 1 and mark.schema and mark.schema != schema):
                mark = await self._mark(key, fresh=True)   # another gateway may have moved it on
        except Exception as exc:
            self.counters["bus_failures"] += 1
            raise Refusal("UNAVAILABLE", "bus_unavailable",
                          f"batch seq {seq}: cannot read the stream's position from the bus ({exc or type(exc).__name__}); "
                          "resend it later") from None
        if seq <= mark.seq:
            self.counters["duplicates"] += 1
            return Outcome(seq=seq, ok=True, duplicate=True)
        if seq != mark.seq + 1:
            raise Refusal("FAILED_PRECONDITION", "seq_gap",
                          f"seq {seq} skips ahead: expected seq {mark.seq + 1} next for host {host!r} stream "
                          f"{stream_id!r}; resend from there")
        if mark.schema and mark.schema != schema:
            raise Refusal("FAILED_PRECONDITION", "schema_changed",
                          f"batch seq {seq}: the schema changed mid-stream ({schema_change(mark.schema, schema)}); "
                          "a stream keeps one schema: start a new stream_id for the new one")
        headers = {bus.MSG_ID: f"{host}/{stream_id}/{seq}", bus.H_HOST: host, bus.H_STREAM: stream_id,
                   bus.H_SEQ: str(seq), bus.H_SCHEMA: schema}
        subject = bus.event_subject(host, stream_id, self.cfg.partitions)
        try:
            ack = await self._js.publish(subject, ipc, timeout=PUBLISH_TIMEOUT, stream=bus.EVENTS, headers=headers)
        except Exception as exc:
            self._marks.pop(key, None)   # unknown whether it landed: ask the bus next time
            self.counters["bus_failures"] += 1
            raise Refusal("UNAVAILABLE", "bus_unavailable",
                          f"batch seq {seq}: the bus did not acknowledge it ({exc or type(exc).__name__}); "
                          "it is not acknowledged here either: resend it") from None
        self._marks[key] = _Mark(seq, schema)
        if ack.duplicate:
            self.counters["duplicates"] += 1
            return Outcome(seq=seq, ok=True, duplicate=True)
        self.counters["published"] += 1
        self.counters["events"] += events
        return Outcome(seq=seq, ok=True, events=events)

    def complete(self, ticket: Ticket, timeout: float | None = None) -> Outcome:
        if ticket.outcome is not None:
            return ticket.outcome
        assert isinstance(ticket, BusTicket) and ticket.future is not None
        try:
            return ticket.future.result(timeout if timeout is not None else PUBLISH_TIMEOUT * 4)
        except FutureTimeout:
            return Outcome(seq=ticket.seq, ok=False, code="UNAVAILABLE", reason="bus_unavailable",
                           error=f"batch seq {ticket.seq}: no answer from the bus in time; resend it")

    def _refused(self, host: str, stream_id: str, seq: int, r: Refusal) -> Outcome:
        self.counters["refused"] += 1
        log.warning("refused batch host=%r stream=%r seq=%d: %s (%s): %s", host, stream_id, seq, r.code, r.reason,
                    r.error)
        return Outcome(seq=seq, ok=False, code=r.code, reason=r.reason, error=r.error)

    # -- what the Push servicer reports (server/ingest.py) -------------------------------------

    def note_call(self, opened: int, stalled: bool = False) -> None:
        """A Push call opened (+1) or ended (-1; `stalled`: its client read no acks)."""
        with self._lock:
            self.counters["push_calls"] += opened
            self.counters["stalled_calls"] += int(stalled)

    def note_window(self, outstanding: int) -> None:
        """A stream has `outstanding` batches received and not yet acked."""
        with self._lock:
            self.counters["window_peak"] = max(self.counters["window_peak"], outstanding)

    def note_drops(self, host: str, stream_id: str, dropped: int) -> None:
        """An agent's running count of the events it dropped on a stream."""
        with self._lock:
            self.drops[(host, stream_id)] = max(dropped, self.drops.get((host, stream_id), 0))

    # -- life --------------------------------------------------------------------------------

    def begin_shutdown(self, why: str = "the gateway is shutting down; resend to another one") -> None:
        self._closing = why

    def stop(self) -> None:
        async def go() -> None:
            if self._nc is not None:
                try:
                    await self._nc.drain()
                except Exception:
                    pass

        try:
            self._loop.run(go(), 10)
        except Exception:
            pass
        self._loop.stop()
