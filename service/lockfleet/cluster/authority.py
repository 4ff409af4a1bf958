"""The graph authority: `lockfleet authority --bus nats://... --data-dir DIR --listen HOST:PORT`.

An authority is a lockfleet service (`server.Service`: engine, segment log, snapshots, the Query
service, health) whose batches come from the bus instead of agents: it follows LF_DERIVED, in
stream order, through a durable consumer of its own (`lf-authority-<name>`), and admits each
derived batch through its gateway as the batch `seq` of host `Lf-Host`, stream
`lockfleet-derived-p<partition>`; it acks the bus message once the batch is applied and durable
in its own log. The gateway's per-stream high-water mark makes a message seen twice (redelivered,
or republished by a worker that took a partition over) a duplicate. Each (re)start of the
consumer replaces it by a fresh one from just after its ack floor. Every authority applies the
same messages in the same order, so the leader and its standby hold the same graph and raise the
same alerts with the same ids, as one process given the derived batches in that order would.

Leadership is a lease in LF_LEASES (`authority`, created only if absent, renewed every quarter
lease, lapsing after one lease without renewal). Only the leader publishes findings, to LF_ALERTS
(subject `lf.alert.<id token>`), each with Nats-Expected-Last-Subject-Sequence 0: JetStream stores
a finding's first publication and refuses any other, so a finding is published once however
leadership moves, and a new leader publishes every finding it holds that no one published yet
(one raised by batches the old leader applied but did not live to publish included). A finding
that later grows a host is not published again (the Query service shows its current hosts).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..findings.model import Alert
from ..server.gateway import Outcome
from . import bus

log = logging.getLogger(__name__)
FETCH = 256
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
WRONG_LAST_SEQUENCE = 10071


class Authority:
    def __init__(self, cfg: bus.BusConfig, service: Any, name: str,
                 on_publish: Callable[[Alert], None] | None = None) -> None:
        self.cfg = cfg
        self.service = service
        self.name = name
        self.on_publish = on_publish or (lambda _a: None)
        self.leader = False
        self.lease_rev = 0
        self.renewed = 0.0
        self.published: set[str] = set()
        self.applied = 0
        self.duplicates = 0
        self.stopping = asyncio.Event()
        self.js: Any = None
        self.kv: Any = None

    async def run(self) -> None:
        nc = await bus.connect(self.cfg, f"lockfleet-authority-{self.name}")
        self.js = nc.jetstream(timeout=5.0)
        self.kv = await bus.ensure(self.js, self.cfg)
        tasks = [asyncio.create_task(self._follow(), name="follow"), asyncio.create_task(self._lease(), name="lease"),
                 asyncio.create_task(self._publish_loop(), name="publish")]
        try:
            await self.stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.leader:   # hand over at once instead of after a lease
                try:
                    await self.kv.delete("authority", last=self.lease_rev)
                except Exception:
                    pass
            await nc.close()

    # -- following the derived stream --------------------------------------------------------

    async def _follow(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("authority %s: following LF_DERIVED failed: %r; again", self.name, exc, exc_info=True)
                await asyncio.sleep(0.5)

    async def _consume(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        # a fresh durable consumer from just after its ack floor: messages an earlier attempt
        # fetched and did not ack come again at once, not after their ack wait (those it did
        # apply are duplicates to the gateway)
        durable = f"lf-authority-{bus.token(self.name)}"
        try:
            info = await self.js.consumer_info(bus.DERIVED, durable)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            await self.js.delete_consumer(bus.DERIVED, durable)
        except NotFoundError:
            floor = 0
        config = ConsumerConfig(durable_name=durable, filter_subject="lf.derived.>", ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=120.0, max_ack_pending=4 * FETCH,
                                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1,
                                num_replicas=self.cfg.replicas)
        await self.js.add_consumer(bus.DERIVED, config)
        sub = await self.js.pull_subscribe_bind(durable, stream=bus.DERIVED)
        try:
            while not self.stopping.is_set():
                try:
                    msgs = await sub.fetch(FETCH, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    continue
                items = [(dict(m.headers or {}), m.data) for m in msgs]
                await asyncio.to_thread(self._apply, items)
                for m in msgs:
                    await m.ack()
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    def _apply(self, items: list[tuple[dict[str, str], bytes]]) -> None:
        """Admit derived batches in order (on a worker thread: admission waits for the log)."""
        for headers, data in items:
            host, stream = headers.get(bus.H_HOST, ""), headers.get(bus.H_STREAM, "")
            seq = int(headers.get(bus.H_SEQ, "0"))
            while True:
                gw = self.service.gateway
                if gw is None:
                    raise RuntimeError("the authority's service is stopped")
                out: Outcome = gw.complete(gw.admit(host, stream, seq, data), timeout=30.0)
                if out.ok:
                    if out.duplicate:
                        self.duplicates += 1
                    else:
                        self.applied += 1
                    break
                if out.code in TRANSIENT and not self.stopping.is_set():
                    time.sleep(0.5)
                    continue
                log.error("authority %s: derived batch host=%r stream=%r seq=%d refused: %s (%s)", self.name, host,
                          stream, seq, out.error, out.reason)
                break

    # -- leadership and publishing -----------------------------------------------------------

    async def _lease(self) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        while not self.stopping.is_set():
            try:
                if self.leader:
                    try:
                        self.lease_rev = await self.kv.update("authority", self.name.encode(), last=self.lease_rev)
                        self.renewed = time.monotonic()
                    except (KeyWrongLastSequenceError, KeyNotFoundError):
                        self.leader = False
                        log.warning("authority %s: lost the lease; standing by", self.name)
                else:
                    try:
                        self.lease_rev = await self.kv.create("authority", self.name.encode())
                        self.renewed = time.monotonic()
                        self.leader = True
                        log.warning("authority %s: holds the lease: leader", self.name)
                    except KeyWrongLastSequenceError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("authority %s: lease round failed: %s", self.name, exc or type(exc).__name__)
            await asyncio.sleep(self.cfg.lease / 4)

    def holds_lease(self) -> bool:
        return self.leader and time.monotonic() - self.renewed < self.cfg.lease * 0.8

    async def _publish_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.holds_lease():
                    await self._publish_new()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("authority %s: publishing failed: %s; again", self.name, exc or type(exc).__name__)
            await asyncio.sleep(0.2)

    async def _publish_new(self) -> None:
        from nats.js.errors import APIError

        gw = self.service.gateway
        if gw is None:
            return
        alerts = await asyncio.to_thread(gw.read, lambda eng: eng.alerts())
        for a in alerts:
            if a.id in self.published:
                continue
            if not self.holds_lease():
                return
            body = json.dumps({"alert": a.to_dict(), "report": a.render(), "authority": self.name,
                               "published_ns": time.time_ns()}).encode()
            headers = {bus.MSG_ID: a.id, bus.EXPECT_LAST_SUBJECT_SEQ: "0"}
            try:
                await self.js.publish(bus.alert_subject(a.id), body, timeout=5.0, stream=bus.ALERTS, headers=headers)
            except APIError as exc:
                if getattr(exc, "err_code", None) != WRONG_LAST_SEQUENCE:
                    raise
                self.published.add(a.id)     # someone published it first
                continue
            self.published.add(a.id)
            log.warning("authority %s published %s finding %s: %s on hosts %s", self.name, a.kind, a.id,
                        " -> ".join(a.locks), ", ".join(a.hosts))
            self.on_publish(a)

    def stats(self) -> dict[str, Any]:
        return {"authority": self.name, "leader": self.leader, "applied": self.applied,
                "duplicates": self.duplicates, "published": len(self.published)}
