"""The bus: names and layout of lockfleet's JetStream streams and key-value buckets, and a
thread-hosted asyncio loop for the synchronous parts of the service (gRPC servicers) to talk
to NATS through `nats-py`.

Layout (every role agrees on it; `ensure` creates what is missing, idempotently):

    stream LF_EVENTS   subjects lf.ev.<partition>.<host token>.<stream token>
                       the raw Arrow IPC batches agents pushed, one message each, headers
                       Lf-Host, Lf-Stream, Lf-Seq, Lf-Schema; Nats-Msg-Id "<host>/<stream>/<seq>"
    stream LF_DERIVED  subjects lf.derived.<partition>.<host token>
                       what the derivation workers learnt (edge mode's synthetic rows), one
                       message per raw batch that taught something, headers Lf-Host, Lf-Seq (per
                       host and partition, 1, 2, 3, ...), Lf-Source the raw batch's
                       JSON [host, stream, seq]
    stream LF_ALERTS   subjects lf.alert.<finding token>: each finding published once, by the
                       authority that holds the lease (the subject's expected last sequence is 0,
                       so a second publisher is refused by JetStream itself)
    kv LF_LEASES       partition.<p> -> the worker that derives it; member.<worker> heartbeats;
                       authority -> the graph authority; every key lapses after `lease` seconds
                       without a renewal (the bucket's max age)

Partition of a host: crc32 of its name modulo the partition count, so one host's batches share a
subject prefix and stay in order. Tokens (host, stream, finding id) are base32 of the UTF-8 name,
so that any name is one valid subject token.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import zlib
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import OperationalError

EVENTS, DERIVED, ALERTS = "LF_EVENTS", "LF_DERIVED", "LF_ALERTS"
LEASES = "LF_LEASES"
DEFAULT_PARTITIONS = 8
DEFAULT_LEASE = 3.0
DUPLICATE_WINDOW = 600.0     # seconds JetStream remembers a Nats-Msg-Id
H_HOST, H_STREAM, H_SEQ, H_SCHEMA, H_SOURCE = "Lf-Host", "Lf-Stream", "Lf-Seq", "Lf-Schema", "Lf-Source"
MSG_ID = "Nats-Msg-Id"
EXPECT_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
T = TypeVar("T")


class BusError(OperationalError, RuntimeError):
    """The bus cannot be reached or refuses what lockfleet needs of it."""


def token(name: str) -> str:
    """A name as one subject token (base32, no padding, lower case)."""
    return base64.b32encode(name.encode()).decode().rstrip("=").lower() or "_"


def untoken(tok: str) -> str:
    if tok == "_":
        return ""
    pad = "=" * (-len(tok) % 8)
    return base64.b32decode(tok.upper() + pad).decode()


def partition(host: str, partitions: int) -> int:
    return zlib.crc32(host.encode()) % partitions


def event_subject(host: str, stream_id: str, partitions: int) -> str:
    return f"lf.ev.{partition(host, partitions)}.{token(host)}.{token(stream_id)}"


def partition_subject(p: int) -> str:
    return f"lf.ev.{p}.>"


def derived_subject(p: int, host: str) -> str:
    return f"lf.derived.{p}.{token(host)}"


def alert_subject(alert_id: str) -> str:
    return f"lf.alert.{token(alert_id)}"


@dataclass(frozen=True)
class BusConfig:
    """Where the bus is and how lockfleet lays itself out on it."""

    servers: tuple[str, ...]
    partitions: int = DEFAULT_PARTITIONS
    replicas: int = 1
    lease: float = DEFAULT_LEASE
    max_age: float = 0.0        # seconds kept in LF_EVENTS (0: until removed by limits)
    name: str = "lockfleet"     # the client connection's name (shows in NATS monitoring)

    @staticmethod
    def parse(urls: str, **kw: Any) -> BusConfig:
        """`nats://h1:4222,nats://h2:4222` -> BusConfig; raises ValueError naming a bad URL."""
        servers = tuple(u.strip() for u in urls.split(",") if u.strip())
        if not servers:
            raise ValueError("--bus: give at least one nats:// URL")
        for u in servers:
            if not (u.startswith("nats://") or u.startswith("tls://")):
                raise ValueError(f"--bus {u!r}: not a nats:// or tls:// URL")
        return BusConfig(servers=servers, **kw)


async def connect(cfg: BusConfig, name: str = "") -> Any:
    """A NATS connection that reconnects forever across the cluster's servers."""
    import nats

    async def quiet(_exc: Exception) -> None:  # reconnects are normal when a node goes away
        return None

    try:
        return await nats.connect(servers=list(cfg.servers), name=name or cfg.name, max_reconnect_attempts=-1,
                                  reconnect_time_wait=0.25, connect_timeout=2, allow_reconnect=True,
                                  error_cb=quiet, ping_interval=5, max_outstanding_pings=3)
    except Exception as exc:
        raise BusError(f"cannot connect to the bus at {', '.join(cfg.servers)}: {exc or type(exc).__name__}") from None


async def ensure(js: Any, cfg: BusConfig) -> Any:
    """Create lockfleet's streams and lease bucket when missing; returns the lease KV."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    streams = (
        (EVENTS, ["lf.ev.>"], cfg.max_age),
        (DERIVED, ["lf.derived.>"], 0.0),
        (ALERTS, ["lf.alert.>"], 0.0),
    )
    for name, subjects, max_age in streams:
        sc = StreamConfig(name=name, subjects=subjects, retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
                          num_replicas=cfg.replicas, duplicate_window=DUPLICATE_WINDOW, max_age=max_age or None,
                          discard=DiscardPolicy.OLD)
        for _attempt in range(40):
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                pass
            try:
                await js.add_stream(sc)
                break
            except BadRequestError as exc:   # created meanwhile by another role: fine
                if "already in use" in str(exc):
                    break
                raise BusError(f"cannot create stream {name}: {exc}") from None
            except Exception:
                await asyncio.sleep(0.25)
        else:
            raise BusError(f"cannot create or find stream {name} on the bus")
    for _attempt in range(40):
        try:
            return await js.key_value(LEASES)
        except Exception:
            pass
        try:
            return await js.create_key_value(bucket=LEASES, ttl=cfg.lease, history=1, replicas=cfg.replicas)
        except Exception:
            await asyncio.sleep(0.25)
    raise BusError(f"cannot create or find the key-value bucket {LEASES} on the bus")


class Loop:
    """An asyncio loop on its own daemon thread; `run` submits a coroutine from any thread."""

    def __init__(self, name: str = "lockfleet-bus") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
