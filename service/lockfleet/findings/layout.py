"""A finding's neighbourhood drawn as SVG without Graphviz: the same picture `dot.finding_dot`
describes (the finding's locks and dependencies in red, the closing one of a cycle dashed, the
dependencies around them in grey, each lock with its usage string, each dependency labelled with
its kinds, count and hosts), laid out by the project itself.

Layout: the finding's locks on an inner ring in their order (a cycle reads clockwise, lockdep's
#0 at the top); every other lock on an outer ring, placed near the finding lock it is attached
to, so that most grey dependencies stay short. Dependencies are quadratic curves bent outward
(two opposite dependencies between the same locks never overlap). No dependency: every string is
escaped, nothing is fetched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from html import escape

from .dot import edge_label, hosts_text
from .model import Alert, Link, dependencies

CHAR_W, LINE_H, PAD = 7.0, 14.0, 6.0
RED, GREY = "#c62828", "#8a8a8a"


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _box(lines: list[str]) -> tuple[float, float]:
    return max(len(s) for s in lines) * CHAR_W + 2 * PAD, len(lines) * LINE_H + 2 * PAD


def _border(cx: float, cy: float, w: float, h: float, tx: float, ty: float) -> tuple[float, float]:
    """Where the segment from a box's centre towards (tx, ty) leaves the box."""
    dx, dy = tx - cx, ty - cy
    if dx == 0 and dy == 0:
        return cx, cy
    scale = min((w / 2) / abs(dx) if dx else math.inf, (h / 2) / abs(dy) if dy else math.inf)
    return cx + dx * scale, cy + dy * scale


