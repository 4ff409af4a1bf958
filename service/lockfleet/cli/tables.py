"""How the query commands print: times given and shown, padded tables, the cells of a finding,
JSON documents."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str) -> int:
    """A moment as ns since the epoch: ISO 8601 (`2019-02-28`, `2019-02-28T15:07:40Z`; UTC unless
    it says otherwise), an integer of ns, or a duration ago (`90s`, `30m`, `2h`, `7d`, `1w`)."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return time.time_ns() - int(float(m.group(1)) * _UNIT[m.group(2)] * 1e9)
    if t.isdigit():
        return int(t)
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give ISO 8601 (2019-02-28T15:07:40Z), "
                                         "ns since the epoch, or a duration ago (30m, 2h, 7d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def when(ts_ns: int) -> str:
    if not ts_ns:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], indent: str = "") -> str:
    """Columns padded to their widest cell (the last one left ragged)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        line = "  ".join(c.ljust(w) if i < len(r) - 1 else c for i, (c, w) in enumerate(zip(r, widths)))
        lines.append(indent + line.rstrip())
    return "\n".join(lines)


def hosts_cell(hosts: Sequence[str], most: int = 4) -> str:
    return ", ".join(hosts[:most]) + (f" +{len(hosts) - most}" if len(hosts) > most else "") if hosts else "-"


def locks_cell(data: dict[str, Any]) -> str:
    locks = list(data.get("locks", ()))
    if data.get("kind") == "circular" and locks:
        return " -> ".join(locks + locks[:1])
    return ", ".join(locks)


def state_cell(data: dict[str, Any]) -> str:
    s = data.get("suppression")
    if not s:
        return "published"
    return "blessed" if s.get("blessed") else f"suppressed ({s.get('author') or 'unknown'})"


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))
