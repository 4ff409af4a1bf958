"""A finding's neighbourhood in the lock graph as Graphviz DOT.

The finding's own dependencies are drawn bold and red (for a cycle, in its order, the closing one
dashed as lockdep's #0), each labelled with its kinds, how often and on which hosts it was taken;
the dependencies around them (given by the caller: in and out of the finding's locks, up to a
radius) are grey. Each lock shows its lockdep usage string. `svg(dot)` renders it with Graphviz's
`dot` when that is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence

from .model import Alert, Link, dependencies


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def hosts_text(hosts: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(hosts[:most])
    return shown + (f" +{len(hosts) - most}" if len(hosts) > most else "")


def edge_label(link: Link) -> str:
    kinds = "/".join(link.kinds) or "?"
    return f"{kinds} x{link.count}\n{hosts_text(list(link.hosts) or [link.first_taken.host])}"


def finding_dot(alert: Alert, around: Iterable[Link] = (), usage: dict[str, str] | None = None,
                truncated: int = 0) -> str:
    """DOT text for `alert` and the dependencies `around` it. `usage` gives lock -> usage chars for
    locks the alert does not describe; `truncated` counts dependencies left out (said in the title)."""
    usage = {**(usage or {}), **alert.usage_strings}
    own = dependencies(alert)
    own_set = set(own)
    by_pair = {(link.held, link.taken): link for link in alert.links}
    others = [link for link in around if (link.held, link.taken) not in own_set]
    locks: list[str] = list(alert.locks)
    for link in others:
        for name in (link.held, link.taken):
            if name not in locks:
                locks.append(name)
    title = f"{alert.kind} {alert.id}\nhosts: {hosts_text(list(alert.hosts), 8)}"
    if truncated:
        title += f"\n({truncated} more dependencies not shown)"
    out = [f"digraph {_q(alert.id)} {{",
           f"  graph [label={_q(title)}, labelloc=t, fontname=\"Helvetica\", rankdir=LR];",
           "  node [shape=box, style=\"rounded\", fontname=\"Helvetica\"];",
           "  edge [fontname=\"Helvetica\", fontsize=10];"]
    mine = set(alert.locks)
    for name in locks:
        u = usage.get(name)
        label = name + (f"\n{{{u}}}" if u else "")
        attrs = "color=red, penwidth=2" if name in mine else "color=grey40"
        out.append(f"  {_q(name)} [label={_q(label)}, {attrs}];")
    for i, (held, taken) in enumerate(own):
        link = by_pair.get((held, taken))
        label = edge_label(link) if link else ""
        style = ", style=dashed" if alert.kind == "circular" and i == len(own) - 1 else ""
        out.append(f"  {_q(held)} -> {_q(taken)} [label={_q(label)}, color=red, penwidth=2{style}];")
    for link in others:
        out.append(f"  {_q(link.held)} -> {_q(link.taken)} [label={_q(edge_label(link))}, color=grey50, "
                   "fontcolor=grey30];")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def svg(dot: str, timeout: float = 60.0) -> str:
    """The DOT text rendered to SVG by Graphviz's `dot`; RuntimeError when it is missing or fails."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz's `dot` is not installed (Debian: apt-get install graphviz)")
    proc = subprocess.run([exe, "-Tsvg"], input=dot, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed: {' '.join(proc.stderr.split())[:300]}")
    return proc.stdout
