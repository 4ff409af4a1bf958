"""`lockfleet proc-lockdep DUMP...`: merge kernel test machines' /proc/lockdep into one graph.

Each machine's lockdep checked every dependency it learnt against its own graph, and reported a
cycle it closed itself. What no machine could see is a cycle (or an irq-safe ~> irq-unsafe path,
or a class used in an irq on one machine and with that irq enabled on another) whose parts were
learnt on different machines. This command reads the dumps (`lockdep_proc.py`), turns each into
synthetic events of its host (`proc_events.py`), runs them through one `Engine`, and prints the
findings that no single machine closed, in lockdep's format with the machines that hold each link;
`--all` also prints the ones a machine closed by itself (its own lockdep reported those).
With `--push` the events go to a service instead, as events of their hosts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ...engine import Engine
from ...errors import EXIT_OK
from ...findings.model import Alert
from .class_names import Normalizer
from .procdump import Dump
from .procdump_events import ClassTable, Graph, conflicts, dump_graph, graph_events

PUSH_DEPS_PER_BATCH = 16384        # 4 rows each: batches of at most 64k rows
KINDS_NOTE = "kinds unknown: reported as if exclusive"
_PROG = "lockfleet proc-lockdep"


@dataclass(frozen=True)
class Finding:
    alert: Alert
    closed_by: str | None          # the machine that held the whole finding by itself, if any
    readers: tuple[str, ...] = ()  # locks of the finding whose usage shows reader use
    cross_witnesses: int = 0       # closed by one machine, but with witness cycles across machines

    def to_dict(self) -> dict[str, Any]:
        d = self.alert.to_dict()
        d["source"] = "proc-lockdep"
        d["closed_by"] = self.closed_by
        d["kinds_known"] = False
        d["note"] = KINDS_NOTE
        d["readers"] = list(self.readers)
        d["cross_machine_witnesses"] = self.cross_witnesses
        return d


@dataclass
class Merged:
    engine: Engine
    graphs: list[Graph]
    dumps: list[Dump]


def merge(dumps: list[Dump], norm: Normalizer, progress: Callable[[str], None] | None = None) -> Merged:
    """Every dump's events into one engine, dump after dump, each as events of its host (a usage
    bit an earlier dump gave already is not given again: the engine keeps a bit's first use)."""
    eng = Engine(exact_hosts=max(4, len(dumps)))     # a few machines: name every one of a link
    table = ClassTable(norm)
    graphs = []
    seen = np.zeros(0, np.uint8)                 # usage bits given to the engine, by class id
    for i, d in enumerate(dumps, 1):
        g = dump_graph(d, table)
        if len(seen) < len(table.names):
            seen = np.concatenate([seen, np.zeros(len(table.names) - len(seen), np.uint8)])
        new = g.u_mask & ~seen[g.u_ids]
        keep = new != 0
        np.bitwise_or.at(seen, g.u_ids, g.u_mask)
        eng.ingest(graph_events(g, d.mtime_ns, usage=(g.u_ids[keep], new[keep])), host=d.host)
        graphs.append(g)
        if progress is not None:
            progress(f"{i}/{len(dumps)} dumps merged ({d.host}: {len(d.names)} classes, {len(g)} dependencies)")
    return Merged(eng, graphs, dumps)


def _state(alert: Alert) -> str:
    return alert.irq_state or "HARDIRQ"


def closed_by(alert: Alert, graphs: list[Graph]) -> str | None:
    """The one machine whose own dump holds the whole finding (its lockdep saw it), or None."""
    if alert.kind == "circular":
        return alert.single_host()
    if alert.kind == "inconsistent_state" and alert.locks:
        for g in graphs:
            if conflicts(g.bits_of(alert.locks[0]), _state(alert)):
                return g.host
        return None
    if alert.kind == "irq_inversion" and alert.locks:
        st = _state(alert)
        hosts = set(alert.links[0].hosts) if alert.links else {g.host for g in graphs}
        for link in alert.links[1:]:
            hosts &= set(link.hosts)
        safe, unsafe = alert.locks[0], alert.locks[-1]
        for g in graphs:
            if g.host not in hosts:
                continue
            s, u = g.bits_of(safe), g.bits_of(unsafe)
            if any(b.startswith(f"IN-{st}") for b in s) and any(b.startswith(f"{st}-ON") for b in u):
                return g.host
        return None
    return alert.single_host()


def findings(m: Merged) -> list[Finding]:
    """Every finding of the merged graph with the machine that closed it alone, if any."""
    alerts = m.engine.alerts()
    named = {n for a in alerts for n in a.locks}
    readers = {n for n in named if any(b.endswith("-R") for g in m.graphs for b in g.bits_of(n))}
    out = []
    for a in alerts:
        by = closed_by(a, m.graphs)
        cross = sum(1 for w in a.witnesses if _no_common_host(w.links)) if by else 0
        out.append(Finding(a, by, tuple(n for n in a.locks if n in readers), cross))
    return out


