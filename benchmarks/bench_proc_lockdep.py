#!/usr/bin/env python3
"""`lockfleet proc-lockdep` over a kernel CI fleet's dumps: 50,000 classes, 300,000 dependencies,
100 dumps (target: under 10 s on this machine).

    .venv/bin/python benchmarks/bench_proc_lockdep.py                    # the issue's sizes
    .venv/bin/python benchmarks/bench_proc_lockdep.py --classes 5000 --deps 30000 --dumps 10

The fleet (seeded): classes have a global rank; each dependency goes from a class to one of the
next 400 by rank (so the union is acyclic), every class is in at least one dependency, and each
dependency is learnt by one machine (70% by the machine whose region of the rank order it starts
in, 30% by any; 10% by a second one as well). `--cycles` back edges are then
planted, each on another machine than the path it closes: a correct run finds circular findings
only through them (every finding holds a planted back edge, every planted edge is in a finding;
later dependencies close further cycles through a back edge), none closed by one machine (checked). Class names are
`&bench_class_<i>->lock` with a few in every form print_name() writes (`#V`, `/N`, spaces,
parentheses). Dumps are written in /proc/lockdep's format (l_show: keys, FD/BD, usage chars) to
a temporary directory before timing.

Timed, side by side on the same files (the machine is shared: compare the ratios):
- floor: reading every file and splitting its lines in Python (no parsing);
- in-process phases of the command: read + parse (`read_dumps`), dump -> events
  (`dump_graph` + `graph_events`), the engine's ingest, findings;
- the whole command as a subprocess (`lockfleet proc-lockdep DUMP... --json`), wall and CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build_fleet(classes: int, deps: int, dumps: int, cycles: int,
                seed: int) -> tuple[list[str], list[list[tuple[int, int]]], list[tuple[int, int]]]:
    rng = random.Random(seed)
    # unique after the name rules (`#V` dropped, `&(&x)->rlock` -> `&x`), as distinct classes are
    odd = ["&type_{}->i_mutex_dir_key#3/1", "(wq_completion)events unbound {}", "&(&zone_{}->lock)->rlock",
           "kn_{}->active#45", "tty: ldisc sem ({})"]
    names = [f"&bench_class_{i}->lock" for i in range(classes)]
    for i in range(0, classes, 97):
        names[i] = odd[(i // 97) % len(odd)].format(i)
    edges: set[tuple[int, int]] = set()
    for a in range(classes - 1):                       # every class in at least one dependency
        edges.add((a, min(classes - 1, a + rng.randint(1, 400))))
    while len(edges) < deps - cycles:
        a = rng.randrange(classes - 1)
        edges.add((a, min(classes - 1, a + rng.randint(1, 400))))
    per: list[list[tuple[int, int]]] = [[] for _ in range(dumps)]
    owner: dict[tuple[int, int], int] = {}
    for e in sorted(edges):
        # machines exercise different subsystems: 70% of a class's dependencies are learnt by the
        # machine of its region of the rank order, the rest anywhere
        k = e[0] * dumps // classes if rng.random() < 0.7 else rng.randrange(dumps)
        per[k].append(e)
        owner[e] = k
        if rng.random() < 0.1:
            per[(k + 1 + rng.randrange(dumps - 1)) % dumps].append(e)
    # plant back edges: each closes a path a -> b -> c; put it on a machine that holds neither
    succ: dict[int, list[int]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    planted: list[tuple[int, int]] = []
    for a in rng.sample(sorted(succ), len(succ)):
        if len(planted) == cycles:
            break
        b = succ[a][0]
        if b not in succ:
            continue
        c = succ[b][0]
        banned = {owner[(a, b)], owner[(b, c)]}
        k = next(k for k in range(dumps) if k not in banned)
        per[k].append((c, a))
        planted.append((c, a))
    rng.shuffle(per)
    return names, per, planted


def write_dumps(directory: Path, names: list[str], per: list[list[tuple[int, int]]], seed: int) -> list[Path]:
    rng = random.Random(seed + 1)
    keys = [f"{rng.getrandbits(64):016x}" for _ in names]
    usages = ("+.+.", "....", "++++", "+...")
    paths = []
    for k, edges in enumerate(per):
        out: dict[int, list[int]] = {}
        for a, b in edges:
            out.setdefault(a, []).append(b)
            out.setdefault(b, [])
        lines = ["all lock classes:"]
        for c in out:
            lines.append(f"{keys[c]} FD:{len(out[c]) + 1:5d} BD:{1:5d} {usages[c % 4]}: {names[c]}")
            lines += [f" -> [{keys[t]}] {names[t]}" for t in out[c]]
            lines.append("")
        p = directory / f"ci-{k:03d}.lockdep"
        p.write_text("\n".join(lines) + "\n")
        paths.append(p)
    return paths


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=50_000)
    ap.add_argument("--deps", type=int, default=300_000)
    ap.add_argument("--dumps", type=int, default=100)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    import numpy as np

    from lockfleet.agent.kernel.class_names import Normalizer
    from lockfleet.agent.kernel.procdump import read_dumps
    from lockfleet.agent.kernel.procdump_events import ClassTable, dump_graph, graph_events
    from lockfleet.agent.kernel.procdump_merge import findings, merge
    from lockfleet.engine import Engine

    with tempfile.TemporaryDirectory(prefix="bench-proc-lockdep-") as tmp:
        names, per, planted = build_fleet(args.classes, args.deps, args.dumps, args.cycles, args.seed)
        paths = write_dumps(Path(tmp), names, per, args.seed)
        size = sum(p.stat().st_size for p in paths)
        deps_written = sum(len(e) for e in per)
        print(f"fleet: {args.dumps} dumps, {len(names)} classes, {deps_written} dependency lines "
              f"({args.deps} distinct), {size / 1e6:.1f} MB; {args.cycles} planted cross-machine cycles")
        files = [str(p) for p in paths]

        _, floor, floor_cpu = timed(lambda: sum(len(p.read_text().split("\n")) for p in paths))
        norm = Normalizer()
        dumps, t_read, c_read = timed(lambda: read_dumps(files))
        # merge()'s loop, each step timed apart
        t_graph = c_graph = t_ev = c_ev = t_ing = c_ing = 0.0
        eng = Engine()
        table = ClassTable(norm)
        seen = np.zeros(0, np.uint8)
        for d in dumps:
            g, w, c = timed(lambda: dump_graph(d, table))
            t_graph, c_graph = t_graph + w, c_graph + c

            def events():
                nonlocal seen
                if len(seen) < len(table.names):
                    seen = np.concatenate([seen, np.zeros(len(table.names) - len(seen), np.uint8)])
                new = g.u_mask & ~seen[g.u_ids]
                np.bitwise_or.at(seen, g.u_ids, g.u_mask)
                return graph_events(g, d.mtime_ns, usage=(g.u_ids[new != 0], new[new != 0]))

            batch, w, c = timed(events)
            t_ev, c_ev = t_ev + w, c_ev + c
            _, w, c = timed(lambda: eng.ingest(batch, host=d.host))
            t_ing, c_ing = t_ing + w, c_ing + c
        st = eng.stats()
        m, t_all, c_all = timed(lambda: merge(read_dumps(files), norm))
        found, t_find, c_find = timed(lambda: findings(m))
        assert st["locks"] == len(names), (st["locks"], len(names))
        assert st["edges"] == args.deps, (st["edges"], args.deps)
        norm_names = [norm.printed(n) for n in names]
        back = {(norm_names[c], norm_names[a]) for c, a in planted}
        cyc = [{(link.held, link.taken) for link in f.alert.links} for f in found]
        assert all(f.alert.kind == "circular" and f.closed_by is None for f in found)
        assert all(c & back for c in cyc), "a finding without a planted back edge"
        assert all(any(b in c for c in cyc) for b in back), "a planted back edge in no finding"

        cmd = [str(Path(sys.executable).with_name("lockfleet")), "proc-lockdep", *files, "--json"]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        t_cli = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c_cli = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        assert proc.returncode == 0, proc.stderr
        assert len(json.loads(proc.stdout)["alerts"]) == len(found)

    rows = [("floor: read + split lines", floor, floor_cpu), ("read + parse", t_read, c_read),
            ("dump -> graph (names, chains)", t_graph, c_graph), ("graph -> events", t_ev, c_ev),
            ("engine ingest", t_ing, c_ing), ("read + merge, as the command does", t_all, c_all),
            ("findings", t_find, c_find), ("whole command (subprocess)", t_cli, c_cli)]
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 CPUs, shared)")
    print(f"{'phase':<34} {'wall s':>8} {'cpu s':>8} {'x floor':>8}")
    for name, wall, cpu in rows:
        print(f"{name:<34} {wall:8.2f} {cpu:8.2f} {wall / floor:8.1f}")
    print(f"engine: {st['locks']} classes, {st['edges']} dependencies, {st['events']} events; "
          f"{len(found)} findings (all cross-machine, through the {len(planted)} planted back edges); target: whole command < 10 s: "
          f"{'met' if t_cli < 10 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({name: {"wall_s": w, "cpu_s": c} for name, w, c in rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
