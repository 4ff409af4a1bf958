"""A derivation worker: `lockfleet worker --bus nats://...`.

Partitions are shared among the live workers by leases in the LF_LEASES bucket: each worker
heartbeats `member.<id>`, aims at ceil(partitions / members) partitions, claims free ones
(`partition.<p>`, created only if absent), renews its own, and gives back the extra ones when a
worker joins. A lease that is not renewed lapses (the bucket's max age), so a dead worker's
partitions are taken over by the others within about one lease time.

A partition is consumed in order through one durable pull consumer (`lf-part-<p>`). On taking a
partition the worker reads the consumer's ack floor, replays the partition's messages up to it
(rebuilding each host's engine without publishing), replaces the consumer by a fresh one that
starts just after the floor (so a worker that lost the lease and does not know it yet can no
longer take messages from it), and then for each message publishes what it derived to LF_DERIVED
(waiting for JetStream's ack, retrying until it comes) before it acks the raw message. Derivation
is deterministic (`derive.Partition`), so a message done twice republishes the same derived
messages, with the same Nats-Msg-Id and sequence numbers: duplicates to the bus and to the
authority.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from typing import Any

from . import bus
from .derive import Derived, Partition

log = logging.getLogger(__name__)
FETCH = 64


class Worker:
    def __init__(self, cfg: bus.BusConfig, worker_id: str = "") -> None:
        self.cfg = cfg
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        self.owned: dict[int, int] = {}             # partition -> lease revision
        self.renewed: dict[int, float] = {}          # partition -> monotonic time of the last renewal
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.partitions: dict[int, Partition] = {}
        self.published = 0
        self.stopping = asyncio.Event()

    # -- leases ------------------------------------------------------------------------------

    async def run(self) -> None:
        self.nc = await bus.connect(self.cfg, f"lockfleet-worker-{self.id}")
        self.js = self.nc.jetstream(timeout=5.0)
        self.kv = await bus.ensure(self.js, self.cfg)
        log.info("worker %s: %d partitions on %s", self.id, self.cfg.partitions, ", ".join(self.cfg.servers))
        try:
            while not self.stopping.is_set():
                try:
                    await self._tick()
                except Exception as exc:
                    log.warning("worker %s: lease round failed: %r", self.id, exc)
                try:
                    await asyncio.wait_for(self.stopping.wait(), self.cfg.lease / 4)
                except TimeoutError:
                    pass
        finally:
            for p in list(self.tasks):
                await self._release(p)
            try:
                await self.kv.delete(f"member.{self.id}")
            except Exception:
                pass
            await self.nc.close()

    async def _tick(self) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

        await self.kv.put(f"member.{self.id}", b"1")
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        members = max(1, sum(1 for k in keys if k.startswith("member.")))
        target = math.ceil(self.cfg.partitions / members)
        for p, rev in list(self.owned.items()):
            try:
                self.owned[p] = await self.kv.update(f"partition.{p}", self.id.encode(), last=rev)
                self.renewed[p] = time.monotonic()
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                log.warning("worker %s: lost the lease of partition %d", self.id, p)
                await self._release(p, delete=False)
        for p, task in list(self.tasks.items()):   # a partition task that gave up (a slow renewal): again
            if task.done() and p in self.owned and not self.stopping.is_set():
                self.tasks[p] = asyncio.create_task(self._partition(p), name=f"partition-{p}")
        extra = len(self.owned) - target
        for p in sorted(self.owned, reverse=True)[:max(0, extra)]:
            log.info("worker %s: gives partition %d back (%d workers)", self.id, p, members)
            await self._release(p)
        if len(self.owned) >= target:
            return
        taken = {k.split(".", 1)[1] for k in keys if k.startswith("partition.")}
        for p in range(self.cfg.partitions):
            if len(self.owned) >= target:
                break
            if p in self.owned or str(p) in taken:
                continue
            try:
                rev = await self.kv.create(f"partition.{p}", self.id.encode())
            except KeyWrongLastSequenceError:
                continue
            self.owned[p] = rev
            self.renewed[p] = time.monotonic()
            self.tasks[p] = asyncio.create_task(self._partition(p), name=f"partition-{p}")
            log.info("worker %s: took partition %d", self.id, p)

    def _holds(self, p: int) -> bool:
        return p in self.owned and time.monotonic() - self.renewed.get(p, 0) < self.cfg.lease * 0.8

    async def _release(self, p: int, delete: bool = True) -> None:
        rev = self.owned.pop(p, None)
        task = self.tasks.pop(p, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.partitions.pop(p, None)
        if delete and rev is not None:
            try:
                await self.kv.delete(f"partition.{p}", last=rev)
            except Exception:
                pass

    # -- one partition -----------------------------------------------------------------------

    async def _partition(self, p: int) -> None:
        while self._holds(p) and not self.stopping.is_set():
            try:
                await self._consume(p)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("worker %s: partition %d: %r; starting it again", self.id, p, exc)
                await asyncio.sleep(0.5)

    async def _consume(self, p: int) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        durable = f"lf-part-{p}"
        try:
            info = await self.js.consumer_info(bus.EVENTS, durable)
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
        except NotFoundError:
            floor = 0
        state = Partition(p)
        if floor:
            await self._replay(p, state, floor)
        try:
            await self.js.delete_consumer(bus.EVENTS, durable)
        except NotFoundError:
            pass
        self.partitions[p] = state
        config = ConsumerConfig(durable_name=durable, filter_subject=bus.partition_subject(p),
                                ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0, max_ack_pending=4 * FETCH,
                                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=floor + 1,
                                num_replicas=self.cfg.replicas)
        await self.js.add_consumer(bus.EVENTS, config)
        sub = await self.js.pull_subscribe_bind(durable, stream=bus.EVENTS)
        log.info("worker %s: partition %d from stream seq %d (%d hosts rebuilt)", self.id, p, floor + 1,
                 len(state.hosts))
        try:
            while self._holds(p) and not self.stopping.is_set():
                try:
                    msgs = await sub.fetch(FETCH, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    continue
                for m in msgs:
                    if not self._holds(p):
                        return
                    # the derivation off the loop, so that lease renewals keep their pace
                    derived = await asyncio.to_thread(state.apply, dict(m.headers or {}), m.data)
                    for d in derived:
                        await self._publish(p, d)
                    await m.ack()
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    async def _replay(self, p: int, state: Partition, through: int) -> None:
        """Rebuild `state` from the partition's messages with stream seq <= `through`."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                inactive_threshold=30.0, mem_storage=True, num_replicas=1)
        sub = await self.js.pull_subscribe(bus.partition_subject(p), stream=bus.EVENTS, config=config)
        try:
            while True:
                try:
                    msgs = await sub.fetch(256, timeout=2.0)
                except (TimeoutError, NatsTimeout):
                    return   # nothing more
                for m in msgs:
                    if m.metadata.sequence.stream > through:
                        return
                    await asyncio.to_thread(state.apply, dict(m.headers or {}), m.data)
                    if m.metadata.sequence.stream == through or m.metadata.num_pending == 0:
                        return
        finally:
            try:
                await sub.unsubscribe()
            except Exception:
                pass

    async def _publish(self, p: int, d: Derived) -> None:
        """Publish one derived message; retry until JetStream acks it (or the lease is gone)."""
        while True:
            try:
                await self.js.publish(d.subject, d.payload, timeout=5.0, stream=bus.DERIVED, headers=d.headers)
                self.published += 1
                return
            except Exception as exc:
                if not self._holds(p):
                    raise asyncio.CancelledError() from None
                log.info("worker %s: partition %d: publish failed (%s); retrying", self.id, p,
                         exc or type(exc).__name__)
                await asyncio.sleep(0.2)

    def stats(self) -> dict[str, Any]:
        parts = self.partitions.values()
        return {"worker": self.id, "partitions": sorted(self.owned), "hosts": sum(len(s.hosts) for s in parts),
                "applied": sum(s.applied for s in parts), "duplicates": sum(s.duplicates for s in parts),
                "events": sum(s.events for s in parts), "published": self.published}
