"""Tiny inline-SVG drawings for the HTML report: a lock cycle as a ring of names with arrows, a
line chart and a bar chart. No dependencies; every string is escaped."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00",
           "#b82e2e", "#316395")


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def ring(locks: Sequence[str], *, closed: bool = True, title: str = "", highlight_last: bool = True) -> str:
    """The locks on a ring, an arrow from each to the next (and from the last to the first when
    `closed`): locks[i] is held while locks[i+1] is taken. The closing arrow is drawn red."""
    n = len(locks)
    if n == 0:
        return ""
    r = 70 + 14 * max(0, n - 3) if n > 1 else 0
    pad_x, pad_y = 215, 40
    w, h = 2 * (r + pad_x), 2 * (r + pad_y)
    cx, cy = w / 2, h / 2
    pts = [(cx + r * math.sin(2 * math.pi * i / n), cy - r * math.cos(2 * math.pi * i / n)) for i in range(n)]
    out = [f'<svg class="ring" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(w)} {_num(h)}" '
           f'width="{_num(min(w, 720))}" role="img" aria-label="{escape(title or " -> ".join(locks))}">',
           "<defs>"
           '<marker id="ah" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
           '<marker id="ahr" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c00"/></marker>'
           "</defs>"]
    if title:
        out.append(f"<title>{escape(title)}</title>")
    links = n if closed and n > 1 else n - 1
    for i in range(links):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        dx, dy = x2 - x1, y2 - y1
        d = math.hypot(dx, dy) or 1.0
        s, e = 9 / d, 1 - 9 / d
        last = highlight_last and closed and i == links - 1
        color, marker = ("#c00", "ahr") if last else ("#555", "ah")
        # a slight outward bend, so that two-lock cycles show two arrows
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        ox, oy = mx - cx, my - cy
        od = math.hypot(ox, oy) or 1.0
        bend = 18 if n == 2 else 10
        qx, qy = mx + ox / od * bend, my + oy / od * bend
        if n == 2:
            qx, qy = mx + (-dy / d) * bend, my + (dx / d) * bend
        out.append(f'<path d="M{_num(x1 + dx * s)},{_num(y1 + dy * s)} Q{_num(qx)},{_num(qy)} '
                   f'{_num(x1 + dx * e)},{_num(y1 + dy * e)}" fill="none" stroke="{color}" stroke-width="1.6" '
                   f'marker-end="url(#{marker})"/>')
    for i, (x, y) in enumerate(pts):
        out.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="6" fill="{"#c00" if i == 0 and closed else "#333"}"/>')
        anchor = "middle" if abs(x - cx) < 1 else ("start" if x > cx else "end")
        tx = x + (10 if anchor == "start" else -10 if anchor == "end" else 0)
        ty = y + (-12 if y < cy - 1 else 20 if y > cy + 1 else 4)
        if n == 1:
            ty = y - 12
        out.append(f'<text x="{_num(tx)}" y="{_num(ty)}" text-anchor="{anchor}" font-size="12" '
                   f'font-family="monospace"><title>{escape(locks[i])}</title>#{i} {escape(_short(locks[i]))}</text>')
    out.append("</svg>")
    return "".join(out)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(v)
        v += step
    return out


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, width: int = 760, height: int = 260,
               x_label: Callable[[float], str] = _num, y_label: Callable[[float], str] = _num,
               title: str = "") -> str:
    """Lines (one per series) over a shared x axis; a legend when there is more than one."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return '<p class="empty">no data</p>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(max(p[1] for p in pts), 1)
    left, right, top, bottom = 64, 16 + (130 if len(series) > 1 else 0), 14, 34
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (pw * (x - x0) / (x1 - x0) if x1 > x0 else pw / 2)

    def sy(y: float) -> float:
        return top + ph - ph * y / y1

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'role="img" aria-label="{escape(title)}">']
    if title:
        out.append(f"<title>{escape(title)}</title>")
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>')
    for t in _ticks(0, y1):
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{_num(sy(t))}" y2="{_num(sy(t))}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 6}" y="{_num(sy(t) + 4)}" text-anchor="end" font-size="11">'
                   f'{escape(y_label(t))}</text>')
    for t in _ticks(x0, x1, 4):
        out.append(f'<text x="{_num(sx(t))}" y="{height - 12}" text-anchor="middle" font-size="11">'
                   f'{escape(x_label(t))}</text>')
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        s = sorted(s)
        if len(s) == 1:
            out.append(f'<circle cx="{_num(sx(s[0][0]))}" cy="{_num(sy(s[0][1]))}" r="3" fill="{color}"/>')
        else:
            d = " ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in s)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{d}"/>')
        if len(series) > 1:
            ly = top + 14 * i + 8
            out.append(f'<rect x="{width - right + 10}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
                       f'<text x="{width - right + 24}" y="{ly + 1}" font-size="11">{escape(_short(name, 18))}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, width: int = 760, height: int = 220,
              y_label: Callable[[float], str] = _num, title: str = "", color: str = PALETTE[0]) -> str:
    """Vertical bars, one per label (labels thinned out when crowded)."""
    if not values:
        return '<p class="empty">no data</p>'
    left, right, top, bottom = 64, 12, 14, 40
    pw, ph = width - left - right, height - top - bottom
    y1 = max(max(values), 1)
    bw = pw / len(values)
    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
           f'role="img" aria-label="{escape(title)}">']
    if title:
        out.append(f"<title>{escape(title)}</title>")
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>')
    for t in _ticks(0, y1):
        y = top + ph - ph * t / y1
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{_num(y)}" y2="{_num(y)}" stroke="#e4e4e4"/>'
                   f'<text x="{left - 6}" y="{_num(y + 4)}" text-anchor="end" font-size="11">'
                   f'{escape(y_label(t))}</text>')
    every = max(1, math.ceil(len(labels) / 12))
    for i, (lab, v) in enumerate(zip(labels, values)):
        bh = ph * v / y1
        x = left + i * bw
        out.append(f'<rect x="{_num(x + bw * 0.1)}" y="{_num(top + ph - bh)}" width="{_num(bw * 0.8)}" '
                   f'height="{_num(bh)}" fill="{color}"><title>{escape(lab)}: {escape(y_label(v))}</title></rect>')
        if i % every == 0:
            out.append(f'<text x="{_num(x + bw / 2)}" y="{height - 22}" text-anchor="middle" font-size="10">'
                       f'{escape(lab)}</text>')
    out.append("</svg>")
    return "".join(out)
