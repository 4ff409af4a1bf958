"""Formatting shared by the text output and the HTML report: durations, times, counts, tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

NS_COLUMNS = ("p50_ns", "p99_ns", "max_ns", "mean_ns")
TS_COLUMNS = ("first_ts_ns", "last_ts_ns", "ts_ns")


def duration(ns: float | None) -> str:
    if ns is None:
        return ""
    ns = float(ns)
    for unit, div in (("d", 86_400e9), ("h", 3600e9), ("min", 60e9), ("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= div:
            return f"{ns / div:.3g}{unit}"
    return f"{ns:.0f}ns"


def when(ts_ns: int | None, seconds: bool = True) -> str:
    if ts_ns is None:
        return ""
    dt = datetime.fromtimestamp(int(ts_ns) // 10**9, tz=UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column in NS_COLUMNS:
        return duration(value)
    if column in TS_COLUMNS:
        return when(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def text_table(df: pl.DataFrame, top: int = 0) -> str:
    """A fixed-width table of the first `top` rows (0: all), numbers right-aligned."""
    if top:
        df = df.head(top)
    cols = df.columns
    rows = [[cell(c, v) for c, v in zip(cols, r)] for r in df.iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    numeric = [df.schema[c].is_numeric() for c in cols]

    def line(vals: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in rows)])
