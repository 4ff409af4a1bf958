#!/usr/bin/env python3
"""Turn one pytest-benchmark JSON (from `make bench`) into benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/report.py benchmarks/results/<commit>.json -o benchmarks/RESULTS.md

Everything in the output comes from that one JSON: the commit pytest-benchmark recorded, the
machine (nproc, load average at start and end from conftest.py's `lockfleet` section), the command,
then one table of the issue's targets (engine figure, baseline figure from the same run, ratio,
target, met?), a table per benchmark group with wall and CPU-time rates, and the standalone benches
(ingest, analyze, edge mode, instrumentation), then the scale run's section when its JSON exists
(`make bench-scale`: benchmarks/results/scale-<commit>.json, see --scale), then RESULTS-other.md (hand-written results of the
benches this run does not make, kept apart and labelled so). A benchmark missing from the JSON shows as "not run";
the report never fails on a partial run.

"Met?" is judged on wall-clock figures; where only the CPU-time figure meets the target (the
machine is shared), the cell says so. Exit status: 0 written, 2 unreadable input, 1 other failure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ENGINE = "lockfleet engine"
RX = "rustworkx check_cycle"
W1C_TARGET = 1.5e6          # edges/s: the plain C Pearce-Kelly's rate
W5_TARGET = 1.0e6           # edges/s
REPEAT_NS_TARGET = 20.0     # ns/event, 64 threads interleaved
W2C_TIME_RATIO = 1.5        # W2c time / W2 time
BATCH_SPREAD = 20.0         # max batch / median batch, W2c
SMALL_BATCH_RATIO = 0.5     # 256-row rate / 64k-row rate (within 2x)
MEM_EDGE, MEM_CLASS = 128, 256


# --------------------------------------------------------------------------------------------- data


class Bench:
    def __init__(self, d: dict):
        self.d = d
        self.name = d.get("name", "?")
        self.group = d.get("group") or ""
        self.stats = d.get("stats") or {}
        self.info = d.get("extra_info") or {}

    def get(self, key, default=None):
        return self.info.get(key, default)

    @property
    def median(self) -> float | None:
        return self.stats.get("median")

    @property
    def cpu_median(self) -> float | None:
        c = self.info.get("cpu_s")
        if isinstance(c, list) and c:
            return statistics.median(c)
        return self.info.get("cpu_s_median")

    @property
    def units(self) -> float | None:
        return self.info.get("units")

    def rate(self, cpu: bool = False) -> float | None:
        t = self.cpu_median if cpu else self.median
        if not self.units or not t:
            return None
        return self.units / t

    def label(self) -> str:
        s = self.info.get("impl", self.name)
        notes = []
        if self.info.get("partial"):
            notes.append(f"partial: {self.info.get('done', 0):,}/{self.info.get('total', 0):,} "
                         f"{self.info.get('done_unit', self.info.get('unit', ''))} in "
                         f"{self.median or 0:.1f} s")
        if self.info.get("refuses_cycle_edges"):
            notes.append(f"refuses cycle-closing edges: {self.info.get('refused', 0):,} refused")
        return s + (f" ({'; '.join(notes)})" if notes else "")


def load(path: Path) -> dict:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or "benchmarks" not in doc:
        raise ValueError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' key)")
    return doc


def find(benches: list[Bench], workload: str, case: str, impl: str | None = None) -> Bench | None:
    for b in benches:
        if b.get("workload") == workload and b.get("case") == case and (impl is None or b.get("impl") == impl):
            return b
    return None


def baselines_of(benches: list[Bench], workload: str, case: str = "new") -> list[Bench]:
    return [b for b in benches if b.get("workload") == workload and b.get("case") == case
            and b.get("impl") != ENGINE and b.rate()]


# ------------------------------------------------------------------------------------------- format


def rate(x: float | None, unit: str = "/s") -> str:
    if x is None or x != x:
        return "n/a"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}{unit}"
    return f"{x:.3g}{unit}"


def secs(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def ratio(x: float | None) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.2f}x" if x < 10 else f"{x:.0f}x"


def met(wall_ok: bool | None, cpu_ok: bool | None = None) -> str:
    if wall_ok is None:
        return "not run"
    if wall_ok:
        return "yes"
    if cpu_ok:
        return "NO (yes on CPU time)"
    return "NO"


def div(a, b):
    return a / b if a is not None and b else None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in r) + " |")
    return out


NOT_RUN = ["not run", "—", "—"]


# ------------------------------------------------------------------------------------------ targets


def engine_cell(b: Bench, unit="edges/s") -> str:
    return (f"{rate(b.rate(), ' ' + unit)} ({secs(b.median)} median of {b.stats.get('rounds', '?')}; "
            f"CPU time {rate(b.rate(True), ' ' + unit)})")


def peers_row(benches, workload, label, case="new") -> list[str]:
    e = find(benches, workload, case, ENGINE)
    base = baselines_of(benches, workload, "new")
    if e is None or not e.rate():
        return [label, "not run", "—", "—", "ahead of every peer (ratio >= 1)", "not run"]
    if not base:
        return [label, engine_cell(e), "no baseline run", "—", "ahead of every peer (ratio >= 1)", "—"]
    best = max(base, key=lambda b: b.rate())
    r, rc = div(e.rate(), best.rate()), div(e.rate(True), best.rate(True))
    return [label, engine_cell(e), f"best of {len(base)}: {best.label()}: {rate(best.rate(), ' edges/s')} "
            f"(CPU time {rate(best.rate(True), ' edges/s')})", f"{ratio(r)} (CPU {ratio(rc)})",
            "ahead of every peer (ratio >= 1)", met(r >= 1 if r else None, rc is not None and rc >= 1)]


def target_rows(benches: list[Bench]) -> list[list[str]]:
    rows = []
    # W1c absolute rate
    e, rx = find(benches, "W1c", "new", ENGINE), find(benches, "W1c", "new", RX)
    if e and e.rate():
        rows.append(["W1c new edges (back edges where they fall)", engine_cell(e),
                     f"{rx.label()}: {rate(rx.rate(), ' edges/s')}" if rx else "—",
                     ratio(div(e.rate(), rx.rate() if rx else None)), f">= {rate(W1C_TARGET, ' edges/s')}",
                     met(e.rate() >= W1C_TARGET, (e.rate(True) or 0) >= W1C_TARGET)])
    else:
        rows.append(["W1c new edges", *NOT_RUN, f">= {rate(W1C_TARGET, ' edges/s')}", "not run"])
    # W5 rate and findings == inversions
    e, rx = find(benches, "W5", "new", ENGINE), find(benches, "W5", "new", RX)
    if e and e.rate():
        rows.append(["W5 messy application", engine_cell(e),
                     f"{rx.label()}: {rate(rx.rate(), ' edges/s')}" if rx else "—",
                     ratio(div(e.rate(), rx.rate() if rx else None)), f">= {rate(W5_TARGET, ' edges/s')}",
                     met(e.rate() >= W5_TARGET, (e.rate(True) or 0) >= W5_TARGET)])
        st = e.get("stats") or {}
        f, inv = st.get("alerts_circular"), st.get("inversions")
        rows.append(["W5 findings vs inversions", f"{f} circular findings, {inv} inversions, "
                     f"{st.get('witnesses')} witnesses",
                     f"rustworkx refused {rx.get('refused'):,} edges of the same stream" if rx else "—",
                     "—", "findings == inversions", met(f == inv if f is not None else None)])
    else:
        rows.append(["W5 messy application", *NOT_RUN, f">= {rate(W5_TARGET, ' edges/s')}", "not run"])
    # W2c vs W2 time; batch spread; memory
    w2, w2c = find(benches, "W2", "new", ENGINE), find(benches, "W2c", "new", ENGINE)
    if w2 and w2c:
        r, rc = div(w2c.median, w2.median), div(w2c.cpu_median, w2.cpu_median)
        rows.append(["W2c all new edges vs W2 (same run)",
                     f"W2c {secs(w2c.median)} (CPU {secs(w2c.cpu_median)}; {rate(w2c.rate(), ' edges/s')})",
                     f"W2 {secs(w2.median)} (CPU {secs(w2.cpu_median)}; {rate(w2.rate(), ' edges/s')})",
                     f"{ratio(r)} (CPU {ratio(rc)})", f"W2c time <= {W2C_TIME_RATIO}x W2's",
                     met(r <= W2C_TIME_RATIO, rc is not None and rc <= W2C_TIME_RATIO)])
    else:
        rows.append(["W2c vs W2", *NOT_RUN, f"<= {W2C_TIME_RATIO}x", "not run"])
    if w2c and w2c.get("batch_median_s"):
        mx, md = w2c.get("batch_max_s"), w2c.get("batch_median_s")
        cmx, cmd = w2c.get("batch_cpu_max_s"), w2c.get("batch_cpu_median_s")
        r, rc = div(mx, md), div(cmx, cmd)
        rows.append([f"W2c slowest of {w2c.get('batches')} 64k-row batches",
                     f"max {secs(mx)}, median {secs(md)} (CPU max {secs(cmx)}, median {secs(cmd)})", "—",
                     f"{ratio(r)} (CPU {ratio(rc)})", f"max <= {BATCH_SPREAD:g}x median",
                     met(r <= BATCH_SPREAD, rc is not None and rc <= BATCH_SPREAD)])
    if w2c and w2c.get("stats"):
        st = w2c.get("stats")
        cb, E, C = st.get("core_bytes"), st.get("edges"), st.get("locks")
        if cb and E and C:
            bud = MEM_EDGE * E + MEM_CLASS * C
            rows.append(["W2c core memory (witnesses included)",
                         f"{cb / 2**20:.1f} MiB for {E:,} edges, {C:,} classes = {(cb - MEM_CLASS * C) / E:.0f} B/edge "
                         f"after 256 B/class ({cb / E:.0f} B/edge all charged to edges); {st.get('witnesses')} witnesses",
                         "—", f"{cb / bud:.2f} of budget",
                         f"<= {MEM_EDGE} B/edge + {MEM_CLASS} B/class = {bud / 2**20:.1f} MiB", met(cb <= bud)])
    # repeats, 64 threads interleaved
    e64 = find(benches, "W1", "repeats 64 threads interleaved", ENGINE)
    e4 = find(benches, "W1", "repeats 4 threads", ENGINE)
    st = find(benches, "W1", "repeats")
    if e64 and e64.median:
        ns, nsc = 1e9 / e64.rate(), 1e9 / e64.rate(True) if e64.rate(True) else None
        base = []
        if e4 and e4.rate():
            base.append(f"same repeats from 4 threads: {1e9 / e4.rate():.1f} ns/event "
                        f"(CPU {1e9 / e4.rate(True):.1f})")
        if st and st.rate():
            base.append(f"{st.label()}: {1e9 / st.rate():.1f} ns/event (4 events per probe)")
        rows.append([f"W1 repeats, 64 threads interleaved ({e64.units:,} events)",
                     f"{ns:.1f} ns/event (CPU time {nsc:.1f} ns/event)", "; ".join(base) or "—",
                     f"vs set {ratio(div(e64.rate(), st.rate() if st else None))}",
                     f"<= {REPEAT_NS_TARGET:g} ns/event",
                     met(ns <= REPEAT_NS_TARGET, nsc is not None and nsc <= REPEAT_NS_TARGET)])
    else:
        rows.append(["W1 repeats, 64 threads interleaved", *NOT_RUN, f"<= {REPEAT_NS_TARGET:g} ns/event", "not run"])
    # peers, every workload
    for w, lab in (("W1", "W1 new edges"), ("W1c", "W1c new edges"), ("W5", "W5 new edges"), ("W2", "W2 new edges"),
                   ("W2c", "W2c new edges")):
        rows.append(peers_row(benches, w, f"{lab} vs peers"))
    big = "new rows=65536"
    for w in ("W3a", "W3b"):
        e = find(benches, w, big, ENGINE) or find(benches, w, "new", ENGINE)
        rx = find(benches, w, "new", RX)
        small = [b for b in benches if b.get("workload") == w and b.get("impl") == ENGINE
                 and str(b.get("case", "")).startswith("new rows=") and b.get("case") != big]
        lab = {"W3a": "W3a tail-first chain", "W3b": "W3b dense layers"}[w]
        if e and rx and e.rate() and rx.rate():
            r, rc = div(e.rate(), rx.rate()), div(e.rate(True), rx.rate(True))
            rows.append([f"{lab}, 64k-row batches", engine_cell(e), f"{rx.label()}: {rate(rx.rate(), ' edges/s')}",
                         f"{ratio(r)} (CPU {ratio(rc)})", ">= rustworkx (ratio >= 1)",
                         met(r >= 1, rc is not None and rc >= 1)])
        else:
            rows.append([f"{lab}, 64k-row batches", *NOT_RUN, ">= rustworkx", "not run"])
        for s in small:
            rows_n = s.get("case").split("=", 1)[1]
            r = div(s.rate(), e.rate() if e else None)
            rc = div(s.rate(True), e.rate(True) if e else None)
            vs = div(s.rate(), rx.rate() if rx else None)
            rows.append([f"{lab}, {rows_n}-row batches", engine_cell(s),
                         f"same engine at 64k rows: {rate(e.rate() if e else None, ' edges/s')}; "
                         f"vs rustworkx {ratio(vs)}", f"{ratio(r)} (CPU {ratio(rc)})",
                         f"within 2x of the 64k-row rate (>= {SMALL_BATCH_RATIO:g})",
                         met(r >= SMALL_BATCH_RATIO if r is not None else None,
                             rc is not None and rc >= SMALL_BATCH_RATIO)])
    return rows


# ---------------------------------------------------------------------------------------- the rest


def group_tables(benches: list[Bench]) -> list[str]:
    out = []
    groups: dict[str, list[Bench]] = {}
    for b in benches:
        if b.get("case") == "script":
            continue
        groups.setdefault(b.group or "(no group)", []).append(b)
    for g, bs in groups.items():
        out += [f"### {g}", ""]
        rows = []
        for b in sorted(bs, key=lambda b: -(b.rate() or 0)):
            unit = b.get("unit", "")
            notes = []
            for k in ("refused", "closing", "cycles", "new", "alerts_returned"):
                if k in b.info:
                    notes.append(f"{k} {b.info[k]:,}")
            st = b.get("stats") or {}
            for k in ("alerts_circular", "inversions", "witnesses", "graph_recomputes", "edges", "locks"):
                if k in st:
                    notes.append(f"{k} {st[k]:,}")
            if b.get("partial"):
                notes.append(f"partial ({b.get('done', 0):,}/{b.get('total', 0):,} {b.get('done_unit', unit)}, "
                             f"box {b.get('budget_s')} s)")
            rows.append([b.name, b.label().split(" (")[0], b.stats.get("rounds", "?"), secs(b.median),
                         secs(b.stats.get("min")), secs(b.cpu_median),
                         f"{b.units:,.0f} {unit}" if b.units else "—",
                         rate(b.rate(), f" {unit}/s"), rate(b.rate(True), f" {unit}/s"), "; ".join(notes)])
        out += table(["test", "implementation", "rounds", "median", "min", "CPU median", "units",
                      "rate (wall)", "rate (CPU time)", "notes"], rows)
        out.append("")
    return out


def script_sections(benches: list[Bench]) -> list[str]:
    out = []
    scripts = {b.get("workload"): b for b in benches if b.get("case") == "script"}
    if not scripts:
        return ["Not run in this run.", ""]
    for name, b in scripts.items():
        out += [f"### {b.get('impl')}", "", f"    {b.get('command')}", "",
                f"(whole script, generation included: {secs(b.median)} wall, {secs(b.cpu_median)} CPU)", ""]
        fig = b.get("figures")
        if name == "ingest" and isinstance(fig, list):
            out += table(["--fsync", "streams", "batches", "events", "seconds", "events/s", "log MB/s"],
                         [[r.get("fsync"), r.get("streams"), r.get("batches"), f"{r.get('events', 0):,}",
                           r.get("seconds"), f"{r.get('events_per_s', 0):,}", r.get("mb_per_s")] for r in fig])
        elif name == "push" and isinstance(fig, list):
            out += table(["streams", "compression", "events", "bare events/s", "serve events/s", "ratio (send phase)",
                          "ratio (whole command)", "server CPU ratio", "log MB", "rounds' ratios"],
                         [[r.get("streams"), r.get("compression"), f"{r.get('events', 0):,}",
                           f"{r.get('bare_events_per_s', 0):,}", f"{r.get('serve_events_per_s', 0):,}",
                           ratio(r.get("ratio")), ratio(r.get("command_ratio")), ratio(r.get("cpu_ratio")),
                           r.get("log_mb"), ", ".join(f"{x:.2f}" for x in r.get("round_ratios", []))] for r in fig])
        elif name == "analyze" and isinstance(fig, dict):
            runs = fig.get("runs", [])
            ceil = runs[0]["seconds"] if runs else None
            out.append(f"{fig.get('events', 0):,} events in {fig.get('files')} files")
            out.append("")
            out += table(["run", "seconds", "events/s", "peak RSS", "time vs ceiling"],
                         [[r["run"], f"{r['seconds']:.2f}", f"{r['events_per_s']:,.0f}",
                           f"{r['peak_rss_kib'] / 1024:.0f} MiB", ratio(div(r["seconds"], ceil))] for r in runs])
        elif name == "instrument" and isinstance(fig, dict):
            out += table(["case", "ns/pair", "CPU ns/pair", "overhead ns", "overhead CPU ns"],
                         [[r.get("case"), f"{r.get('ns_per_pair', 0):.0f}", f"{r.get('cpu_ns_per_pair', 0):.0f}",
                           f"{r['overhead_ns']:.0f}" if "overhead_ns" in r else "",
                           f"{r['overhead_cpu_ns']:.0f}" if "overhead_cpu_ns" in r else ""]
                          for r in fig.get("overhead", [])])
            out.append("")
            out += table(["Agent into lockfleet serve", "events", "seconds", "events/s", "CPU s"],
                         [[r.get("case"), f"{r.get('events', 0):,}", f"{r.get('seconds', 0):.2f}",
                           f"{r.get('events_per_s', 0):,.0f}", f"{r.get('cpu_s', 0):.2f}"]
                          for r in fig.get("throughput", [])])
        else:
            out += ["```"] + list(b.get("stdout") or []) + ["```"]
        out.append("")
    return out


def mib(x) -> str:
    return f"{x / 2**20:,.1f} MiB" if isinstance(x, (int, float)) else "?"


def scale_section(doc: dict, source: str = "") -> list[str]:
    """The scale run (`make bench-scale`, bench_scale.py's JSON): the cluster at each
    size, then the engine's memory per host with the sketch vs. the baseline build."""
    la = lambda v: " ".join(f"{x:.1f}" for x in v) if v else "?"
    out = ["## The cluster at fleet scale: `make bench-scale`", "",
           f"From `{source}` (commit `{doc.get('commit', '?')}`, started {doc.get('started_utc', '?')} UTC, "
           f"nproc {doc.get('nproc', '?')}, load average {la(doc.get('loadavg_start'))} at start, "
           f"{la(doc.get('loadavg_end'))} at end). Every role a real process on this shared machine: "
           "a NATS JetStream cluster, two gateways, two workers, one authority; edge-mode hosts multiplexed "
           "on asyncio pusher processes, alternating the gateways (benchmarks/bench_cluster.py).", ""]
    runs = doc.get("cluster") or []
    if runs:
        cols = [f"{r.get('hosts', 0):,} hosts" for r in runs]
        g = lambda k: [r.get(k) for r in runs]

        def cell(v, fmt) -> str:
            if v is None or (isinstance(v, tuple) and None in v):
                return "?"
            try:
                return fmt(v)
            except (TypeError, ValueError, IndexError):   # a partial or older run: never fail the report
                return "?"

        def row(label, vals, fmt=str):
            return [label] + [cell(v, fmt) for v in vals]

        first = runs[0]
        out.append(f"Each host ships one shipment: {first.get('deps_per_host')} dependencies of the fleet's common "
                   f"order ({first.get('pool')} dependencies between {first.get('classes')} classes), as "
                   f"`export_new` makes them; NATS nodes {first.get('nats_nodes')}, {first.get('partitions')} "
                   f"partitions, {first.get('pusher_processes')} pusher processes x "
                   f"{first.get('streams_per_process')} concurrent Push calls.")
        out.append("")
        rss = lambda name: [(r.get("rss_mib") or {}).get(name) for r in runs]
        tables = [r.get("authority_core_bytes_by_table") or {} for r in runs]
        out += table(["figure", *cols], [
            row("synthetic rows shipped", g("shipped_rows"), lambda v: f"{v:,}"),
            row("push through the two gateways (s)", g("push_seconds")),
            row("shipments/s through the gateways", g("shipments_per_second")),
            row("authority: first push to caught up (s)", g("authority_total_seconds")),
            row("authority: caught up after the last ack (s)", g("authority_caught_up_seconds_after_push")),
            row("authority rows/s", g("authority_rows_per_second"), lambda v: f"{v:,.0f}"),
            row("authority's largest lag (rows acked, not applied)", g("max_lag_rows"), lambda v: f"{v:,}"),
            row("closing dependency -> alert on LF_ALERTS, median (s)", g("closing_to_published_median_s")),
            row("closing dependency -> alert, each (s)", g("closing_to_published_seconds"),
                lambda v: ", ".join(f"{x:.2f}" for x in v)),
            row("authority RSS at the end / peak", [(x, r.get("authority_peak_rss_mib")) for x, r in
                                                    zip(rss("authority"), runs)],
                lambda v: f"{v[0]:,.0f} / {v[1]:,.0f} MiB"),
            row("authority RSS per host", g("authority_rss_bytes_per_host"), lambda v: f"{v / 1024:,.1f} KiB"),
            row("authority core memory", g("authority_core_bytes"), mib),
            row("authority core memory per host", g("authority_core_bytes_per_host"), lambda v: f"{v:,} B"),
            row("  of which chains (bounded)", [t.get("chains") for t in tables], mib),
            row("  of which threads (live only)", [t.get("threads") for t in tables], mib),
            row("  of which hosts of dependencies + sketches", [(t.get("edge_hosts") or 0) + (t.get("host_sketches") or 0)
                                                          for t in tables], mib),
            row("  of which edges + adjacency (the graph)", [(t.get("edges") or 0) + (t.get("adjacency") or 0)
                                                           for t in tables], mib),
            row("authority: dependencies, classes", [(r.get("authority_edges"), r.get("authority_locks")) for r in runs],
                lambda v: f"{v[0]:,}, {v[1]:,}"),
            row("authority: threads kept / dropped", [(r.get("authority_threads"), r.get("authority_threads_dropped"))
                                                     for r in runs], lambda v: f"{v[0]:,} / {v[1]:,}"),
            row("authority: chains kept, flushes", [(r.get("authority_chains"), r.get("authority_chain_flushes"))
                                                   for r in runs], lambda v: f"{v[0]:,}, {v[1]}"),
            row("authority: dependencies with a host sketch", g("authority_host_sketches"), lambda v: f"{v:,}"),
            row("gateway RSS (each)", [((r.get("rss_mib") or {}).get("gateway-1"), (r.get("rss_mib") or {}).get("gateway-2"))
                                       for r in runs], lambda v: f"{v[0]:,.0f} / {v[1]:,.0f} MiB"),
            row("worker RSS (each)", [((r.get("rss_mib") or {}).get("worker-1"), (r.get("rss_mib") or {}).get("worker-2"))
                                      for r in runs], lambda v: f"{v[0]:,.0f} / {v[1]:,.0f} MiB"),
            row("push failures", g("push_failures")),
        ])
        out.append("")
    mem = doc.get("memory") or {}
    if mem.get("runs"):
        out += ["### The authority's engine memory per host: the host sketch and bounded tables vs. before", "",
                f"`bench_fleet_memory.py`: the same fleet ({mem.get('deps_per_host')} dependencies a host from "
                f"{mem.get('pool')} shared ones) fed to one Engine in-process, in this build and in "
                f"`{mem.get('baseline_commit', '-')}` built in a temporary worktree; each size in a process of its own.", ""]
        out += table(["build", "hosts", "core memory", "per host", "RSS growth per host", "threads kept", "chains",
                      "hosts of deps + sketches", "threads table", "ingest (s)"],
                     [[r.get("build", "?"), f"{r['hosts']:,}", mib(r["core_bytes"]), f"{r['core_bytes_per_host']:,} B",
                       f"{r['rss_growth_bytes_per_host']:,} B", f"{r['threads']:,}", f"{r['chains']:,}",
                       mib((r["core_bytes_by_table"].get("edge_hosts") or 0)
                           + (r["core_bytes_by_table"].get("host_sketches") or 0)),
                       mib(r["core_bytes_by_table"].get("threads")), f"{r['seconds']}"]
                      for r in mem["runs"]])
        out.append("")
    return out


def demote(md: str) -> str:
    """Headings one level down (outside fenced code), to sit inside RESULTS.md."""
    out, fenced = [], False
    for ln in md.splitlines():
        if ln.startswith("```"):
            fenced = not fenced
        if not fenced and ln.startswith("#") and ln.lstrip("#").startswith(" ") and len(ln) - len(ln.lstrip("#")) < 6:
            ln = "#" + ln
        out.append(ln)
    return "\n".join(out)


def render(doc: dict, source: str = "", other: str = "", scale: dict | None = None, scale_source: str = "") -> str:
    benches = [Bench(d) for d in doc.get("benchmarks", [])]
    ci = doc.get("commit_info") or {}
    mi = doc.get("machine_info") or {}
    lf = doc.get("lockfleet") or {}
    cpu = (mi.get("cpu") or {}).get("brand_raw", "?") if isinstance(mi.get("cpu"), dict) else "?"
    la = lambda v: " ".join(f"{x:.2f}" for x in v) if v else "?"
    commit = ci.get("id", "?")
    quick = lf.get("quick")
    out = [
        "# lockfleet benchmarks: results",
        "",
        "Generated by `benchmarks/report.py` from one pytest-benchmark run (`make bench`)"
        + (f", JSON `{source}`" if source else "") + ". Do not edit by hand: re-run `make bench`.",
        "",
        f"- **Commit** `{commit[:12]}` on branch `{ci.get('branch', '?')}`"
        + (" **with uncommitted changes**" if ci.get("dirty") else "") + f"; run started {lf.get('started_utc', doc.get('datetime', '?'))} UTC",
        f"- **Sizes**: {'QUICK (BENCH_QUICK=1: small sizes, a smoke check; figures not comparable to targets)' if quick else 'full (workloads.FULL)'}",
        f"- **Machine**: nproc {lf.get('nproc', '?')} (affinity {lf.get('affinity', '?')}), {cpu}, "
        f"{(lf.get('mem_total_kib') or 0) / 2**20:.0f} GiB; {mi.get('python_implementation', '')} "
        f"{mi.get('python_version', '')} on {mi.get('system', '')} {mi.get('release', '')}",
        f"- **Load average** (1, 5, 15 min) at start {la(lf.get('loadavg_start'))}, at end {la(lf.get('loadavg_end'))}. "
        "The machine is shared with other engineers' builds and tests: wall-clock figures are depressed and "
        "noisy, so every figure also has its process CPU time, and the ratios (engine vs baseline, measured "
        "side by side in this run) are the figures to trust.",
        f"- **Command**: `{lf.get('command', '?')}` ({lf.get('wall_s', '?')} s wall, {lf.get('cpu_s', '?')} s CPU)",
        "",
        "## Targets",
        "",
        "Engine figure, the baseline measured in the same run, their ratio, the target, and whether it is "
        "met (on wall-clock time; \"NO (yes on CPU time)\" when only the CPU-time figure meets it).",
        "",
    ]
    out += table(["target", "engine", "baseline (same run)", "ratio", "target", "met?"], target_rows(benches))
    out += [
        "",
        "## How it is timed",
        "",
        "- The engine gets pre-built Arrow event batches (64k rows unless stated; 4 rows per dependency, "
        "per-batch lock dictionaries, as an agent sends them): its event decoding is inside its timer. "
        "Each new-edge round starts from a fresh `Engine()` built outside the timer, after one untimed "
        "warm-up round (W2/W2c: one round, no warm-up); rates are distinct new edges / median round time.",
        "- Graph baselines get Python int pairs converted before the timer and an empty graph built "
        "before it; only the inserts are timed. They are time-boxed (networkx and the reference core one round, "
        "rustworkx as many rounds as the engine except on W2/W2c; \"partial\" gives how far "
        "they got: a prefix rate flatters a graph baseline, whose cost per edge grows with the graph).",
        "- rustworkx `PyDiGraph(check_cycle=True)` **refuses** an edge that would close a cycle "
        "(`DAGWouldCycle`; counted as refused, not added); it runs on the same stream as the engine, "
        "which keeps such edges and reports them. networkx (`has_path` before `add_edge`) and the Python "
        "reference core (the engine's own batches, decoded in Python) keep them. No Pearce-Kelly "
        "implementation is run here.",
        "- W1 repeats: the engine holds W1's new edges (ingested untimed), then each round is one pass "
        "over all repeats; ns/event = median pass / events.",
        "- CPU time is the process's (`time.process_time()` per round, in extra_info `cpu_s`).",
        "",
        "## Every benchmark",
        "",
    ]
    out += group_tables(benches)
    out += ["## Standalone benches (same run)", ""]
    out += script_sections(benches)
    if scale:
        out += scale_section(scale, scale_source)
    if other.strip():
        out += ["", demote(other.strip())]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", help="the pytest-benchmark JSON of one run (--benchmark-json)")
    ap.add_argument("-o", "--out", default="-", help="markdown output file (default: stdout)")
    ap.add_argument("--other", default=str(Path(__file__).resolve().parent / "RESULTS-other.md"),
                    help="hand-written results of benches outside this run, appended under their own heading "
                         "(default: RESULTS-other.md beside this script; '' for none)")
    ap.add_argument("--scale", default=None,
                    help="the scale run's JSON (make bench-scale); default: the newest benchmarks/results/scale-*.json, "
                         "'' for none")
    args = ap.parse_args(argv)
    path = Path(args.json)
    scale, scale_src = None, ""
    if args.scale is None:
        found = sorted((Path(__file__).resolve().parent / "results").glob("scale-*.json"),
                       key=lambda p: p.stat().st_mtime)
        args.scale = str(found[-1]) if found else ""
    if args.scale:
        try:
            scale = json.loads(Path(args.scale).read_text())
        except (OSError, ValueError) as e:
            print(f"report.py: cannot read {args.scale}: {e}", file=sys.stderr)
            return 2
        sp, cwd = Path(args.scale).resolve(), Path.cwd().resolve()
        scale_src = sp.relative_to(cwd).as_posix() if sp.is_relative_to(cwd) else str(sp)
    try:
        doc = load(path)
    except (OSError, ValueError) as e:
        print(f"report.py: cannot read {path}: {e}", file=sys.stderr)
        return 2
    src = path.as_posix()
    other = ""
    if args.other and Path(args.other).exists():
        other = Path(args.other).read_text()
    md = render(doc, src, other, scale, scale_src)
    if args.out == "-":
        sys.stdout.write(md)
    else:
        Path(args.out).write_text(md)
        print(f"report.py: wrote {args.out} from {src}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
