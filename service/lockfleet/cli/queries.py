"""The query commands of `lockfleet`: alerts (and --witnesses), stats, chain, lock, hosts, export,
dot and watch. Each prints a readable table, or one JSON document with --json (`watch --json`: one
JSON object per line, as they come)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..findings.model import KINDS
from .common import EXIT_OK, EXIT_USAGE, CliError, reported
from .connection import add_connection_options, connection
from .tables import hosts_cell, locks_cell, parse_time, print_json, state_cell, table, when

HEADLINE = ("events", "locks", "edges", "alerts", "hosts", "threads")  # stats shown first


def register(sub: Any) -> None:
    """`alerts`, `stats`, `chain`; each sets `func`."""
    p = sub.add_parser("alerts", help="print the current alerts",
                       description="Print the service's current alerts: a table (seq, id, kind, locks, hosts, "
                                   "first seen, published or suppressed), then each as a lockdep-style report, "
                                   "separated by blank lines; or one JSON document with --json. Suppressed "
                                   "findings are listed, marked, unless --hide-suppressed.")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"alerts": [alert.to_dict(), ...]} instead')
    p.add_argument("--kind", default="", choices=KINDS, metavar="KIND",
                   help=f"only alerts of this kind: {', '.join(KINDS)} (default: every kind)")
    p.add_argument("--lock", default="", metavar="NAME", help="only alerts involving this lock (default: any)")
    p.add_argument("--host", default="", metavar="NAME", help="only alerts involving this host (default: any)")
    add_alert_filters(p)

    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("stats", help="print the service's counters",
                       description="Print the service's counters (events, locks, edges, alerts, ...; ingest.* "
                                   "are the gateway's) as a table, or as one JSON document with --json.")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help="print the counters as one JSON object instead")

    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("chain", help="print the dependency path A ~> B with each edge's evidence",
                       description="Print the shortest lock-dependency path from lock A to lock B, each "
                                   "dependency with its first evidence (host, task, time, sites), or as one "
                                   "JSON document with --json. Exits 0 also when there is no path.")
    p.add_argument("src", metavar="A", help="lock class name to start from, e.g. tracepoints_mutex")
    p.add_argument("dst", metavar="B", help="lock class name to reach, e.g. bpf_event_mutex")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"found": ..., "locks": [...], "links": [...]} instead')
    p.set_defaults(func=cmd_chain)


def register_graph(sub: Any) -> None:
    """`lock`, `hosts`, `export`, `dot`, `watch`; each sets `func`."""
    p = sub.add_parser("lock", help="one lock class: its dependencies in and out, hosts, first/last seen, irq usage",
                       description="Print one lock class as the fleet knows it: every dependency into it and out "
                                   "of it with counts, hosts and first evidence, the hosts that took it, when it "
                                   "was first and last seen, its lockdep irq usage ({+.+.}, with where each usage "
                                   "bit was first set) and the findings that involve it.")
    p.add_argument("name", metavar="NAME", help="lock class name, e.g. pmus_lock (name/N for subclass N)")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("hosts", help="what each host has sent, and when last",
                       description="Print each host that has sent events: batches, events, streams, threads, "
                                   "when its last batch was received (service clock) and its latest event time "
                                   "(host clock), and how many findings it takes part in.")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"hosts": [...]} instead')
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("export", help="the whole lock graph's edges as an Arrow IPC stream file",
                       description="Write every lock dependency of the fleet's graph to FILE as an Arrow IPC "
                                   "stream, one row per edge with the columns held, taken, kinds (list<utf8>), "
                                   "count, hosts (list<utf8>), first_host, first_task, first_ts_ns, held_site, "
                                   "taken_site, last_ts_ns. Read it with pyarrow.ipc.open_stream or "
                                   "polars.read_ipc_stream.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write (e.g. edges.arrow)")
    p.add_argument("--rows-per-batch", type=int, default=0, metavar="N",
                   help="rows per record batch (default: the service's, 8192)")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"path", "bytes", "edges"} instead')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("dot", help="a finding's neighbourhood as Graphviz DOT (SVG when Graphviz is installed)",
                       description="Print the neighbourhood of finding ID in the lock graph as Graphviz DOT: its "
                                   "own dependencies in red (for a cycle, the closing one dashed), with kinds, "
                                   "counts and hosts, and the dependencies around its locks in grey. With -o, "
                                   "write it to a file and, when Graphviz's `dot` is installed, render SVG "
                                   "beside it.")
    p.add_argument("id", metavar="ID", help="a finding id, as `lockfleet alerts --brief` lists them")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write FILE.dot and FILE.svg (FILE may end in .dot or .svg) instead of printing")
    p.add_argument("--radius", type=int, default=None, metavar="N",
                   help="dependencies up to N steps from the finding's locks (default: 1; 0: the finding alone)")
    p.add_argument("--max-edges", type=int, default=0, metavar="N",
                   help="at most N dependencies besides the finding's own, the most taken first (default: 60)")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"id", "dot", "svg"} instead')
    p.set_defaults(func=cmd_dot)

    p = sub.add_parser("watch", help="follow publications (new findings, and findings that grew) as they come",
                       description="Follow the service's publications: each new finding, and each finding whose "
                                   "evidence grew (a new host, a new dependency kind), once, in order. Each "
                                   "has a sequence number: pass the last one seen as --after to resume without "
                                   "missing or repeating any. Suppressed findings are never published.")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="start after publication SEQ (default: 0, all)")
    p.add_argument("--from-end", action="store_true", help="only publications made from now on")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N publications (default: follow)")
    p.add_argument("--for", dest="duration", type=float, default=0.0, metavar="S",
                   help="exit after S seconds (default: follow until interrupted)")
    p.add_argument("--retry-for", type=float, default=0.0, metavar="S",
                   help="when the stream ends or breaks (a restart of the service), reconnect and resume after "
                        "the last publication seen, trying for up to S seconds each time (default: 0, exit)")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help="print one JSON object per publication, a line each")
    p.set_defaults(func=cmd_watch)


def add_alert_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=parse_time, default=0, metavar="TIME",
                   help="only findings first seen at or after TIME (ISO 8601, ns, or a duration ago: 2h, 7d)")
    p.add_argument("--until", type=parse_time, default=0, metavar="TIME", help="only findings first seen before TIME")
    p.add_argument("--id", dest="alert_id", default="", metavar="ID", help="only this finding")
    p.add_argument("--hide-suppressed", action="store_true",
                   help="leave out suppressed findings (listed by default, marked)")
    p.add_argument("--brief", action="store_true", help="print only the table, not the lockdep-style reports")
    p.add_argument("--witnesses", metavar="ID", default="",
                   help="print the witnesses of circular finding ID instead: the cycles that closed through its "
                        "inversion, the first few kept with their evidence (with --json: one JSON document)")


def print_witnesses(doc: dict[str, Any] | None, alert_id: str, as_json: bool) -> None:
    """`lockfleet alerts --witnesses ID`."""
    if doc is None:
        raise CliError(f"no finding with id {alert_id!r} (see `lockfleet alerts --brief`)", EXIT_USAGE)
    if as_json:
        print_json(doc)
        return
    if doc["inversion"] is None:
        print(f"{alert_id}: a {doc['kind']} finding; only circular findings have witnesses")
        return
    inv = doc["inversion"]
    kept = doc["witnesses"]
    print(f"{alert_id}: inversion {inv['held']} -> {inv['taken']}; {doc['count']} witness(es), "
          f"{len(kept)} kept with their evidence")
    for n, w in enumerate(kept, 1):
        closing = w["links"][-1] if w["links"] else {}
        print(f"\n#{n}{' (the finding itself)' if n == 1 else ''}: {' -> '.join(w['locks'])} -> {w['locks'][0]}")
        print(f"  closed by {closing.get('held', '?')} -> {closing.get('taken', '?')} on "
              f"{closing.get('host') or '?'} ({closing.get('task') or 'unknown task'}) at {when(closing.get('ts_ns', 0))}")
        print(f"  hosts: {', '.join(w['hosts']) or 'none'}")


def alerts_table(alerts: Sequence[Any]) -> str:
    rows = [(a.data.get("seq", ""), a.data["id"], a.data["kind"], locks_cell(a.data), hosts_cell(a.data["hosts"]),
             when(a.data.get("first_ts_ns", 0)), state_cell(a.data)) for a in alerts]
    return table(rows, ("SEQ", "ID", "KIND", "LOCKS", "HOSTS", "FIRST SEEN", "STATE"))


def suppression_line(data: dict[str, Any]) -> str:
    s = data.get("suppression")
    if not s:
        return ""
    if s.get("blessed"):
        return f"[suppressed: {s['reason']} ({s.get('author', '')}); listed, not published]"
    return (f"[suppressed by {s.get('author') or 'unknown'} at {when(s.get('ts_ns', 0))}: {s['reason']}; "
            "listed, not published]")


@reported
def cmd_alerts(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import fetch_alerts, fetch_witnesses

    if args.witnesses:
        print_witnesses(fetch_witnesses(connection(args, "query"), args.witnesses), args.witnesses, args.json)
        return EXIT_OK

    alerts = fetch_alerts(connection(args, "query"), kind=args.kind, lock=args.lock, host=args.host,
                          since_ns=args.since, until_ns=args.until, alert_id=args.alert_id,
                          hide_suppressed=args.hide_suppressed)
    if args.json:
        print(json.dumps({"alerts": [a.data for a in alerts]}, indent=2))
    elif not alerts:
        print("no alerts")
    else:
        print(alerts_table(alerts))
        if not args.brief:
            print("\n" + "\n\n".join("\n".join(filter(None, [suppression_line(a.data), a.report.rstrip("\n")]))
                                    for a in alerts))
    return EXIT_OK


@reported
def cmd_stats(args: argparse.Namespace) -> int:
    from ..agent import fetch_stats

    stats = fetch_stats(connection(args, "query"))
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return EXIT_OK
    flat = dict(_flatten(stats))
    first = [k for k in HEADLINE if k in flat]
    flat = {k: flat[k] for k in [*first, *(k for k in flat if k not in first)]}
    width = max((len(k) for k in flat), default=0)
    for key, value in flat.items():
        print(f"{key:<{width}}  {value}")
    return EXIT_OK


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key in sorted(d, key=lambda k: (isinstance(d[k], dict), k)):
        if isinstance(d[key], dict):
            items += _flatten(d[key], f"{prefix}{key}.")
        else:
            items.append((prefix + key, d[key]))
    return items


@reported
def cmd_chain(args: argparse.Namespace) -> int:
    from ..agent import fetch_chain

    chain = fetch_chain(connection(args, "query"), args.src, args.dst)
    if args.json:
        print(json.dumps({"found": chain.found, "locks": chain.locks, "links": chain.links}, indent=2))
        return EXIT_OK
    if not chain.found:
        print(f"no dependency path {args.src} ~> {args.dst}")
        return EXIT_OK
    print(" -> ".join(chain.locks) + f"   ({len(chain.links)} dependencies)")
    for link in chain.links:
        print(f"\n{link['held']} -> {link['taken']}  [{', '.join(link['kinds'])}]")
        print(f"  first taken on {link['host']} by {link['task'] or '?'} at {_when_exact(link['ts_ns'])}; "
              f"seen {link['count']} time(s) on {', '.join(link['hosts']) or link['host']}")
        _print_site("held at", link["held_site"])
        _print_site("taken at", link["taken_site"])
    return EXIT_OK


def _print_site(label: str, site: str) -> None:
    frames = [f for f in site.split("\n") if f]
    if not frames:
        print(f"  {label}: (unknown)")
    elif len(frames) == 1:
        print(f"  {label}: {frames[0]}")
    else:
        print(f"  {label}:")
        for frame in frames:
            print(f"       {frame}")


def _when_exact(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


@reported
def cmd_lock(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import fetch_lock

    info = fetch_lock(connection(args, "query"), args.name)
    if args.json:
        print_json(info.to_dict())
        return EXIT_OK
    if not info.found:
        print(f"no lock class {args.name!r} in the graph")
        return EXIT_OK
    print(f"lock {info.name} {{{info.usage}}}")
    print(f"  first seen {when(info.first_ts_ns)}, last seen {when(info.last_ts_ns)}")
    print(f"  {len(info.edges_in)} dependencies in, {len(info.edges_out)} out, taken in them {info.count} time(s)")
    print(f"  hosts: {', '.join(info.hosts) or '-'}")
    print(f"  findings: {', '.join(info.alerts) or 'none'}")
    print("\nirq usage:" if info.usages else "\nirq usage: none recorded")
    if info.usages:
        print(table([(u["usage"], u["host"] or "-", u["task"] or "-", when(u["ts_ns"]),
                      (u["site"].split("\n") or ["-"])[0] or "-") for u in info.usages],
                    ("USAGE", "FIRST HOST", "TASK", "AT", "SITE"), "  "))
    for title, edges, other in (("dependencies in (held -> this)", info.edges_in, "held"),
                                ("dependencies out (this -> taken)", info.edges_out, "taken")):
        print(f"\n{title}: {len(edges)}")
        if edges:
            rows = [(e[other], "/".join(e["kinds"]), e["count"], hosts_cell(e["hosts"]),
                     f"{e['host']} {e['task'] or '?'}", when(e["ts_ns"]), when(e.get("last_ts_ns", 0)),
                     (e["taken_site"].split("\n") or [""])[0] or "-") for e in edges]
            print(table(rows, (other.upper(), "KINDS", "COUNT", "HOSTS", "FIRST BY", "FIRST", "LAST", "TAKEN AT"),
                        "  "))
    return EXIT_OK


# ---- hosts ---------------------------------------------------------------------------------------------


@reported
def cmd_hosts(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import fetch_hosts

    hosts = fetch_hosts(connection(args, "query"))
    if args.json:
        print_json({"hosts": hosts})
        return EXIT_OK
    if not hosts:
        print("no hosts have sent anything")
        return EXIT_OK
    rows = [(h["host"], h["batches"], h["events"], h["streams"], h["threads"], when(h["last_received_ns"]),
             when(h["last_event_ts_ns"]), h["dropped_events"], len(h["alerts"])) for h in hosts]
    print(table(rows, ("HOST", "BATCHES", "EVENTS", "STREAMS", "THREADS", "LAST RECEIVED", "LAST EVENT", "DROPPED",
                       "FINDINGS")))
    return EXIT_OK


# ---- export --------------------------------------------------------------------------------------------


@reported
def cmd_export(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from ..agent.client.fetch import export_edges

    out = Path(args.output)
    if out.parent and not out.parent.is_dir():
        raise CliError(f"-o {out}: the folder {out.parent} does not exist", EXIT_USAGE)
    size = export_edges(connection(args, "query"), out, args.rows_per_batch)
    with pa.ipc.open_stream(out) as reader:
        rows = sum(b.num_rows for b in reader)
    if args.json:
        print_json({"path": str(out), "bytes": size, "edges": rows})
    else:
        print(f"wrote {rows} edges ({size} bytes, Arrow IPC stream) to {out}")
    return EXIT_OK


# ---- dot -----------------------------------------------------------------------------------------------


@reported
def cmd_dot(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import fetch_dot
    from ..findings.dot import dot_available, svg

    dot = fetch_dot(connection(args, "query"), args.id, args.radius, args.max_edges)
    if dot is None:
        raise CliError(f"no finding with id {args.id!r} (see `lockfleet alerts --brief`)")
    rendered = None
    if args.output:
        out = Path(args.output)
        dot_path = out if out.suffix != ".svg" else out.with_suffix(".dot")
        svg_path = out if out.suffix == ".svg" else out.with_suffix(".svg")
        dot_path.write_text(dot)
        wrote = [str(dot_path)]
        if dot_available():
            try:
                svg_path.write_text(svg(dot))
                rendered = str(svg_path)
                wrote.append(rendered)
            except RuntimeError as exc:
                print(f"lockfleet dot: {exc}", file=sys.stderr)
        elif out.suffix == ".svg":
            print("lockfleet dot: Graphviz's `dot` is not installed: wrote the DOT text only", file=sys.stderr)
        if args.json:
            print_json({"id": args.id, "dot": dot, "dot_path": str(dot_path), "svg_path": rendered})
        else:
            print("wrote " + " and ".join(wrote))
        return EXIT_OK
    if args.json:
        print_json({"id": args.id, "dot": dot, "svg": svg(dot) if dot_available() else None})
    else:
        sys.stdout.write(dot)
    return EXIT_OK


# ---- watch ---------------------------------------------------------------------------------------------


_WATCH_COLUMNS = (("SEQ", 5), ("EVENT", 5), ("ID", 26), ("KIND", 18), ("LOCKS", 0), ("HOSTS", 0), ("CHANGE", 0))


def _watch_line(cells: Sequence[str]) -> str:
    return "  ".join(c.ljust(w) if w else c for c, (_h, w) in zip(cells, _WATCH_COLUMNS))


@reported
def cmd_watch(args: argparse.Namespace) -> int:
    from ..agent import AgentError
    from ..agent.client.fetch import watch_alerts

    conn = connection(args, "query")
    seen = 0
    after, from_end = args.after, args.from_end
    deadline = time.monotonic() + args.duration if args.duration else None
    if not args.json:
        print(_watch_line([h for h, _w in _WATCH_COLUMNS]), flush=True)
    while True:
        left = deadline - time.monotonic() if deadline is not None else None
        if left is not None and left <= 0:
            return EXIT_OK
        retry_until = time.monotonic() + args.retry_for
        stream = watch_alerts(conn, after_seq=after, from_end=from_end, timeout=left)
        try:
            for pub in stream:
                if args.json:
                    print(json.dumps(pub.to_dict()), flush=True)
                else:
                    data = pub.alert.data
                    change = ", ".join([f"+host {h}" for h in pub.new_hosts] + [f"+kind {k}" for k in pub.new_kinds])
                    print(_watch_line([str(pub.seq), pub.event, data["id"], data["kind"], locks_cell(data),
                                       hosts_cell(data["hosts"]), change or "-"]), flush=True)
                seen += 1
                after, from_end = pub.seq, False
                if args.count and seen >= args.count:
                    return EXIT_OK
        except AgentError as exc:
            if deadline is not None and "DEADLINE_EXCEEDED" in str(exc):
                return EXIT_OK   # --for ran out
            if time.monotonic() >= retry_until:
                raise
        finally:
            stream.close()
        # the stream ended (the service is shutting down) or broke: resume after the last one seen
        if not args.retry_for:
            print(f"lockfleet watch: the service ended the stream; resume with --after {after}", file=sys.stderr)
            return EXIT_OK
        time.sleep(0.5)
