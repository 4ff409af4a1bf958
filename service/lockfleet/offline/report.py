"""`lockfleet report`: one self-contained HTML page (inline CSS and SVG, nothing fetched) with the
findings (each with its lockdep-style text and its cycle drawn), the aggregates as tables, and
plots of the events over time and of the hold-time distributions."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path

import polars as pl

from ..findings.model import Alert
from . import fmt, svg
from .aggregates import Aggregates
from .analysis import Analysis

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222;
padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:36px}
.meta{color:#666;font-size:13px}
.summary td{padding:2px 14px 2px 0}
.finding{border:1px solid #e0c0c0;border-left:4px solid #c00;border-radius:4px;padding:8px 14px;margin:16px 0;
background:#fffafa}
.finding h3{margin:6px 0;font-size:16px}.finding .id{font-family:monospace;color:#555;font-weight:normal}
pre{background:#f6f6f6;border:1px solid #e4e4e4;padding:10px;overflow-x:auto;font-size:12px;line-height:1.35}
table.data{border-collapse:collapse;font-size:12.5px;margin:8px 0}
table.data th,table.data td{border:1px solid #ddd;padding:3px 8px}
table.data th{background:#f0f0f0;text-align:left}table.data td.n{text-align:right;font-variant-numeric:tabular-nums}
table.data td.s{font-family:monospace}
.note{color:#666;font-size:12.5px}.empty{color:#888;font-style:italic}
.hist{display:inline-block;vertical-align:top;margin:0 12px 12px 0}
nav a{margin-right:14px}
"""

TABLE_TITLES = {
    "classes": "Events per lock class",
    "hosts": "Hosts",
    "hold_times": "Hold times per lock class",
    "edges": "Dependencies (held -> taken)",
    "held_while_taking": "Locks most often held while others are taken",
}
TABLE_NOTES = {
    "classes": "Acquisitions (trylocks included) and releases; a release names no subclass, so it counts on the "
               "bare name.",
    "hosts": "Per host; findings counts the findings the host's events take part in.",
    "hold_times": "From each acquisition paired with its release (per host, thread and lock name, last in first out). "
                  "count, max and mean are exact; p50 and p99 come from a log-scale histogram (16 buckets per power "
                  "of two) and are within 2.2% of the exact nearest-rank values.",
    "edges": "From the same core as the service: times taken, hosts that took it, first and last seen (last to "
             "the second).",
    "held_while_taking": "Times another lock was acquired while this one was held, over how many classes and hosts.",
}