def _no_common_host(links: Any) -> bool:
    common: set[str] | None = None
    for link in links:
        common = set(link.hosts) if common is None else common & set(link.hosts)
    return not common


def render(f: Finding) -> str:
    a = f.alert
    head = []
    if f.closed_by is None:
        what = "cycle" if a.kind == "circular" else "finding"
        head.append(f"lockfleet: no single machine closed this {what}; it rests on "
                    f"{', '.join(a.hosts) or 'the dumps'}")
    else:
        head.append(f"lockfleet: machine {f.closed_by} held all of this finding itself (its own lockdep saw it)"
                    + (f"; {f.cross_witnesses} of its witness cycles run across machines" if f.cross_witnesses else ""))
    tail = []
    if a.links:
        tail.append(f"lockfleet: {KINDS_NOTE} (/proc/lockdep prints no read/write kind for a dependency)")
        for n in f.readers:
            tail.append(f"  {n} was taken as a reader ({{{a.usage_strings.get(n, '')}}}): were its links "
                        "recursive reads, this would be no deadlock")
    return "\n".join(head) + "\n" + a.render() + ("\n".join(tail) + "\n" if tail else "")


def summary(m: Merged, open_: int, hidden: int, show_all: bool, cross: int = 0) -> str:
    st = m.engine.stats()
    chains = sum(g.from_chains for g in m.graphs)
    hosts = sorted({d.host for d in m.dumps})
    text = (f"{_PROG}: {len(m.dumps)} dump(s) of {len(hosts)} machine(s), {st['locks']} classes, {st['edges']} "
            f"dependencies" + (f" ({chains} only in lockdep_chains)" if chains else "")
            + f" merged: {open_} finding(s) no single machine closed")
    if hidden:
        text += (f"; {hidden} that one machine closed by itself"
                 + (f", {cross} of them with witness cycles across machines" if cross else "")
                 + ("" if show_all else " (--all shows them)"))
    return text


# ------------------------------------------------------------------------------ push


def dump_batches(g: Graph, ts_ns: int, per_batch: int = PUSH_DEPS_PER_BATCH) -> Iterator[pa.RecordBatch]:
    """The dump's events cut into batches (usage bits first, then dependencies), each with its
    own small dictionaries."""
    none = np.zeros(0, np.int64)
    for i in range(0, len(g.u_ids), per_batch):
        yield graph_events(g, ts_ns, deps=none, usage=(g.u_ids[i:i + per_batch], g.u_mask[i:i + per_batch]))
    for i in range(0, len(g), per_batch):
        yield graph_events(g, ts_ns, deps=np.arange(i, min(i + per_batch, len(g))), usage=(none, none.astype(np.uint8)))


def stream_id(d: Dump, norm: Normalizer) -> str:
    """The same dump (and chains), host and name rules are the same stream: pushing again applies
    nothing twice."""
    return hashlib.sha256(f"proc-lockdep\0{d.host}\0{norm.fingerprint()}\0{d.sha256}".encode()).hexdigest()[:32]


def push(dumps: list[Dump], norm: Normalizer, conn: Any, target: str, json_out: bool) -> int:
    from ..client.push import Stream, push_streams

    pushed = []
    for d in dumps:
        g = dump_graph(d, norm)
        batches = list(dump_batches(g, d.mtime_ns))
        result = push_streams(conn, d.host, [Stream(stream_id(d, norm), batches, label=d.path)])
        pushed.append({"file": d.path, "host": d.host, "classes": len(d.names), "dependencies": len(g),
                       "usage_bits": int(np.unpackbits(g.u_mask).sum()), "events": sum(b.num_rows for b in batches),
                       "batches": result.batches, "duplicates": result.duplicates, "new_alerts": list(result.new_alerts)})
    if json_out:
        print(json.dumps({"pushed": pushed}, indent=2))
    else:
        for p in pushed:
            print(f"pushed {p['events']} events ({p['dependencies']} dependencies, {p['usage_bits']} usage bits) "
                  f"from {p['file']} for host {p['host']} to {target}"
                  + (f" ({p['duplicates']} batch(es) already there)" if p["duplicates"] else "")
                  + (f"; new alerts: {', '.join(p['new_alerts'])}" if p["new_alerts"] else ""))
    return EXIT_OK


# ------------------------------------------------------------------------------ the command


def warn(text: str) -> None:
    print(f"{_PROG}: {text}", file=sys.stderr, flush=True)


