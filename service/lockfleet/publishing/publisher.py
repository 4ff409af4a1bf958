"""The publisher: turns findings into publications and delivers them to every sink, off the ingest
path.

One thread (`lockfleet-publish`) notices findings: whenever the source's version changes (a batch
was applied, a suppression changed), it asks the source for the current findings and compares each
with what the outbox says was last published of it: a finding never published is `new`; one whose
hosts, dependency kinds or witnesses grew is `grew`, at most once per `republish_interval` seconds
per finding (growth inside the interval waits for its end and goes out as one publication). A suppressed finding (recorded, or through a blessed
order) is skipped: not published. Each publication is appended durably to the outbox.

One thread per sink (`lockfleet-sink-NAME`) follows the outbox from that sink's cursor, sends each
publication in order, and saves the cursor once the sink acknowledged it. A sink that fails is
retried with the same publication after a back-off (doubling from `retry_initial` to
`retry_max`), while the other sinks and ingest go on. A sink that refuses a publication for good
(`SinkRejected`: an HTTP 4xx other than 408/429) `reject_tries` times in a row has it
dead-lettered: recorded durably in the dead-letter file with the sink and the reason, counted
(`on_dead_letter`, the `lockfleet_sink_dead_letters_total` metric), and the sink's cursor moves
past it, so that one bad publication no longer holds back the sink's later ones. Across a restart, each sink resumes after its
saved cursor: nothing is lost, and nothing a sink acknowledged is sent to it again (except in the
instant between its acknowledgment and the cursor's save, should the process die right there: the
JSONL sink checks its file for that; webhook receivers get an Idempotency-Key; Alertmanager
deduplicates by labels).

Knows nothing of the engine or of gRPC: `source()` returns the findings, `version()` a value that
changes when they may have.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import OperationalError
from ..findings.model import Alert
from ..store.jsonfiles import JsonLines
from .outbox import GREW, NEW, Cursors, Outbox
from .sinks import Sink, SinkRejected
from .suppress import Blessed, Suppressions, effective

log = logging.getLogger(__name__)


class NotReady(OperationalError):
    """The source cannot give a durable view right now (e.g. the log is unavailable); try later."""


@dataclass
class SinkState:
    sink: Sink
    cursor: int = 0
    delivered: int = 0
    failures: int = 0
    last_error: str = ""
    retrying_since: float = 0.0
    thread: threading.Thread | None = None
    ready: bool = False
    dead_lettered: int = 0
    rejections: int = 0       # consecutive SinkRejected of the publication at the head


@dataclass
class Counts:
    scans: int = 0
    published: int = 0
    by_event: dict[str, int] = field(default_factory=lambda: {NEW: 0, GREW: 0})
    suppressed: int = 0      # findings found suppressed at the last scan


class Publisher:
    def __init__(self, outbox: Outbox, cursors: Cursors, sinks: Sequence[Sink], source: Callable[[], list[Alert]],
                 version: Callable[[], object] = lambda: None, suppressions: Suppressions | None = None,
                 blessed: Blessed | None = None, interval: float = 0.2, retry_initial: float = 0.5,
                 retry_max: float = 30.0, republish_interval: float = 300.0, dead_letters: JsonLines | None = None,
                 reject_tries: int = 3, compact_records: int = 0) -> None:
        self.outbox = outbox
        self.cursors = cursors
        self.sinks = [SinkState(s, cursor=cursors.get(s.key)) for s in sinks]
        self.source = source
        self.version = version
        self.suppressions = suppressions
        self.blessed = blessed or Blessed()
        self.interval = interval
        self.republish_interval = republish_interval
        self._deferred_until = 0.0   # monotonic time of the next deferred republication, 0: none
        self.retry_initial = retry_initial
        self.retry_max = max(retry_max, retry_initial)
        self.counts = Counts()
        self.dead_letters = dead_letters
        self.reject_tries = max(1, reject_tries)
        self.compact_records = compact_records      # 0: never compact the outbox
        self.compactions = 0
        self._dead_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._scan_lock = threading.Lock()
        self._seen: object = object()
        self._threads: list[threading.Thread] = []
        self.on_publish: Callable[[dict[str, Any]], None] = lambda _rec: None
        self.on_delivery: Callable[[str, bool], None] = lambda _sink, _ok: None
        self.on_dead_letter: Callable[[str], None] = lambda _sink: None

    # -- noticing ---------------------------------------------------------------------------

    def _version(self) -> object:
        return (self.version(), self.suppressions.version if self.suppressions else 0)

    def scan(self) -> list[dict[str, Any]]:
        """Publish what changed since the last publications; returns the new outbox records.
        Raises NotReady or OSError (nothing of this scan was published past the failure)."""
        with self._scan_lock:
            version = self._version()
            alerts = self.source()
            out = []
            suppressed = 0
            now_ns = time.time_ns()
            deferred = 0.0
            for alert in sorted(alerts, key=lambda a: a.seq):
                if effective(alert, self.suppressions, self.blessed) is not None:
                    suppressed += 1
                    continue
                change = self.outbox.change(alert)
                if change is None:
                    continue
                event, new_hosts, new_kinds = change
                if event == GREW and self.republish_interval > 0:
                    prev = self.outbox.published(alert.id)
                    wait = (prev.last_published_ns - now_ns) / 1e9 + self.republish_interval if prev else 0.0
                    if wait > 0:      # republished not long ago: this growth waits for the interval
                        deferred = min(deferred, wait) if deferred else wait
                        continue
                rec = self.outbox.append(alert, event, new_hosts, new_kinds)
                self.counts.published += 1
                self.counts.by_event[event] = self.counts.by_event.get(event, 0) + 1
                log.info("published #%d: %s %s %s%s", rec["seq"], event, alert.kind, alert.id,
                         f" (new hosts {', '.join(new_hosts)})" if new_hosts else
                         f" (new kinds {'; '.join(new_kinds)})" if new_kinds else "")
                self.on_publish(rec)
                out.append(rec)
            self.counts.scans += 1
            self.counts.suppressed = suppressed
            self._seen = version
            self._deferred_until = time.monotonic() + deferred if deferred else 0.0
            return out

    def wake(self) -> None:
        self._wake.set()

    def compact_if_due(self) -> int:
        """Compact the outbox when it holds more than `compact_records` publications: drop what
        every sink acknowledged, except each finding's latest publication; returns how many went."""
        if not self.compact_records or self.outbox.records <= self.compact_records:
            return 0
        dropped = self.outbox.compact(min((st.cursor for st in self.sinks), default=0))
        if dropped:
            self.compactions += 1
            log.info("compacted the outbox: %d acknowledged publications dropped, %d kept",
                     dropped, self.outbox.records)
        return dropped

    def _notice(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                due = self._deferred_until and time.monotonic() >= self._deferred_until
                if self._version() != self._seen or due:
                    self.scan()
                self.compact_if_due()
            except NotReady as exc:
                log.debug("publisher waits: %s", exc)
            except Exception as exc:   # disk full, a broken source: keep trying, never stop ingest
                log.error("publishing failed (will retry): %s", exc)
                self._stop.wait(1.0)

    # -- delivering -------------------------------------------------------------------------

    def _deliver(self, st: SinkState) -> None:
        sink = st.sink
        try:
            st.cursor = sink.recover(self.cursors.get(sink.key))
        except Exception as exc:
            st.last_error = f"cannot start: {exc}"
            log.error("sink %s cannot start: %s; it receives nothing until the service restarts", sink.name, exc)
            return
        st.ready = True
        backoff = self.retry_initial
        while not self._stop.is_set():
            pending = self.outbox.wait_after(st.cursor, timeout=1.0, limit=64)
            for pub in pending:
                if self._stop.is_set():
                    return
                try:
                    sink.send(pub)
                except SinkRejected as exc:
                    st.rejections += 1
                    if st.rejections >= self.reject_tries and self._dead_letter(st, pub, str(exc)):
                        backoff = self.retry_initial
                        continue
                    st.failures += 1
                    st.last_error = str(exc)
                    self.on_delivery(sink.name, False)
                    log.warning("sink %s refused publication #%d (%s), try %d of %d before it is dead-lettered",
                                sink.name, pub["seq"], exc, st.rejections, self.reject_tries)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.retry_max)
                    break
                except Exception as exc:
                    st.rejections = 0
                    st.failures += 1
                    st.last_error = str(exc)
                    if not st.retrying_since:
                        st.retrying_since = time.monotonic()
                    self.on_delivery(sink.name, False)
                    log.warning("sink %s did not take publication #%d (%s); retrying in %.1fs",
                                sink.name, pub["seq"], exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.retry_max)
                    break
                st.rejections = 0
                self._advance(st, pub["seq"])
                st.delivered += 1
                if st.retrying_since:
                    log.info("sink %s is back after %.1fs", sink.name, time.monotonic() - st.retrying_since)
                st.retrying_since = 0.0
                st.last_error = ""
                backoff = self.retry_initial
                self.on_delivery(sink.name, True)

    def _advance(self, st: SinkState, seq: int) -> None:
        st.cursor = seq
        try:
            self.cursors.set(st.sink.key, seq)
        except OSError as exc:   # it was delivered; the cursor is saved with the next one
            log.error("cannot save the cursor of sink %s: %s", st.sink.name, exc)

    def _dead_letter(self, st: SinkState, pub: dict[str, Any], error: str) -> bool:
        """Record `pub` as refused for good by this sink and move past it; False (and the sink keeps
        retrying) when there is no dead-letter file or it cannot be written."""
        if self.dead_letters is None:
            return False
        rec = {"sink": st.sink.key, "sink_name": st.sink.name, "seq": pub["seq"], "id": pub["id"],
               "event": pub["event"], "error": error, "tries": st.rejections, "ts_ns": time.time_ns()}
        try:
            with self._dead_lock:
                self.dead_letters.append(rec)
        except OSError as exc:
            log.error("cannot dead-letter publication #%d for sink %s: %s", pub["seq"], st.sink.name, exc)
            return False
        log.error("sink %s refused publication #%d %d times (%s): dead-lettered in %s; its later publications go on",
                  st.sink.name, pub["seq"], st.rejections, error, self.dead_letters.path)
        st.rejections = 0
        st.dead_lettered += 1
        st.last_error = ""
        st.retrying_since = 0.0
        self._advance(st, pub["seq"])
        self.on_dead_letter(st.sink.name)
        return True

    # -- life -------------------------------------------------------------------------------

    def start(self) -> Publisher:
        t = threading.Thread(target=self._notice, name="lockfleet-publish", daemon=True)
        self._threads.append(t)
        for st in self.sinks:
            st.thread = threading.Thread(target=self._deliver, args=(st,), name=f"lockfleet-sink-{st.sink.name}",
                                         daemon=True)
            self._threads.append(st.thread)
        for t in self._threads:
            t.start()
        return self

    def pending(self) -> dict[str, int]:
        """Per sink: publications not yet acknowledged."""
        last = self.outbox.last_seq
        return {st.sink.name: max(0, last - st.cursor) for st in self.sinks}

    def stop(self, flush_seconds: float = 2.0) -> None:
        """A last scan (findings of the batches acked so far get into the outbox), up to
        `flush_seconds` for the sinks to catch up, then stop; what is left waits in the outbox."""
        try:
            self.scan()
        except Exception as exc:
            log.warning("last publishing scan failed: %s", exc)
        deadline = time.monotonic() + flush_seconds
        while time.monotonic() < deadline and any(
                st.ready and st.cursor < self.outbox.last_seq and not st.last_error for st in self.sinks):
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self.outbox.wake()
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()) + 1.0)
        for st in self.sinks:
            left = self.outbox.last_seq - st.cursor
            if left > 0:
                log.warning("sink %s: %d publication(s) not yet delivered; they go out after the restart",
                            st.sink.name, left)
            try:
                st.sink.close()
            except Exception:
                pass

    def status(self) -> dict[str, Any]:
        last = self.outbox.last_seq
        return {
            "last_seq": last,
            "scans": self.counts.scans,
            "published": self.counts.published,
            "by_event": dict(self.counts.by_event),
            "suppressed": self.counts.suppressed,
            "outbox_records": self.outbox.records,
            "compactions": self.compactions,
            "sinks": {st.sink.name: {"cursor": st.cursor, "pending": max(0, last - st.cursor),
                                     "delivered": st.delivered, "failures": st.failures,
                                     "dead_lettered": st.dead_lettered,
                                     "last_error": st.last_error} for st in self.sinks},
        }