def neighbourhood_svg(alert: Alert, around: Iterable[Link] = (), usage: dict[str, str] | None = None,
                      truncated: int = 0) -> str:
    """SVG of `alert` and the dependencies `around` it (arguments as for `finding_dot`)."""
    usage = {**(usage or {}), **alert.usage_strings}
    own = dependencies(alert)
    own_set = set(own)
    by_pair = {(link.held, link.taken): link for link in alert.links}
    others = [link for link in around if (link.held, link.taken) not in own_set]
    inner = list(dict.fromkeys(alert.locks))
    # each other lock hangs off the first lock it is seen with; `root` follows that to a finding lock
    attach: dict[str, str] = {}
    for link in others:
        for name, other in ((link.held, link.taken), (link.taken, link.held)):
            if name not in inner and name not in attach:
                attach[name] = other

    def root(n: str) -> int:
        seen = set()
        while n not in inner and n in attach and n not in seen:
            seen.add(n)
            n = attach[n]
        return inner.index(n) if n in inner else 0

    outer: list[str] = []
    for n in sorted(attach, key=lambda n: (root(n), n)):   # one hanging off another outer lock goes next to it
        anchor = attach[n]
        outer.insert(outer.index(anchor) + 1 if anchor in outer else len(outer), n)
    labels = {n: [n] + ([f"{{{usage[n]}}}"] if usage.get(n) else []) for n in (*inner, *outer)}
    sizes = {n: _box(lines) for n, lines in labels.items()}
    widest = max((w for w, _ in sizes.values()), default=100.0)
    n_in, n_out = len(inner), len(outer)
    r_in = 0.0 if n_in <= 1 else max(110.0, (widest * 0.55 + 40) * n_in / (2 * math.pi) * 1.6)
    r_out = (r_in + 150.0) if n_out else r_in
    if n_out:
        r_out = max(r_out, (widest * 0.6 + 30) * n_out / (2 * math.pi) * 1.4)
    pos: dict[str, tuple[float, float]] = {}
    for i, n in enumerate(inner):
        a = 2 * math.pi * i / max(1, n_in)
        pos[n] = (r_in * math.sin(a), -r_in * math.cos(a))
    # outer locks: evenly spaced, in the order of the angle of the finding lock each hangs off,
    # the whole ring turned so that each sits as near that angle as the spacing allows
    def inner_angle(n: str) -> float:
        return 2 * math.pi * root(n) / max(1, n_in)

    step = 2 * math.pi / max(1, n_out)
    turn = math.atan2(sum(math.sin(inner_angle(n) - j * step) for j, n in enumerate(outer)),
                      sum(math.cos(inner_angle(n) - j * step) for j, n in enumerate(outer))) if n_out else 0.0
    for j, n in enumerate(outer):
        a = turn + j * step
        pos[n] = (r_out * math.sin(a), -r_out * math.cos(a))

    xs = [x - sizes[n][0] / 2 for n, (x, _) in pos.items()] + [x + sizes[n][0] / 2 for n, (x, _) in pos.items()]
    ys = [y - sizes[n][1] / 2 for n, (_, y) in pos.items()] + [y + sizes[n][1] / 2 for n, (_, y) in pos.items()]
    title = [f"{alert.kind} {alert.id}", f"hosts: {hosts_text(list(alert.hosts), 8)}"]
    if truncated:
        title.append(f"({truncated} more dependencies not shown)")
    margin, top = 90.0, 20.0 + LINE_H * len(title)
    x0, y0 = min(xs, default=0) - margin, min(ys, default=0) - margin - top
    width = max(max(xs, default=0) + margin - x0, len(max(title, key=len)) * CHAR_W + 40)
    height = max(ys, default=0) + margin - y0

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" viewBox="{_f(x0)} {_f(y0)} {_f(width)} '
           f'{_f(height)}" width="{_f(width)}" height="{_f(height)}" font-family="Helvetica, Arial, sans-serif" '
           f'role="img" aria-label="{escape(" -> ".join(alert.locks))}">',
           "<defs>",
           *(f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
             f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>' for k, c in (("own", RED),
                                                                                               ("other", GREY))),
           "</defs>",
           f"<title>{escape(' / '.join(title))}</title>"]
    for i, line in enumerate(title):
        weight = ' font-weight="bold"' if i == 0 else ""
        out.append(f'<text x="{_f(x0 + width / 2)}" y="{_f(y0 + 20 + i * LINE_H)}" text-anchor="middle" '
                   f'font-size="13"{weight}>{escape(line)}</text>')

    def edge(held: str, taken: str, label: str, own_edge: bool, dashed: bool) -> None:
        (x1, y1), (x2, y2) = pos[held], pos[taken]
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        d = math.hypot(x2 - x1, y2 - y1) or 1.0
        nx, ny = -(y2 - y1) / d, (x2 - x1) / d        # left of the direction of travel
        bend = 28.0 if held != taken else 0.0
        qx, qy = mx + nx * bend, my + ny * bend
        sx, sy = _border(x1, y1, *sizes[held], qx, qy)
        ex, ey = _border(x2, y2, *sizes[taken], qx, qy)
        color, kind = (RED, "own") if own_edge else (GREY, "other")
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        out.append(f'<path class="dep {kind}" d="M{_f(sx)},{_f(sy)} Q{_f(qx)},{_f(qy)} {_f(ex)},{_f(ey)}" '
                   f'fill="none" stroke="{color}" stroke-width="{2 if own_edge else 1.2}"'
                   f'{dash} marker-end="url(#arrow-{kind})">'
                   f"<title>{escape(held)} -> {escape(taken)}</title></path>")
        lx, ly = (sx + 2 * qx + ex) / 4, (sy + 2 * qy + ey) / 4
        for k, line in enumerate(label.split("\n")):
            out.append(f'<text x="{_f(lx)}" y="{_f(ly + (k - 0.3) * 12)}" text-anchor="middle" font-size="10" '
                       f'fill="{"#333" if own_edge else "#666"}" stroke="#fff" stroke-width="3" '
                       f'paint-order="stroke">{escape(line)}</text>')

    for link in others:
        edge(link.held, link.taken, edge_label(link), False, False)
    for i, (held, taken) in enumerate(own):
        if held in pos and taken in pos:
            link = by_pair.get((held, taken))
            edge(held, taken, edge_label(link) if link else "", True,
                 alert.kind == "circular" and i == len(own) - 1)
    mine = set(inner)
    for n, (x, y) in pos.items():
        w, h = sizes[n]
        own_node = n in mine
        out.append(f'<g class="lock{" own" if own_node else ""}" data-lock="{escape(n)}">'
                   f'<rect x="{_f(x - w / 2)}" y="{_f(y - h / 2)}" width="{_f(w)}" height="{_f(h)}" rx="6" '
                   f'fill="#fff" stroke="{RED if own_node else "#666"}" stroke-width="{2 if own_node else 1}"/>')
        for k, line in enumerate(labels[n]):
            out.append(f'<text x="{_f(x)}" y="{_f(y - h / 2 + PAD + LINE_H * (k + 0.8))}" text-anchor="middle" '
                       f'font-size="12" font-family="monospace">{escape(line)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