def _table(df: pl.DataFrame, top: int) -> str:
    shown = df.head(top) if top else df
    cols = shown.columns
    numeric = {c: shown.schema[c].is_numeric() and c not in fmt.TS_COLUMNS for c in cols}
    out = ['<table class="data"><thead><tr>', *(f"<th>{escape(c)}</th>" for c in cols), "</tr></thead><tbody>"]
    for row in shown.iter_rows():
        out.append("<tr>")
        for c, v in zip(cols, row):
            cls = "n" if numeric[c] else "s" if c in ("class", "held", "taken", "lock") else ""
            out.append(f'<td class="{cls}">{escape(fmt.cell(c, v))}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    if top and df.height > top:
        out.append(f'<p class="note">the first {top} of {df.height:,} rows</p>')
    return "".join(out)


def _finding(a: Alert) -> str:
    if a.kind == "circular":
        drawing = svg.ring(list(a.locks), closed=True, title=f"{a.kind} {a.id}: " + " -> ".join(a.locks))
    elif a.kind == "irq_inversion":
        drawing = svg.ring(list(a.locks), closed=False, title=f"{a.kind} {a.id}: " + " -> ".join(a.locks))
    else:
        drawing = ""
    text = a.render()
    headline = next((ln.strip() for ln in text.splitlines() if "WARNING" in ln), a.kind)
    return (f'<section class="finding" id="{escape(a.id)}" data-kind="{escape(a.kind)}">'
            f'<h3>{escape(headline)} <span class="id">{escape(a.id)}</span></h3>'
            f'<p class="meta">{escape(a.kind)}; locks: {escape(" -> ".join(a.locks))}; hosts: '
            f'{escape(", ".join(a.hosts) or "-")}; seen {a.count:,} time(s)</p>'
            f"{drawing}<pre>{escape(text)}</pre></section>")


def _timeline(agg: Aggregates) -> str:
    tl = agg.timeline
    if not tl.height:
        return '<p class="empty">no events</p>'
    hosts = tl.group_by("host").agg(pl.col("events").sum()).sort("events", descending=True)["host"].to_list()
    series: dict[str, list[tuple[float, float]]] = {}
    total = tl.group_by("ts_ns").agg(pl.col("events").sum()).sort("ts_ns")
    series["all hosts"] = list(zip(total["ts_ns"].to_list(), total["events"].to_list()))
    if 1 < len(hosts) <= 8:
        for h in hosts:
            sub = tl.filter(pl.col("host") == h).sort("ts_ns")
            series[h] = list(zip(sub["ts_ns"].to_list(), sub["events"].to_list()))
    width = agg.timeline_width_ns
    span = (total["ts_ns"].max() - total["ts_ns"].min()) if total.height else 0
    xl = (lambda x: fmt.when(x)[5:16]) if span >= 86_400 * 10**9 else (lambda x: fmt.when(x)[11:19])
    return (svg.line_chart(series, x_label=xl, y_label=lambda y: fmt.cell("n", int(y)),
                           title="events over time") +
            f'<p class="note">events per {escape(fmt.duration(width))} (UTC, host clocks)</p>')


def _bucket_label(b: int) -> str:
    return "<" + fmt.duration(2 ** (b + 1)) if b == 0 else fmt.duration(2 ** b)


def _hold_plots(agg: Aggregates, classes: int = 6) -> str:
    hist = agg.hold_histogram
    if not hist.height:
        return '<p class="empty">no paired acquire/release</p>'
    out = []
    overall = hist.group_by("bucket").agg(pl.col("count").sum()).sort("bucket")
    lo, hi = int(overall["bucket"].min()), int(overall["bucket"].max())
    counts = dict(zip(overall["bucket"].to_list(), overall["count"].to_list()))
    labels = [_bucket_label(b) for b in range(lo, hi + 1)]
    out.append(svg.bar_chart(labels, [counts.get(b, 0) for b in range(lo, hi + 1)],
                             y_label=lambda y: fmt.cell("n", int(y)), title="hold times, every class"))
    out.append('<p class="note">holds per power-of-two bucket of the hold time (all classes); '
               "below, the classes held most often</p>")
    for i, name in enumerate(agg.hold_times["class"].head(classes).to_list()):
        sub = hist.filter(pl.col("class") == name)
        c = dict(zip(sub["bucket"].to_list(), sub["count"].to_list()))
        out.append(f'<div class="hist"><div class="meta">{escape(name)}</div>' +
                   svg.bar_chart(labels, [c.get(b, 0) for b in range(lo, hi + 1)], width=360, height=170,
                                 y_label=lambda y: fmt.cell("n", int(y)), title=f"hold times of {name}",
                                 color=svg.PALETTE[(i + 1) % len(svg.PALETTE)]) + "</div>")
    return "".join(out)


def render_html(analysis: Analysis, paths: list[str], *, top: int = 50, title: str = "") -> str:
    agg = analysis.aggregates
    alerts = analysis.alerts
    s = analysis.summary()
    title = title or "lockfleet report"
    rows = [("sources", ", ".join(paths)), ("events", f"{s['events']:,}"), ("files", f"{s['files']:,}"),
            ("hosts", f"{agg.hosts.height:,}" if agg else "-"), ("lock classes", f"{s['locks']:,}"),
            ("dependencies", f"{s['edges']:,}"), ("findings", f"{len(alerts):,}")]
    if agg is not None and agg.hosts.height:
        rows.append(("time range", f"{fmt.when(agg.hosts['first_ts_ns'].min())} .. "
                                   f"{fmt.when(agg.hosts['last_ts_ns'].max())} UTC"))
    sel = analysis.selection
    if not sel.everything:
        rows.append(("selection", "; ".join(x for x in (
            f"since {fmt.when(sel.since)}" if sel.since is not None else "",
            f"until {fmt.when(sel.until)}" if sel.until is not None else "",
            f"hosts {', '.join(sorted(sel.hosts))}" if sel.hosts is not None else "") if x)))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{escape(title)}</h1>",
           f'<p class="meta">generated by lockfleet report at '
           f'{escape(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}</p>',
           '<nav><a href="#findings">findings</a><a href="#time">over time</a><a href="#holds">hold times</a>'
           '<a href="#tables">tables</a></nav>',
           '<table class="summary">', *(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows),
           "</table>",
           f'<h2 id="findings">Findings ({len(alerts)})</h2>']
    if alerts:
        out.append('<table class="data"><thead><tr><th>#</th><th>kind</th><th>finding</th><th>locks</th>'
                   "<th>hosts</th><th>seen</th></tr></thead><tbody>")
        for i, a in enumerate(alerts, 1):
            out.append(f'<tr><td class="n">{i}</td><td>{escape(a.kind)}</td>'
                       f'<td class="s"><a href="#{escape(a.id)}">{escape(a.id)}</a></td>'
                       f'<td class="s">{escape(" -> ".join(a.locks))}</td><td>{escape(", ".join(a.hosts))}</td>'
                       f'<td class="n">{a.count:,}</td></tr>')
        out.append("</tbody></table>")
        out += [_finding(a) for a in alerts]
    else:
        out.append('<p class="empty">no findings</p>')
    if agg is not None:
        out += ['<h2 id="time">Events over time</h2>', _timeline(agg),
                '<h2 id="holds">Hold times</h2>', _hold_plots(agg),
                '<h2 id="tables">Tables</h2>']
        for name in Aggregates.TABLES:
            df = getattr(agg, name)
            if name == "edges":
                df = df.drop("host_list")
            out += [f'<h3 id="t-{name}">{escape(TABLE_TITLES[name])} ({df.height:,})</h3>',
                    f'<p class="note">{escape(TABLE_NOTES[name])}</p>', _table(df, top)]
    out.append("</body></html>")
    return "\n".join(out)


def write_report(analysis: Analysis, paths: list[str], output: str | Path, **kw) -> Path:
    out = Path(output)
    out.write_text(render_html(analysis, paths, **kw), encoding="utf-8")
    return out
