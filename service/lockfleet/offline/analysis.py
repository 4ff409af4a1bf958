"""Run the engine (the same Cython core as the service) over a plan's events, in apply order, in
chunks straight from Arrow: memory is bounded by the chunk size and the lock graph, not by the
size of the archive."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import IRQ_RULE_DEFAULT, Engine
from ..events import EventError
from ..findings.model import Alert
from .aggregates import Aggregates, compute
from .progress import Progress
from .scan import CHUNK_ROWS, Plan, ScanError, Selection, Source, chunks, plan

log = logging.getLogger(__name__)


@dataclass
class Analysis:
    engine: Engine
    plan: Plan
    selection: Selection
    events: int = 0                 # rows applied (after the selection)
    rows_read: int = 0              # rows read from the files
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)   # log records that could not be decoded
    aggregates: Aggregates | None = None

    @property
    def alerts(self) -> list[Alert]:
        return self.engine.alerts()

    def alerts_by_host(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for a in self.alerts:
            c.update(a.hosts)
        return dict(c)

    def summary(self) -> dict:
        st = self.engine.stats()
        out = {"events": self.events, "rows_read": self.rows_read, "files": self.plan.files,
                "log_segments_already_archived": self.plan.skipped_segments,
                "archive_parts_ignored": self.plan.ignored_parts,
                "segments_split_over_days": self.plan.unordered_segments,
                "files_pruned": self.plan.pruned_files, "skipped_records": len(self.skipped),
                "locks": st["locks"], "edges": st["edges"], "alerts": st["alerts"],
                "threads": st["threads"], "depth_overflows": st["depth_overflows"],
                "seconds": round(self.seconds, 3)}
        if self.aggregates is not None:
            out["hosts"] = self.aggregates.hosts.height
        return out


def feed(engine: Engine, p: Plan, selection: Selection = Selection(), progress: Progress | None = None,
         chunk_rows: int = CHUNK_ROWS, skipped: list[str] | None = None) -> tuple[int, int]:
    """Apply every selected row of the plan to `engine`; returns (rows applied, rows read)."""
    applied = read = 0
    offsets: dict[int, int] = {}

    def on_error(src: Source, message: str) -> None:
        log.warning("%s: skipped a log record that cannot be decoded: %s", src.path, message)
        if skipped is not None:
            skipped.append(f"{src.path}: {message}")

    for ch in chunks(p, selection, chunk_rows, on_error=on_error):
        key = id(ch.source)
        start = offsets.get(key, 0)
        offsets[key] = start + ch.raw_rows
        read += ch.raw_rows
        if ch.batch.num_rows:
            try:
                engine.ingest(ch.batch, host=ch.host)
            except EventError as exc:
                where = f" (in the {ch.raw_rows} rows from row {start})" if ch.source.kind != "log" else ""
                raise ScanError(f"{ch.source.path}: {exc}{where}") from None
            applied += ch.batch.num_rows
        if progress is not None:
            if ch.source.rows is None:
                progress.add_total(ch.raw_rows)
            progress.update(ch.raw_rows)
    return applied, read


def analyze(paths: list[str | Path], selection: Selection = Selection(), *, aggregates: bool = True,
            progress: bool = False, chunk_rows: int = CHUNK_ROWS,
            status: Callable[[str], None] | None = None, irq_rule: str = IRQ_RULE_DEFAULT) -> Analysis:
    """The findings (and, unless told not to, the aggregates) of the events under `paths`."""
    t = time.perf_counter()
    p = plan(paths, selection)
    result = Analysis(engine=Engine(irq_rule=irq_rule), plan=p, selection=selection)
    bar = Progress(p.known_rows, enabled=progress)
    try:
        result.events, result.rows_read = feed(result.engine, p, selection, bar, chunk_rows, result.skipped)
        if aggregates:
            result.aggregates = compute(p, selection, result.engine, result.alerts_by_host(),
                                        status=bar.status if bar.enabled else status)
    finally:
        bar.close()
    result.seconds = time.perf_counter() - t
    return result
