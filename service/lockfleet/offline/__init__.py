"""Offline analysis of archives with polars and the same core as the service: `lockfleet analyze`,
`lockfleet diff`, `lockfleet report`.

    >>> from lockfleet.offline import analyze, Selection
    >>> result = analyze(["/var/lib/lockfleet"])          # a data dir: archive + uncompacted log
    >>> [a.id for a in result.alerts]                     # the ids the service raised
    >>> result.aggregates.hold_times                      # polars DataFrames

The commands' options and output are `lockfleet.cli.offline`'s. Layering: offline -> engine ->
core; nothing here knows grpc.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Analysis", "Diff", "ScanError", "Selection", "analyze", "diff"]

# polars and the engine load only when asked for, so that `lockfleet --help` and the other
# commands do not pay for them
_LAZY = {"Analysis": "analysis", "analyze": "analysis", "Diff": "diffing", "diff": "diffing",
         "ScanError": "scan", "Selection": "scan", "parse_time": "scan"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

