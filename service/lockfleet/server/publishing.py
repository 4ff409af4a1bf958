"""The service's publishing side, put together from its settings: the outbox and cursors under
`<data-dir>/publish/` (with `dead-letters.jsonl`: publications a sink refused for good), the suppressions file, the blessed orders, the sinks (the JSONL file always,
Alertmanager and webhooks when configured) and the publisher threads that feed them.

The publisher reads findings through the gateway (a short read under its lock, off the ingest
path) and publishes only what durable batches raised: it waits until the log holds every batch
the view it read includes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..findings.model import Alert
from ..publishing.outbox import Cursors, Outbox
from ..publishing.publisher import NotReady, Publisher
from ..publishing.sinks import AlertmanagerSink, JsonlSink, Sink, WebhookSink, read_secret
from ..publishing.suppress import Blessed, Suppression, Suppressions, effective
from ..store import LogUnavailable
from ..store.jsonfiles import JsonLines
from .config import ServeConfig
from .gateway import Gateway

log = logging.getLogger(__name__)

DURABLE_WAIT = 5.0


class Publishing:
    """Everything that decides and delivers publications for one service."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        data = Path(config.data_dir)
        self.blessed = Blessed.load(config.blessed) if config.blessed else Blessed()
        secret = read_secret(config.webhook_secret_file) if config.webhook_secret_file else None
        sinks: list[Sink] = [JsonlSink(data / "alerts.jsonl")]
        labels = dict(config.alertmanager_labels)
        sinks += [AlertmanagerSink(url, labels, config.alertmanager_ttl_seconds) for url in config.alertmanagers]
        sinks += [WebhookSink(url, secret) for url in config.webhooks]
        self.sinks = sinks
        self.suppressions = Suppressions(data / "suppressions.json")
        self.outbox = Outbox(data / "publish" / "outbox.jsonl")
        self.cursors = Cursors(data / "publish" / "cursors.json")
        self.dead_letters = JsonLines(data / "publish" / "dead-letters.jsonl")
        self.publisher: Publisher | None = None

    def open(self) -> Publishing:
        """Read the files back (raises ValueError or OSError naming a damaged one)."""
        self.suppressions.load()
        self.outbox.open()
        self.cursors.load()
        self.dead_letters.open()
        return self

    def start(self, gateway: Gateway, on_publish: Callable[[dict[str, Any]], None] | None = None,
              on_delivery: Callable[[str, bool], None] | None = None,
              on_dead_letter: Callable[[str], None] | None = None) -> None:
        def source() -> list[Alert]:
            alerts, lsn = gateway.read_durable(lambda eng: eng.alerts())
            try:
                if lsn and not gateway.wait_durable(lsn, DURABLE_WAIT):
                    raise NotReady(f"the log has not yet made lsn {lsn} durable")
            except LogUnavailable as exc:
                raise NotReady(str(exc)) from None
            return alerts

        cfg = self.config
        self.publisher = Publisher(self.outbox, self.cursors, self.sinks, source,
                                   version=lambda: gateway.applied_batches, suppressions=self.suppressions,
                                   blessed=self.blessed, interval=cfg.publish_interval,
                                   retry_initial=min(0.5, cfg.sink_retry_max), retry_max=cfg.sink_retry_max,
                                   republish_interval=cfg.republish_interval, dead_letters=self.dead_letters,
                                   compact_records=cfg.outbox_compact_records)
        if on_publish:
            self.publisher.on_publish = on_publish
        if on_delivery:
            self.publisher.on_delivery = on_delivery
        if on_dead_letter:
            self.publisher.on_dead_letter = on_dead_letter
        self.publisher.start()
        log.info("publishing to %s; outbox at #%d", ", ".join(s.name for s in self.sinks), self.outbox.last_seq)

    def suppression_of(self, alert: Alert) -> Suppression | None:
        return effective(alert, self.suppressions, self.blessed)

    def wake(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    def status(self) -> dict[str, Any]:
        if self.publisher is None:
            return {"last_seq": self.outbox.last_seq}
        st = self.publisher.status()
        st["suppressions"] = len(self.suppressions.all())
        st["blessed_orders"] = len(self.blessed.pairs)
        return st

    def close_watchers(self) -> None:
        """End every WatchAlerts stream (before the gRPC server stops)."""
        self.outbox.close_readers()

    def stop(self, flush_seconds: float = 2.0) -> None:
        if self.publisher is not None:
            self.publisher.stop(flush_seconds)
            self.publisher = None
        self.outbox.close()
        self.dead_letters.close()
