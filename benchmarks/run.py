#!/usr/bin/env python3
"""lockfleet's earlier benchmark runner: the engine and the baselines, side by side, one run.
(`make bench` now runs the pytest-benchmark suites in this folder and report.py; this script is
kept for its child-process RSS figures and `--only` runs.)

    .venv/bin/python benchmarks/run.py                 # full sizes (a few minutes)
    .venv/bin/python benchmarks/run.py --quick         # CI smoke sizes (< 30 s)
    .venv/bin/python benchmarks/run.py --only W1,W3a --json out.json

For each workload (see workloads.py) the parent process generates the edge stream, then:
- the engine runs in a child process (a fresh interpreter, so that RSS and peak RSS are its own):
  the Arrow event batches (64k rows) are built first, then only `Engine.ingest` is timed, phase by
  phase; memory is the RSS growth from just before `Engine()` to the end (VmRSS, /proc/self/status)
  unless `eng.stats()` reports memory itself; peak RSS is the child's VmHWM (it includes the
  pre-built batches, reported alongside);
- the baselines run in the parent, time-boxed (`--budget` seconds each), on the same stream.
Then one table: workload | engine | best baseline in this run | ratio | field figure | target | met?

Nothing is asserted: the table reports. Partial baselines say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import baselines as bl  # noqa: E402
import numpy as np  # noqa: E402
import workloads as wk  # noqa: E402

ALL = ["W1", "W2", "W3a", "W3b"]
HOST = "bench-1"
TS0 = 1_700_000_000_000_000_000
TS_STEP = 100

# Figures from the issue ("where the field stands", 2 cores, graph-level edge streams) and targets.
FIELD = {
    "W1 new": ("C Pearce-Kelly 1.5M edges/s (abseil GraphCycles 0.99M/s)", 1.5e6),
    "W1 repeats": ("C open-addressing edge set, batched: 114M obs/s", 114e6),
    "W2 new": ("every approach <= 30k edges/s", 30e3),
    "W3a": ("rustworkx check_cycle 56k edges/s", 56e3),
    "W3b": ("rustworkx check_cycle 3.7M edges/s", 3.7e6),
}
TARGET_W1_NEW = 1.5e6            # edges/s: at least plain C PK
TARGET_W1_REP = 50e6             # events/s on one core (< 20 ns/event)
TARGET_W2_NEW = 2_000_000 / 4.0  # edges/s: all 2M new edges in under 4 s
TARGET_W3A = 56e3 / 2            # within 2x of the best field figure
TARGET_W3B = 3.7e6 / 2
MEM_PER_EDGE, MEM_PER_CLASS = 128, 256


# --------------------------------------------------------------------------------------------------
# helpers


def proc_status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if key == "VmHWM":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return 0


def fmt_rate(x: float | None, unit: str = "/s") -> str:
    if x is None or x != x:
        return "n/a"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}{unit}"
    return f"{x:.3g}{unit}"


def fmt_bytes(x: float) -> str:
    return f"{x / 2**20:.1f} MiB"


def machine() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    vers = {}
    for mod in ("numpy", "pyarrow", "networkx", "rustworkx", "pytest_benchmark", "lockfleet"):
        try:
            m = __import__(mod)
            vers[mod] = getattr(m, "__version__", "?")
        except Exception as e:
            vers[mod] = f"unavailable ({type(e).__name__})"
    mem = proc_meminfo_total()
    git = {}
    try:
        root = HERE.parent
        git["head"] = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "ext", "service/lockfleet/engine.py", "service/lockfleet/events.py"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        git["dirty_engine_files"] = [ln[3:] for ln in dirty if ln.strip()]
    except Exception:
        pass
    return {
        "git": git,
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "mem_total": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": vers,
        "loadavg_start": os.getloadavg(),
    }


def proc_meminfo_total() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def engine_available() -> tuple[bool, str]:
    r = subprocess.run([sys.executable, "-c", "from lockfleet import Engine; Engine()"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode == 0:
        return True, ""
    last = (r.stderr.strip().splitlines() or ["?"])[-1]
    return False, last


# --------------------------------------------------------------------------------------------------
# engine child


def _phase_batches(wl: wk.Workload, names, rows_per_batch: int, dictionary: str):
    out = []
    ts = TS0
    for ph in wl.phases:
        bs = wk.to_event_batches(ph.edges, wl.n_classes, rows_per_batch, names=names, dictionary=dictionary,
                                 ts0=ts, ts_step=TS_STEP)
        ts += 4 * ph.edges.shape[0] * TS_STEP
        out.append(bs)
    return out


def _run_engine(Engine, wl, batches_by_phase, host=HOST):
    eng = Engine()
    phases = []
    returned = []
    for ph, bs in zip(wl.phases, batches_by_phase):
        ev = sum(b.num_rows for b in bs)
        t, c = time.perf_counter(), time.process_time()
        for b in bs:
            r = eng.ingest(b, host=host)
            if r:
                returned.extend(r)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        phases.append({"phase": ph.name, "events": ev, "edges": int(ph.edges.shape[0]), "new_edges": ph.n_new,
                       "elapsed_s": dt, "cpu_s": dc, "stats": _plain(eng.stats())})
    return eng, phases, returned


def _plain(d):
    try:
        return json.loads(json.dumps(d, default=lambda o: repr(o)))
    except Exception:
        return {"repr": repr(d)}


def engine_child(npz: str, out: str, rows_per_batch: int, dictionary: str, min_time: float,
                 rerun_below: float = 3.0) -> None:
    res: dict = {"ok": False}
    try:
        from lockfleet import Engine
        wl = wk.Workload.load(npz)
        names = wk.class_names(wl.n_classes)
        batches = _phase_batches(wl, names, rows_per_batch, dictionary)
        res["batch_bytes"] = int(sum(b.nbytes for bs in batches for b in bs))
        res["batches"] = [len(bs) for bs in batches]
        gc.collect()
        rss0 = proc_status("VmRSS")
        eng, phases, returned = _run_engine(Engine, wl, batches)
        gc.collect()
        rss1 = proc_status("VmRSS")
        res["rss_before"] = rss0
        res["rss_after"] = rss1
        res["rss_delta"] = rss1 - rss0
        res["peak_rss"] = proc_status("VmHWM")
        res["phases"] = phases
        alerts = list(eng.alerts()) if hasattr(eng, "alerts") else returned
        res["alerts_returned"] = len(returned)
        res["alerts_total"] = len(alerts)
        circ = [a for a in alerts if getattr(a, "kind", "") == "circular"]
        closing = {(a.locks[-1], a.locks[0]) for a in circ if getattr(a, "locks", None)}
        planted = {(f"L{b}", f"L{a}") for b, a in wl.back_edges.tolist()}
        res["circular"] = len(circ)
        res["planted"] = len(planted)
        res["planted_found"] = len(planted & closing)
        res["cycle_lengths"] = sorted(len(a.locks) for a in circ)
        res["expected_cycle_edges"] = sorted(k + 1 for k in wl.back_path_len)
        res["kinds"] = {}
        for a in alerts:
            res["kinds"][a.kind] = res["kinds"].get(a.kind, 0) + 1
        res["expected_edges"] = wl.n_edges
        res["expected_locks"] = int(np.unique(np.concatenate([p.edges.ravel() for p in wl.phases])).size)
        del eng, alerts, circ, returned
        # repeat the first (new-edge) phase with fresh engines when it was short, take the median
        first = res["phases"][0]["elapsed_s"]
        runs, cpus = [first], [res["phases"][0]["cpu_s"]]
        t_end = time.perf_counter() + min_time
        while first < min_time / 2 and len(runs) < 7 and time.perf_counter() < t_end:
            eng2, ph2, _ = _run_engine(Engine, wk.Workload(wl.name, wl.n_classes, wl.phases[:1]), batches[:1])
            runs.append(ph2[0]["elapsed_s"])
            cpus.append(ph2[0]["cpu_s"])
            del eng2
        res["first_phase_runs"] = runs
        res["first_phase_cpu"] = cpus
        res["first_phase_median_s"] = float(np.median(runs))
        res["first_phase_median_cpu_s"] = float(np.median(cpus))
        # later phases (repeats): pass over the same batches again on the same engine (everything is
        # a repeat by then), up to 3 passes when a pass is short; report the median of the passes
        eng3 = None
        for i in range(1, len(batches)):
            passes = [res["phases"][i]["elapsed_s"]]
            cpus = [res["phases"][i]["cpu_s"]]
            if passes[0] < rerun_below:
                if eng3 is None:
                    eng3, _, _ = _run_engine(Engine, wl, batches)
                while len(passes) < 3:
                    t, c = time.perf_counter(), time.process_time()
                    for b in batches[i]:
                        eng3.ingest(b, host=HOST)
                    passes.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
            res["phases"][i]["passes_s"] = passes
            res["phases"][i]["passes_cpu_s"] = cpus
            res["phases"][i]["median_s"] = float(np.median(passes))
            res["phases"][i]["median_cpu_s"] = float(np.median(cpus))
        del eng3
        res["ok"] = True
    except Exception as e:
        import traceback
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    with open(out, "w") as f:
        json.dump(res, f)


def run_engine(wl: wk.Workload, tmp: str, args, rows_per_batch: int | None = None) -> dict:
    npz = os.path.join(tmp, f"{wl.name}.npz")
    out = os.path.join(tmp, f"{wl.name}.engine.json")
    wl.save(npz)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", npz, "--_out", out,
           "--rows-per-batch", str(rows_per_batch or args.rows_per_batch), "--dictionary", args.dictionary,
           "--min-time", str(args.min_time)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.engine_timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {args.engine_timeout}s"}
    finally:
        os.unlink(npz)
    if not os.path.exists(out):
        return {"ok": False, "error": f"child exited {r.returncode}: {r.stderr.strip()[-500:]}"}
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


# --------------------------------------------------------------------------------------------------
# baselines


def run_baselines(wl: wk.Workload, args) -> dict:
    budget = args.budget
    names = wk.class_names(wl.n_classes)
    new = wl.phase("new")
    out: dict[str, list[bl.Result]] = {"new": [], "repeats": []}
    log = lambda r: args.verbose and print(f"    {r.label()}: {fmt_rate(r.rate)} {r.unit}", flush=True)

    for f in (lambda: bl.networkx_has_path(new.edges, budget),
              lambda: bl.rustworkx_check_cycle(new.edges, wl.n_classes, budget),
              lambda: bl.python_reference(wk.iter_event_batches(new.edges, wl.n_classes, args.rows_per_batch,
                                                                names=names, dictionary=args.dictionary),
                                          4 * new.edges.shape[0], budget)):
        r = f()
        log(r)
        out["new"].append(r)
        gc.collect()
    if len(wl.phases) > 1:
        rep = wl.phase("repeats")
        r = bl.python_set_repeats(new.edges, rep.edges, budget)
        log(r)
        out["repeats"].append(r)
        ref = bl.PyReference()
        ref.preload([(f"L{u}", f"L{v}") for u, v in new.edges.tolist()])
        r = bl.python_reference(wk.iter_event_batches(rep.edges, wl.n_classes, args.rows_per_batch, names=names,
                                                      dictionary=args.dictionary),
                                4 * rep.edges.shape[0], budget, ref=ref,
                                name="python reference core (new edges preloaded)")
        log(r)
        out["repeats"].append(r)
        del ref
        gc.collect()
    return out


# --------------------------------------------------------------------------------------------------
# table


def _best(results: list[bl.Result]) -> bl.Result | None:
    rs = [r for r in results if r.done > 0]
    return max(rs, key=lambda r: r.edges_rate()) if rs else None


def _ratio(x: float) -> str:
    return f"{x:.1f}x" if x >= 0.95 else f"{x:.2g}x"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "NO")


def _met2(wall: float | None, cpu: float | None, target: float) -> str:
    """Met on the wall-clock rate; when only the cpu-time rate meets it (a shared machine), say so."""
    if not wall:
        return "—"
    if wall >= target:
        return "yes"
    if cpu and cpu >= target:
        return "NO (yes on cpu-time)"
    return "NO"


def build_rows(name: str, eng: dict | None, base: dict, quick: bool) -> list[list[str]]:
    rows = []
    ok = bool(eng and eng.get("ok"))
    size_note = " (quick sizes)" if quick else ""

    def eng_phase(i):
        return eng["phases"][i] if ok and len(eng["phases"]) > i else None

    def base_cells(results, eng_rate_edges):
        b = _best(results)
        if b is None:
            return "n/a", "n/a"
        cell = f"{b.label()}: {fmt_rate(b.edges_rate(), ' edges/s' if b.unit != 'obs' else ' obs/s')}"
        ratio = _ratio(eng_rate_edges / b.edges_rate()) if eng_rate_edges else "n/a"
        return cell, ratio

    err = "" if ok else f"n/a ({(eng or {}).get('error', 'engine not run')})"

    # new edges (first phase); the first phase's time is the median over fresh engines
    p0 = eng_phase(0)
    rate_new = None
    if p0:
        t = eng["first_phase_median_s"]
        rate_new = p0["new_edges"] / t if t > 0 else None
        runs = len(eng["first_phase_runs"])
        best = min(eng["first_phase_runs"])
        tc = eng["first_phase_median_cpu_s"]
        rate_new_cpu = p0["new_edges"] / tc if tc > 0 else None
        cell = (f"{fmt_rate(rate_new, ' edges/s')} ({t * 1e3:.1f} ms for {p0['new_edges']:,}; "
                f"{t / p0['events'] * 1e9:.0f} ns/event; "
                + (f"median of {runs} fresh engines, best {fmt_rate(p0['new_edges'] / best, '/s')}" if runs > 1
                   else "one run")
                + f"; cpu-time {fmt_rate(rate_new_cpu, '/s')})")
    else:
        cell = err
    bcell, ratio = base_cells(base["new"], rate_new)
    if name == "W1":
        field, tgt, target = FIELD["W1 new"][0], f">= {fmt_rate(TARGET_W1_NEW, ' edges/s')}", TARGET_W1_NEW
    elif name == "W2":
        field, tgt, target = FIELD["W2 new"][0], f"2M in < 4 s (>= {fmt_rate(TARGET_W2_NEW, ' edges/s')})", TARGET_W2_NEW
    elif name == "W3a":
        field, tgt, target = FIELD["W3a"][0], f">= {fmt_rate(TARGET_W3A, ' edges/s')} (2x of field)", TARGET_W3A
    else:
        field, tgt, target = FIELD["W3b"][0], f">= {fmt_rate(TARGET_W3B, ' edges/s')} (2x of field)", TARGET_W3B
    label = {"W1": "W1 new edges", "W2": "W2 new edges", "W3a": "W3a chain", "W3b": "W3b dense layers"}[name]
    rows.append([label + size_note, cell, bcell, ratio, field, tgt, _met2(rate_new, rate_new_cpu if p0 else None, target)])

    # repeats
    p1 = eng_phase(1)
    if name in ("W1", "W2"):
        if p1:
            t = p1.get("median_s", p1["elapsed_s"])
            ev_rate = p1["events"] / t
            ev_rate_cpu = p1["events"] / p1.get("median_cpu_s", p1["cpu_s"])
            obs_rate = p1["edges"] / t
            np_ = len(p1.get("passes_s", [1]))
            cell = (f"{fmt_rate(ev_rate, ' ev/s')} = {fmt_rate(obs_rate, ' obs/s')} "
                    f"({t / p1['events'] * 1e9:.1f} ns/event; "
                    + (f"median of {np_} passes {', '.join(fmt_rate(p1['events'] / x, '') for x in p1['passes_s'])} ev/s"
                       if np_ > 1 else "one pass")
                    + f"; cpu-time {fmt_rate(ev_rate_cpu, ' ev/s')})")
        else:
            ev_rate = obs_rate = ev_rate_cpu = None
            cell = err
        bcell, ratio = base_cells(base["repeats"], obs_rate)
        if name == "W1":
            rows.append(["W1 repeats" + size_note, cell, bcell, ratio, FIELD["W1 repeats"][0],
                         f">= {fmt_rate(TARGET_W1_REP, ' ev/s')} (< 20 ns/event)",
                         _met2(ev_rate, ev_rate_cpu, TARGET_W1_REP)])
        else:
            rows.append(["W2 repeats" + size_note, cell, bcell, ratio, "—", "—", "—"])

    # memory
    if name in ("W1", "W2"):
        if ok:
            st = eng["phases"][-1]["stats"]
            mem_keys = {k: v for k, v in st.items()
                        if isinstance(v, (int, float)) and any(s in k.lower() for s in ("byte", "mem"))}
            E, C = eng["expected_edges"], eng["expected_locks"]
            budget = MEM_PER_EDGE * E + MEM_PER_CLASS * C
            rss = eng["rss_delta"]
            parts, verdict = [], []
            if mem_keys:
                core = sum_num(mem_keys)
                parts.append(f"eng.stats() {'+'.join(mem_keys)}: {fmt_bytes(core)} = {core / E:.0f} B/edge")
                verdict.append(f"stats {_met(core <= budget)}")
            parts.append(f"RSS growth: {fmt_bytes(rss)} = {rss / E:.0f} B/edge")
            verdict.append(f"RSS {_met(rss <= budget)}")
            cell = "; ".join(parts) + " (all charged to edges)"
            if name == "W2":
                cell += f"; peak RSS {fmt_bytes(eng['peak_rss'])} (incl. {fmt_bytes(eng['batch_bytes'])} of batches)"
            tgt = f"<= {MEM_PER_EDGE} B/edge + {MEM_PER_CLASS} B/class = {fmt_bytes(budget)}"
            rows.append([f"{name} memory" + size_note, cell, "—", "—", "—", tgt, ", ".join(verdict)])
        else:
            rows.append([f"{name} memory" + size_note, err, "—", "—", "—",
                         f"<= {MEM_PER_EDGE} B/edge + {MEM_PER_CLASS} B/class", "—"])
    return rows


def sum_num(d: dict):
    s = 0
    for v in d.values():
        if isinstance(v, (int, float)):
            s += v
    return s


def correctness_lines(name: str, eng: dict | None, base: dict) -> list[str]:
    lines = []
    if eng and eng.get("ok"):
        st = eng["phases"][-1]["stats"]
        e_ok = st.get("edges") == eng["expected_edges"]
        l_ok = st.get("locks") == eng["expected_locks"]
        c_ok = eng["planted_found"] == eng["planted"] and eng["circular"] == eng["planted"]
        lines.append(
            f"{name}: circular alerts {eng['circular']} (planted back edges closed {eng['planted_found']}/{eng['planted']}, "
            f"other {eng['circular'] - eng['planted_found']}) [{'ok' if c_ok else 'MISMATCH'}]; "
            f"cycle lengths {eng['cycle_lengths']} (planted {eng['expected_cycle_edges']}); "
            f"stats edges {st.get('edges')} / expected {eng['expected_edges']} [{'ok' if e_ok else 'MISMATCH'}], "
            f"locks {st.get('locks')} / expected {eng['expected_locks']} [{'ok' if l_ok else 'MISMATCH'}]; "
            f"alert kinds {eng['kinds']}")
    elif eng:
        lines.append(f"{name}: engine {eng.get('error')}")
    for r in base["new"] + base["repeats"]:
        x = ", ".join(f"{k} {v}" for k, v in r.extra.items())
        lines.append(f"{name} baseline {r.label()}: {fmt_rate(r.rate, ' ' + r.unit + '/s')} ({x})")
    return lines


def print_table(rows: list[list[str]]) -> str:
    hdr = ["workload", "engine", "best baseline in this run", "ratio", "field figure (issue)", "target", "met?"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in r) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (CI smoke, < 30 s)")
    ap.add_argument("--only", default="", help="comma list of workloads: " + ",".join(ALL))
    ap.add_argument("--json", default="", help="write every measurement to this file")
    ap.add_argument("--markdown", default="", help="write machine, command, table and notes as markdown here")
    ap.add_argument("--budget", type=float, default=None, help="seconds per baseline (default 5, quick 0.5)")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--no-engine", action="store_true")
    ap.add_argument("--rows-per-batch", type=int, default=wk.ROWS_PER_BATCH)
    ap.add_argument("--dictionary", choices=("batch", "global"), default="batch",
                    help="lock dictionary per batch (names used in it) or one shared dictionary")
    ap.add_argument("--min-time", type=float, default=None,
                    help="re-run a short new-edge phase with fresh engines for this long (median)")
    ap.add_argument("--engine-timeout", type=float, default=600)
    ap.add_argument("--small-rows", type=int, default=256,
                    help="also run W3a/W3b in batches of this many rows (informational; 0: skip)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.min_time is None:
        args.min_time = 0.5 if args.quick else 2.0
    if args._child:
        engine_child(args._child, args._out, args.rows_per_batch, args.dictionary, args.min_time)
        return 0
    if args.budget is None:
        args.budget = 0.5 if args.quick else 5.0
    names = [n.strip() for n in args.only.split(",") if n.strip()] or ALL
    for n in names:
        if n not in ALL:
            ap.error(f"unknown workload {n}")

    t_start = time.perf_counter()
    mach = machine()
    have_engine, why = (False, "--no-engine") if args.no_engine else engine_available()
    print(f"lockfleet benchmarks: {'quick' if args.quick else 'full'} sizes; {mach['nproc']} CPUs "
          f"({mach['cpu']}), {fmt_bytes(mach['mem_total'])}; Python {mach['python']}; load avg "
          f"{' '.join(f'{x:.2f}' for x in mach['loadavg_start'])}", flush=True)
    print(f"  versions: {', '.join(f'{k} {v}' for k, v in mach['versions'].items())}", flush=True)
    g = mach.get("git", {})
    if g:
        d = g.get("dirty_engine_files") or []
        print(f"  lockfleet at {g.get('head')}" + (f" + uncommitted changes in {', '.join(d)}" if d else ""), flush=True)
    if not have_engine:
        print(f"  engine: NOT AVAILABLE ({why}); baselines only", flush=True)
    print(f"  baselines time-boxed at {args.budget:g} s each; batches {args.rows_per_batch} rows, "
          f"dictionary={args.dictionary}", flush=True)

    rows, notes, record = [], [], {"machine": mach, "args": {k: v for k, v in vars(args).items()
                                                               if not k.startswith("_")}, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="lockfleet-bench-") as tmp:
        for name in names:
            t = time.perf_counter()
            print(f"- {name}: generating", flush=True)
            wl = wk.make(name, quick=args.quick, verbose=args.verbose)
            gen_s = time.perf_counter() - t
            desc = ", ".join(f"{p.name} {p.edges.shape[0]:,} edges ({4 * p.edges.shape[0]:,} events)" for p in wl.phases)
            moved = wl.meta.get("moved_for_insulation")
            print(f"  {wl.n_classes:,} classes; {desc}; {len(wl.back_edges)} back edges"
                  + (f" ({moved:,} new edges moved ahead of them so that only they close cycles)" if moved else "")
                  + f"; {gen_s:.1f}s", flush=True)
            eng = None
            if have_engine:
                t = time.perf_counter()
                eng = run_engine(wl, tmp, args)
                msg = "ok" if eng.get("ok") else eng.get("error")
                if eng.get("ok"):
                    msg = ", ".join(f"{p['phase']} {p['elapsed_s']:.3f}s" for p in eng["phases"])
                print(f"  engine: {msg} ({time.perf_counter() - t:.1f}s with set-up)", flush=True)
            base = {"new": [], "repeats": []}
            if not args.no_baselines:
                t = time.perf_counter()
                base = run_baselines(wl, args)
                print(f"  baselines: {time.perf_counter() - t:.1f}s", flush=True)
            rows += build_rows(name, eng, base, args.quick)
            notes += correctness_lines(name, eng, base)
            eng_small = None
            if have_engine and args.small_rows and name in ("W3a", "W3b"):
                # informational: the same stream in small batches, as agents push them (the spec
                # is 64k-row batches; small batches exercise the incremental path, not a rebuild)
                t = time.perf_counter()
                eng_small = run_engine(wl, tmp, args, rows_per_batch=args.small_rows)
                print(f"  engine, {args.small_rows}-row batches: "
                      f"{eng_small['phases'][0]['elapsed_s']:.3f}s" if eng_small.get("ok") else eng_small.get("error"),
                      f"({time.perf_counter() - t:.1f}s with set-up)", flush=True)
                r = build_rows(name, eng_small, base, args.quick)[0]
                r[0] += f", {args.small_rows}-row batches"
                r[5] = f"informational (spec: {args.rows_per_batch}-row batches)"
                r[6] = "—"
                rows.append(r)
                notes += correctness_lines(f"{name} ({args.small_rows}-row batches)", eng_small,
                                           {"new": [], "repeats": []})
            record["workloads"][name] = {
                "classes": wl.n_classes, "meta": wl.meta,
                "phases": [{"name": p.name, "edges": int(p.edges.shape[0]), "new": p.n_new} for p in wl.phases],
                "engine": eng, "engine_small_batches": eng_small,
                "baselines": {k: [r.to_dict() for r in v] for k, v in base.items()},
            }
            del wl
            gc.collect()
    table = print_table(rows)
    print()
    print(table)
    print()
    for n in notes:
        print("  " + n)
    total = time.perf_counter() - t_start
    mach["loadavg_end"] = os.getloadavg()
    print(f"\ntotal {total:.0f}s; load avg at end {' '.join(f'{x:.2f}' for x in mach['loadavg_end'])}; "
          "ratio = engine / best baseline, both in dependency edges (one edge = 4 events); "
          "baselines are graph-level (no event decoding) except the python reference core")
    record["table"] = table
    record["notes"] = notes
    record["total_s"] = total
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, default=repr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(mach, argv if argv is not None else sys.argv[1:], table, notes, total))
    return 0


def markdown(mach: dict, argv: list[str], table: str, notes: list[str], total: float) -> str:
    g = mach.get("git", {})
    dirty = g.get("dirty_engine_files") or []
    cmd = " ".join([".venv/bin/python", "benchmarks/run.py"] + list(argv))
    vers = ", ".join(f"{k} {v}" for k, v in mach["versions"].items())
    out = [
        "## Machine",
        "",
        f"- CPU: {mach['cpu']}, nproc {mach['nproc']} (affinity {mach['affinity']}); memory {fmt_bytes(mach['mem_total'])}",
        f"- {mach['platform']}; Python {mach['python']}; {vers}",
        f"- lockfleet at {g.get('head', '?')}" + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else ""),
        f"- load average at start {' '.join(f'{x:.2f}' for x in mach['loadavg_start'])}, at end "
        f"{' '.join(f'{x:.2f}' for x in mach.get('loadavg_end', ()))} (a shared machine: other jobs were running)",
        "",
        "## Command",
        "",
        f"    {cmd}",
        "",
        f"(total {total:.0f} s)",
        "",
        "## Table",
        "",
        table,
        "",
        "## Correctness and baselines, same run",
        "",
    ] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
