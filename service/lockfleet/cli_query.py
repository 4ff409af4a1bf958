"""The query and publishing subcommands of `lockfleet`: lock, hosts, export, dot, watch, suppress,
unsuppress, suppressions, and the table that `alerts` prints before its reports. Each prints a
readable table, or one JSON document with --json (`watch --json`: one JSON object per line, as
they come). Registered by `cli.build_parser`; the shared pieces (connection options, errors,
exit statuses) are cli.py's.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .cli import _agent_errors, _connection, _target_option
from .errors import EXIT_OK, EXIT_USAGE, CliError

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


# ---- helpers -------------------------------------------------------------------------------------


def parse_time(text: str) -> int:
    """A moment as ns since the epoch: ISO 8601 (`2019-02-28`, `2019-02-28T15:07:40Z`; UTC unless
    it says otherwise), an integer of ns, or a duration ago (`90s`, `30m`, `2h`, `7d`, `1w`)."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return time.time_ns() - int(float(m.group(1)) * _UNIT[m.group(2)] * 1e9)
    if t.isdigit():
        return int(t)
    try:
        when = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give ISO 8601 (2019-02-28T15:07:40Z), "
                                         "ns since the epoch, or a duration ago (30m, 2h, 7d)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def when(ts_ns: int) -> str:
    if not ts_ns:
        return "-"
    return datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], indent: str = "") -> str:
    """Columns padded to their widest cell (the last one left ragged)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        line = "  ".join(c.ljust(w) if i < len(r) - 1 else c for i, (c, w) in enumerate(zip(r, widths)))
        lines.append(indent + line.rstrip())
    return "\n".join(lines)


def _hosts(hosts: Sequence[str], most: int = 4) -> str:
    return ", ".join(hosts[:most]) + (f" +{len(hosts) - most}" if len(hosts) > most else "") if hosts else "-"


def _locks(data: dict[str, Any]) -> str:
    locks = list(data.get("locks", ()))
    if data.get("kind") == "circular" and locks:
        return " -> ".join(locks + locks[:1])
    return ", ".join(locks)


def _state(data: dict[str, Any]) -> str:
    s = data.get("suppression")
    if not s:
        return "published"
    return "blessed" if s.get("blessed") else f"suppressed ({s.get('author') or 'unknown'})"


def _json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


# ---- alerts: the table, and the reports' suppression line ---------------------------------------------


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
        _json(doc)
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
    rows = [(a.data.get("seq", ""), a.data["id"], a.data["kind"], _locks(a.data), _hosts(a.data["hosts"]),
             when(a.data.get("first_ts_ns", 0)), _state(a.data)) for a in alerts]
    return table(rows, ("SEQ", "ID", "KIND", "LOCKS", "HOSTS", "FIRST SEEN", "STATE"))


def suppression_line(data: dict[str, Any]) -> str:
    s = data.get("suppression")
    if not s:
        return ""
    if s.get("blessed"):
        return f"[suppressed: {s['reason']} ({s.get('author', '')}); listed, not published]"
    return (f"[suppressed by {s.get('author') or 'unknown'} at {when(s.get('ts_ns', 0))}: {s['reason']}; "
            "listed, not published]")


# ---- lock ----------------------------------------------------------------------------------------------


@_agent_errors
def cmd_lock(args: argparse.Namespace) -> int:
    from .agent.query import fetch_lock

    info = fetch_lock(_connection(args, "query"), args.name)
    if args.json:
        _json(info.to_dict())
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
            rows = [(e[other], "/".join(e["kinds"]), e["count"], _hosts(e["hosts"]),
                     f"{e['host']} {e['task'] or '?'}", when(e["ts_ns"]), when(e.get("last_ts_ns", 0)),
                     (e["taken_site"].split("\n") or [""])[0] or "-") for e in edges]
            print(table(rows, (other.upper(), "KINDS", "COUNT", "HOSTS", "FIRST BY", "FIRST", "LAST", "TAKEN AT"),
                        "  "))
    return EXIT_OK


# ---- hosts ---------------------------------------------------------------------------------------------


@_agent_errors
def cmd_hosts(args: argparse.Namespace) -> int:
    from .agent.query import fetch_hosts

    hosts = fetch_hosts(_connection(args, "query"))
    if args.json:
        _json({"hosts": hosts})
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


@_agent_errors
def cmd_export(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from .agent.query import export_edges

    out = Path(args.output)
    if out.parent and not out.parent.is_dir():
        raise CliError(f"-o {out}: the folder {out.parent} does not exist", EXIT_USAGE)
    size = export_edges(_connection(args, "query"), out, args.rows_per_batch)
    with pa.ipc.open_stream(out) as reader:
        rows = sum(b.num_rows for b in reader)
    if args.json:
        _json({"path": str(out), "bytes": size, "edges": rows})
    else:
        print(f"wrote {rows} edges ({size} bytes, Arrow IPC stream) to {out}")
    return EXIT_OK


# ---- dot -----------------------------------------------------------------------------------------------


@_agent_errors
def cmd_dot(args: argparse.Namespace) -> int:
    from .agent.query import fetch_dot
    from .alerts.dot import dot_available, svg

    dot = fetch_dot(_connection(args, "query"), args.id, args.radius, args.max_edges)
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
            _json({"id": args.id, "dot": dot, "dot_path": str(dot_path), "svg_path": rendered})
        else:
            print("wrote " + " and ".join(wrote))
        return EXIT_OK
    if args.json:
        _json({"id": args.id, "dot": dot, "svg": svg(dot) if dot_available() else None})
    else:
        sys.stdout.write(dot)
    return EXIT_OK


# ---- watch ---------------------------------------------------------------------------------------------


_WATCH_COLUMNS = (("SEQ", 5), ("EVENT", 5), ("ID", 26), ("KIND", 18), ("LOCKS", 0), ("HOSTS", 0), ("CHANGE", 0))


def _watch_line(cells: Sequence[str]) -> str:
    return "  ".join(c.ljust(w) if w else c for c, (_h, w) in zip(cells, _WATCH_COLUMNS))


@_agent_errors
def cmd_watch(args: argparse.Namespace) -> int:
    from .agent import AgentError
    from .agent.query import watch_alerts

    conn = _connection(args, "query")
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
                    print(_watch_line([str(pub.seq), pub.event, data["id"], data["kind"], _locks(data),
                                       _hosts(data["hosts"]), change or "-"]), flush=True)
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


# ---- suppressions --------------------------------------------------------------------------------------


@_agent_errors
def cmd_suppress(args: argparse.Namespace) -> int:
    from .agent.query import suppress

    author = args.author or os.environ.get("LOCKFLEET_AUTHOR") or _user()
    s, known = suppress(_connection(args, "admin"), args.id, args.reason, author)
    if args.json:
        _json({"suppression": s, "known": known})
        return EXIT_OK
    print(f"suppressed {s['id']} (by {s['author'] or 'unknown'}): {s['reason']}")
    if not known:
        print(f"note: no finding {s['id']} exists yet; it will be listed as suppressed, and never published, "
              "if it appears", file=sys.stderr)
    return EXIT_OK


@_agent_errors
def cmd_unsuppress(args: argparse.Namespace) -> int:
    from .agent.query import unsuppress

    s = unsuppress(_connection(args, "admin"), args.id)
    if args.json:
        _json({"unsuppressed": s})
    else:
        print(f"unsuppressed {s['id']} (was: {s['reason']}); it is published again if it is not yet")
    return EXIT_OK


@_agent_errors
def cmd_suppressions(args: argparse.Namespace) -> int:
    from .agent.query import fetch_suppressions

    recorded, blessed = fetch_suppressions(_connection(args, "query"))
    if args.json:
        _json({"suppressions": recorded, "blessed": blessed})
        return EXIT_OK
    if recorded:
        print(table([(s["id"], s["author"] or "-", when(s["ts_ns"]), s["reason"]) for s in recorded],
                    ("ID", "AUTHOR", "SINCE", "REASON")))
    else:
        print("no recorded suppressions")
    if blessed:
        print("\nblessed lock orders (never reported):")
        for order in blessed:
            print(f"  {order}")
    return EXIT_OK


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return ""


# ---- the parsers ---------------------------------------------------------------------------------------


def add_query_parsers(sub: Any) -> None:
    """Register lock, hosts, export, dot, watch, suppress, unsuppress and suppressions."""
    p = sub.add_parser("lock", help="one lock class: its dependencies in and out, hosts, first/last seen, irq usage",
                       description="Print one lock class as the fleet knows it: every dependency into it and out "
                                   "of it with counts, hosts and first evidence, the hosts that took it, when it "
                                   "was first and last seen, its lockdep irq usage ({+.+.}, with where each usage "
                                   "bit was first set) and the findings that involve it.")
    p.add_argument("name", metavar="NAME", help="lock class name, e.g. pmus_lock (name/N for subclass N)")
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    p.set_defaults(func=cmd_lock)

    p = sub.add_parser("hosts", help="what each host has sent, and when last",
                       description="Print each host that has sent events: batches, events, streams, threads, "
                                   "when its last batch was received (service clock) and its latest event time "
                                   "(host clock), and how many findings it takes part in.")
    _target_option(p, "query")
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
    _target_option(p, "query")
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
    _target_option(p, "query")
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
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help="print one JSON object per publication, a line each")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("suppress", help='mark a finding "known, accepted": listed, never published',
                       description="Record that finding ID is known and accepted: it stays listed (marked) by "
                                   "`lockfleet alerts` but is never published to any sink, also when it grows. "
                                   "Persistent across restarts. A publication made before is not recalled. Needs "
                                   "an admin token when the service has a token file.")
    p.add_argument("id", metavar="ID", help="the finding id")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why it is accepted (required)")
    p.add_argument("--author", default="", metavar="NAME",
                   help="who accepts it (default: $LOCKFLEET_AUTHOR, else the login name)")
    _target_option(p, "admin")
    p.add_argument("--json", action="store_true", help='print {"suppression": {...}, "known": ...} instead')
    p.set_defaults(func=cmd_suppress)

    p = sub.add_parser("unsuppress", help="undo `lockfleet suppress ID`: publish the finding again",
                       description="Remove the suppression of finding ID; if it was never published, it is "
                                   "published now. A finding suppressed by a blessed lock order (--blessed) "
                                   "cannot be unsuppressed here. Needs an admin token when the service has a "
                                   "token file.")
    p.add_argument("id", metavar="ID", help="the finding id")
    _target_option(p, "admin")
    p.add_argument("--json", action="store_true", help='print {"unsuppressed": {...}} instead')
    p.set_defaults(func=cmd_unsuppress)

    p = sub.add_parser("suppressions", help="the recorded suppressions and the blessed lock orders",
                       description="Print every recorded suppression (id, author, since when, reason) and the "
                                   "service's blessed lock orders (`serve --blessed FILE`).")
    _target_option(p, "query")
    p.add_argument("--json", action="store_true", help='print {"suppressions": [...], "blessed": [...]} instead')
    p.set_defaults(func=cmd_suppressions)
