"""Prometheus metrics through `prometheus_client`, served on `--metrics-listen` at /metrics.

One `Registry` per service (its own `CollectorRegistry`, so that services in one process, as in
the tests and the demo, never mix): counters and histograms updated as things happen, gauges read
from the service's state at scrape time (a gauge that cannot be read is left out of that scrape,
never failing it), and the process and platform collectors. Names follow Prometheus's conventions
(`_total` counters, `_seconds` histograms, base units); `promtool check metrics` checks them in the
tests. `*_created` series are not exported: they double every counter for no use here.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

prometheus_client.disable_created_metrics()

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# publication delay: from the batch that raised a finding being applied to its publication
DELAY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


class Counter:
    """A counter, with labels or without; `inc(n, *label_values)`."""

    def __init__(self, metric: prometheus_client.Counter, labelled: bool) -> None:
        self._metric, self._labelled = metric, labelled

    def inc(self, n: float = 1, *label_values: str) -> None:
        (self._metric.labels(*label_values) if self._labelled else self._metric).inc(n)


class Histogram:
    def __init__(self, metric: prometheus_client.Histogram) -> None:
        self._metric = metric

    def observe(self, v: float) -> None:
        self._metric.observe(v)


class _ReadAtScrape(Collector):
    """Gauges (or counters kept elsewhere) whose values are read from the service when scraped."""

    def __init__(self) -> None:
        # name -> (type, help, label names, read)
        self._items: list[tuple[str, str, str, tuple[str, ...], Callable[[], object]]] = []

    def add(self, kind: str, name: str, help: str, labels: Sequence[str], read: Callable[[], object]) -> None:
        self._items.append((kind, name, help, tuple(labels), read))

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        for kind, name, help, labels, read in self._items:
            try:
                value = read()
            except Exception:  # a value that cannot be read is left out of this scrape
                continue
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help, labels=list(labels) if labels else None)
            if labels:
                assert isinstance(value, Mapping)
                for key, v in sorted(value.items()):
                    family.add_metric(list(key) if isinstance(key, tuple) else [str(key)], float(v))
            else:
                family.add_metric([], float(value))  # type: ignore[arg-type]
            yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []   # read lazily: never at registration


class Registry:
    """The metrics of one service."""

    def __init__(self, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._scraped = _ReadAtScrape()
        self.registry.register(self._scraped)
        if process:
            prometheus_client.ProcessCollector(registry=self.registry)
            prometheus_client.PlatformCollector(registry=self.registry)

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        base = name[:-len("_total")] if name.endswith("_total") else name
        return Counter(prometheus_client.Counter(base, help, labelnames=tuple(labels), registry=self.registry),
                       bool(labels))

    def histogram(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return Histogram(prometheus_client.Histogram(name, help, buckets=tuple(buckets), registry=self.registry))

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self._scraped.add("gauge", name, help, (), read)

    def gauges(self, name: str, help: str, labels: Sequence[str], read: Callable[[], Mapping[Any, float]]) -> None:
        """A gauge per label value: `read()` returns {label value (or tuple of them): value}."""
        self._scraped.add("gauge", name, help, labels, read)

    def counters(self, name: str, help: str, labels: Sequence[str],
                 read: Callable[[], Mapping[Any, float]]) -> None:
        """Counters kept by the service itself (e.g. per host), read at scrape time."""
        base = name[:-len("_total")] if name.endswith("_total") else name
        self._scraped.add("counter", base, help, labels, read)

    def render(self) -> str:
        return prometheus_client.generate_latest(self.registry).decode()


class MetricsServer:
    """GET /metrics on (host, port); `port` is the one bound (port 0 picks one)."""

    def __init__(self, host: str, port: int, registry: Registry) -> None:
        reg = registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "only /metrics is here")
                    return
                body = reg.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = type("MetricsHTTPServer", (ThreadingHTTPServer,),
                      {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "daemon_threads": True})
        self._httpd = server((host, port), Handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="lockfleet-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
