"""Per-host rate limits on ingest: a token bucket of Arrow IPC bytes per second for each host
(the batch envelope's), one second of burst. A batch over its host's rate is not refused: the
stream's reader waits for its tokens, so that host's streams slow down through gRPC flow control
while every other host goes on. Knows nothing of gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class HostRates:
    """`take(host, n, give_up)` waits until `host` may send `n` more bytes; 0 bytes/s: no limit."""

    def __init__(self, bytes_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = bytes_per_second
        self.burst = bytes_per_second            # one second's worth
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}   # host -> (tokens, when)
        self.waits: dict[str, int] = {}          # host -> batches that had to wait
        self.waited: dict[str, float] = {}       # host -> seconds waited

    def take(self, host: str, n: int, give_up: Callable[[], str] = lambda: "") -> str:
        """Take `n` tokens (at most the burst) for `host`, waiting as needed; returns "" or, if
        `give_up()` says why while waiting, that reason (and takes nothing)."""
        if self.rate <= 0:
            return ""
        n = min(n, self.burst)
        start = None
        while True:
            with self._lock:
                now = self._clock()
                tokens, when = self._buckets.get(host, (float(self.burst), now))
                tokens = min(float(self.burst), tokens + (now - when) * self.rate)
                if tokens >= n:
                    self._buckets[host] = (tokens - n, now)
                    if start is not None:
                        self.waits[host] = self.waits.get(host, 0) + 1
                        self.waited[host] = self.waited.get(host, 0.0) + now - start
                    return ""
                self._buckets[host] = (tokens, now)
                need = (n - tokens) / self.rate
                if start is None:
                    start = now
            why = give_up()
            if why:
                return why
            time.sleep(min(need, 0.25))

    def stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {h: {"waits": self.waits[h], "waited_seconds": round(self.waited.get(h, 0.0), 3)}
                    for h in self.waits}
