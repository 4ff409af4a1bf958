"""Writing /proc/lockdep, /proc/lockdep_chains and /proc/lockdep_stats the way the kernel prints
them (kernel/locking/lockdep_proc.c: l_show, lc_show, lockdep_stats_show), for the tests.

A `Machine` is one test machine's learned graph: classes in registration order (printed name ->
usage characters) and direct dependencies. `write_machine` prints it with hashed-pointer keys, real
FD/BD counts (classes reachable forwards / backwards, the class itself included, as
lockdep_count_forward_deps counts them) and, optionally, OPS counts (CONFIG_DEBUG_LOCKDEP).

`seed_links()` reads the seed report with the dmesg reader: its five dependencies and usages.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

SEED = Path(__file__).resolve().parent.parent.parent / "shared" / "seed" / "lkml-bpf-deadlock-report.txt"


@dataclass
class Machine:
    name: str
    classes: dict[str, str] = field(default_factory=dict)        # printed name -> usage chars
    deps: list[tuple[str, str]] = field(default_factory=list)   # (held, taken), printed names
    chains: list[tuple[str, list[str]]] = field(default_factory=list)   # (irq_context, names)

    def add(self, held: str, taken: str, usage: str = "+.+.") -> None:
        self.classes.setdefault(held, usage)
        self.classes.setdefault(taken, usage)
        if (held, taken) not in self.deps:
            self.deps.append((held, taken))


def _reach(start: str, adj: dict[str, list[str]]) -> int:
    seen, todo = {start}, deque([start])
    while todo:
        for n in adj.get(todo.popleft(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return len(seen)


def lockdep_text(m: Machine, rng: random.Random, ops: bool = False) -> tuple[str, dict[str, str]]:
    """/proc/lockdep of `m`, and the keys it printed (name -> key)."""
    keys = {n: f"{rng.getrandbits(64):016x}" for n in m.classes}
    fwd: dict[str, list[str]] = {}
    back: dict[str, list[str]] = {}
    for h, t in m.deps:
        fwd.setdefault(h, []).append(t)
        back.setdefault(t, []).append(h)
    out = ["all lock classes:"]
    for name, usage in m.classes.items():
        line = keys[name]
        if ops:
            line += f" OPS:{rng.randrange(1, 10**6):8d}"
        line += f" FD:{_reach(name, fwd):5d} BD:{_reach(name, back):5d} {usage}: {name}"
        out.append(line)
        for t in fwd.get(name, ()):
            out.append(f" -> [{keys[t]}] {t}")
        out.append("")
    return "\n".join(out) + "\n", keys


def chains_text(m: Machine, keys: dict[str, str]) -> str:
    out = ["all lock chains:"]
    for ctx, names in m.chains:
        out.append(f"irq_context: {ctx}")
        out += [f"[{keys[n]}] {n}" for n in names]
        out.append("")
    return "\n".join(out) + "\n"


def stats_text(m: Machine, debug_locks: int = 1, extra_classes: int = 0) -> str:
    rows = [("lock-classes", f"{len(m.classes) + extra_classes:11d} [max: 8192]"),
            ("direct dependencies", f"{2 * len(m.deps):11d} [max: 131072]"),
            ("indirect dependencies", f"{4 * len(m.deps):11d}"),
            ("dependency chains", f"{len(m.chains):11d} [max: 65536]"),
            ("in-process chains", f"{len(m.chains):11d}"),
            ("max locking depth", f"{9:11d}"),
            ("debug_locks", f"{debug_locks:11d}")]
    return "".join(f" {k + ':':<30}{v}\n" for k, v in rows) + "\n zapped classes:                          0\n"


def write_machine(directory: Path, m: Machine, rng: random.Random, *, chains: bool = False, stats: bool = False,
                  ops: bool = False, **stats_kw: int) -> Path:
    """`<dir>/<name>.lockdep` (and `.lockdep_chains`, `.lockdep_stats` beside it); returns the dump."""
    text, keys = lockdep_text(m, rng, ops)
    path = directory / f"{m.name}.lockdep"
    path.write_text(text)
    if chains:
        (directory / f"{m.name}.lockdep_chains").write_text(chains_text(m, keys))
    if stats:
        (directory / f"{m.name}.lockdep_stats").write_text(stats_text(m, **stats_kw))
    return path


def seed_links() -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The seed report's cycle as dependencies (held, taken), #0's closing one last, and each lock's
    usage characters, read with lockfleet's dmesg reader."""
    from lockfleet.agent.kernel.dmesg import circular_edges, parse_text

    reports = [r for r in parse_text(SEED.read_text(), str(SEED)) if r.kind == "circular"]
    assert len(reports) == 1, "the seed holds one circular report"
    edges = circular_edges(reports[0])
    usage = {}
    for e in edges:
        usage[e.held.name] = e.held.usage
        usage[e.taken.name] = e.taken.usage
    return [(e.held.name, e.taken.name) for e in edges], usage


# background names in every form print_name() writes: versions, subclasses, spaces, parentheses
ODD_NAMES = ("&type->i_mutex_dir_key#3/1", "(wq_completion)events unbound", "&(&zone->lock)->rlock",
             "(work_completion)(&(&dev->work)->timer)", "sk_lock-AF_INET6/1", "&ei->i_data_sem/2",
             "rcu_read_lock", "&sb->s_type->i_lock_key#22", "kn->active#45", "(console_sem).lock",
             "tty: ldisc sem", "&p->pi_lock")


def background(rng: random.Random, machines: list[Machine], per_machine: int, seed_classes: set[str],
               pool: int = 900) -> None:
    """A few hundred other classes and their dependencies on each machine, acyclic across the fleet
    and with no path back into the seed's classes: every class has a global rank; 'before' classes
    (ranks below the seed) may take seed classes, seed classes may take 'after' classes, and every
    other dependency goes from a lower rank to a higher one."""
    names = [f"bg_{i}_lock" for i in range(pool)]
    for j, odd in enumerate(ODD_NAMES):
        names[j * 37 % pool] = odd
    split = pool // 2                 # ranks < split: before the seed; >= split: after it
    rank = {n: i for i, n in enumerate(names)}
    for m in machines:
        chosen = rng.sample(names, per_machine)
        for n in chosen:
            m.classes.setdefault(n, rng.choice(("+.+.", "....", "+.+.", "++++", "+...")))
        chosen.sort(key=rank.__getitem__)
        for _ in range(per_machine * 2):
            a, b = sorted(rng.sample(range(len(chosen)), 2))
            m.add(chosen[a], chosen[b], m.classes[chosen[a]])
        for s in sorted(seed_classes):
            m.add(rng.choice([n for n in chosen if rank[n] < split] or chosen[:1]), s)
            m.add(s, rng.choice([n for n in chosen if rank[n] >= split] or chosen[-1:]))
