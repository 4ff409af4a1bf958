"""A progress bar on stderr for long scans: rows read of the rows the files' metadata announce.

Shown only when stderr is a terminal (and the caller asks: never with --json); otherwise every
call is a no-op, so that logs and pipes stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
INTERVAL = 0.2


def _si(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


class Progress:
    """`update(rows)` as rows are read; `status(text)` for a phase without a count; `close()`."""

    def __init__(self, total: int, *, enabled: bool | None = None, stream: TextIO | None = None,
                 label: str = "events") -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = True
        self.enabled = bool(enabled and _isatty(self.stream))
        self.total = max(0, total)
        self.done = 0
        self.label = label
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def add_total(self, n: int) -> None:
        self.total += n

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < INTERVAL:
            return
        self._last = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        total = max(self.total, self.done)
        frac = self.done / total if total else 0.0
        fill = int(frac * WIDTH)
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        eta = (total - self.done) / rate if rate > 0 and total > self.done else 0.0
        line = (f"[{'#' * fill}{'.' * (WIDTH - fill)}] {_si(self.done)}/{_si(total)} {self.label} "
                f"{frac * 100:5.1f}%  {_si(rate)}/s  eta {eta:4.0f}s")
        self._write(line)

    def status(self, text: str) -> None:
        if self.enabled:
            self._write(text)

    def _write(self, line: str) -> None:
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
