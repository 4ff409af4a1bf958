"""`lockfleet analyze`, `lockfleet diff`, `lockfleet report`: offline analysis of archives and event
files with polars and the same core as the service (`lockfleet.offline`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..offline.scan import Selection

from .common import EXIT_FAILURE, EXIT_OK, LockfleetError, UnhyphenatedFormatter, add_irq_rule_option, exit_status

Command = Callable[[argparse.Namespace], int]

_PATHS_HELP = (
    "A PATH is a service data dir (its Parquet archive, then the log segments not yet compacted, so "
    "nothing the service acknowledged is missed), an archive dir (day=YYYY-MM-DD/part-<seg>-<n>.parquet), "
    "a dir of log segments, a dir of event files, or an event file (Parquet or Arrow IPC, in the event "
    "schema). ORDER: the engine applies rows in order and which cycle a closing dependency reports can "
    "depend on it, so a service archive is applied in the service's own log order (part files by segment "
    "seq then n, rows in file order, then the log segments), which gives exactly the service's alerts and "
    "ids. Other event files are applied one file after another, each in row order: a file is one host's "
    "stream (rows without a host column take the host from a host=NAME dir above the file, else the file "
    "name), unless it has a host column. PATHs are applied in the order given. Times are UTC; --since is "
    "inclusive, --until exclusive; a bare date is its midnight.")


def _time(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        from ..offline.scan import ScanError, parse_time

        try:
            return parse_time(text, option)
        except ScanError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _hosts(text: str) -> frozenset[str]:
    hosts = frozenset(h.strip() for h in text.split(",") if h.strip())
    if not hosts:
        raise argparse.ArgumentTypeError("--hosts needs at least one host name")
    return hosts


def _top(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def _selection_options(p: argparse.ArgumentParser, prefix: str = "", what: str = "") -> None:
    p.add_argument(f"--{prefix}since", type=_time(f"--{prefix}since"), metavar="TIME",
                   help=f"only {what}events with ts_ns at or after TIME (ISO date or time, UTC unless it says)")
    p.add_argument(f"--{prefix}until", type=_time(f"--{prefix}until"), metavar="TIME",
                   help=f"only {what}events with ts_ns before TIME")


def register(subparsers: argparse._SubParsersAction) -> None:
    """`analyze`, `diff` and `report`; each sets `func` (args -> exit status)."""
    p = subparsers.add_parser(
        "analyze", help="offline: the service's alerts and aggregates from archives or event files (polars)",
        formatter_class=UnhyphenatedFormatter,
        description="Read archives or event files on this machine and apply every event, in chunks of 64k rows "
                    "straight from Arrow, through the same core as the service: the same alerts with the same "
                    "ids (memory follows the chunk size and the lock graph, not the archive). Then the "
                    "aggregates, with polars' streaming engine: events per lock class and per host, hold "
                    "times per class (count, p50, p99, max) from paired acquire/release, dependencies by times "
                    "taken and hosts (first and last seen), the locks most often held while others are taken "
                    "(memory follows parts of 5M events and the number of lock classes, not the archive). Hold "
                    "times: count, max and mean are exact; p50 and p99 come from a log-scale histogram (16 "
                    "buckets per power of two) and are within 2.2% of the exact nearest-rank values. A "
                    "progress bar shows on a "
                    "terminal (stderr; never with --json).",
        epilog=_PATHS_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH", help="data dir, archive dir, log dir, dir or event file")
    _selection_options(p)
    p.add_argument("--hosts", type=_hosts, metavar="H1,H2", help="only events of these hosts (comma list)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON document: {"alerts": [...], "summary": {...}, "aggregates": {...}}')
    p.add_argument("--alerts-only", action="store_true", help="skip the aggregates (one pass, fastest)")
    p.add_argument("--top", type=_top, default=15, metavar="N",
                   help="rows per aggregate table (default: 15; 0: all of them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    add_irq_rule_option(p)
    p.set_defaults(func=cmd_analyze)

    p = subparsers.add_parser(
        "diff", help="offline: lock classes, dependencies and findings new in NEW (e.g. after a kernel upgrade)",
        formatter_class=UnhyphenatedFormatter,
        description="Analyze OLD and NEW (two archives, or one archive in two time ranges with "
                    "--old-since/--old-until/--new-since/--new-until) and print what NEW has that OLD had "
                    "not: lock classes, dependencies (held -> taken), new kinds of a known dependency, and "
                    "findings (by id); then what is gone. Exit status 0 either way.",
        epilog=_PATHS_HELP)
    p.add_argument("old", metavar="OLD", help="the PATH before (see below)")
    p.add_argument("new", metavar="NEW", help="the PATH after (may be the same PATH as OLD with other times)")
    _selection_options(p, "old-", "OLD's ")
    _selection_options(p, "new-", "NEW's ")
    p.add_argument("--hosts", type=_hosts, metavar="H1,H2", help="only events of these hosts, on both sides (default: every host)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser(
        "report", help="offline: one self-contained HTML page with the findings, aggregates and plots",
        formatter_class=UnhyphenatedFormatter,
        description="Analyze PATHs as `analyze` does and write one self-contained HTML page (inline CSS and "
                    "SVG, nothing fetched): the findings, each with its lockdep-style text and its cycle drawn, "
                    "events over time, hold-time distributions, and the aggregates as tables.",
        epilog=_PATHS_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH", help="data dir, archive dir, log dir, dir or event file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the HTML file to write (required)")
    _selection_options(p)
    p.add_argument("--hosts", type=_hosts, metavar="H1,H2", help="only events of these hosts (comma list)")
    p.add_argument("--top", type=_top, default=50, metavar="N", help="rows per table (default: 50; 0: all)")
    p.add_argument("--title", default="", help="the page title (default: lockfleet report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_report)


def _selection(args: argparse.Namespace, prefix: str = "") -> Selection:
    from ..offline.scan import ScanError, Selection

    since, until = getattr(args, f"{prefix}since"), getattr(args, f"{prefix}until")
    if since is not None and until is not None and until <= since:
        raise ScanError(f"--{prefix.replace('_', '-')}until must be after --{prefix.replace('_', '-')}since")
    return Selection(since=since, until=until, hosts=args.hosts)


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "json", False) and not args.no_progress and sys.stderr.isatty()


def _guard(command: str) -> Callable[[Command], Command]:
    def wrap(fn: Command) -> Command:
        def run(args: argparse.Namespace) -> int:
            try:
                return fn(args)
            except LockfleetError as exc:    # a ScanError (bad path or file) is 2
                print(f"lockfleet {command}: {exc}", file=sys.stderr)
                return exit_status(exc)
            except BrokenPipeError:
                raise
            except OSError as exc:
                print(f"lockfleet {command}: {exc.strerror or exc}"
                      + (f": {exc.filename}" if getattr(exc, "filename", None) else ""), file=sys.stderr)
                return EXIT_FAILURE
            except Exception as exc:  # polars or Arrow failing on a file: one line, not a traceback
                print(f"lockfleet {command}: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                      file=sys.stderr)
                return EXIT_FAILURE
        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run
    return wrap


@_guard("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from ..offline import fmt
    from ..offline.aggregates import Aggregates
    from ..offline.analysis import analyze

    res = analyze(args.paths, _selection(args), aggregates=not args.alerts_only, progress=_progress(args),
                  irq_rule=args.irq_rule)
    alerts = res.alerts
    if args.json:
        doc = {"alerts": [a.to_dict() for a in alerts], "summary": res.summary()}
        if res.aggregates is not None:
            doc["aggregates"] = res.aggregates.to_dict(args.top)
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    s = res.summary()
    hosts = f", {res.aggregates.hosts.height} hosts" if res.aggregates is not None else ""
    print(f"{s['events']:,} events from {s['files']} file(s){hosts}: {s['locks']:,} lock classes, "
          f"{s['edges']:,} dependencies, {len(alerts)} finding(s) ({s['seconds']:.1f}s)")
    if res.skipped:
        print(f"skipped {len(res.skipped)} log record(s) that could not be decoded (see stderr)")
    if res.plan.unordered_segments:
        print(f"note: {len(res.plan.unordered_segments)} archived segment(s) have rows of several days and no "
              "order columns (lsn, row): applied day by day, which may not be the service's order")
    for a in alerts:
        print()
        print(a.render().rstrip("\n"))
    if res.aggregates is not None:
        agg = res.aggregates
        titles = {"classes": "events per lock class", "hosts": "hosts", "hold_times": "hold times per lock class",
                  "edges": "dependencies by times taken",
                  "held_while_taking": "locks most often held while others are taken"}
        for name in Aggregates.TABLES:
            df = getattr(agg, name)
            if name == "edges":
                df = df.drop("host_list")
            shown = f"top {args.top} of {df.height:,}" if args.top and df.height > args.top else f"{df.height:,}"
            print(f"\n== {titles[name]} ({shown}) ==")
            print(fmt.text_table(df, args.top) if df.height else "(none)")
    return EXIT_OK


@_guard("diff")
def cmd_diff(args: argparse.Namespace) -> int:
    from ..offline.diffing import diff

    d = diff([args.old], [args.new], _selection(args, "old_"), _selection(args, "new_"), progress=_progress(args))
    if args.json:
        json.dump(d.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    o, n = d.old.summary(), d.new.summary()
    for label, s in (("OLD", o), ("NEW", n)):
        print(f"{label}: {s['events']:,} events, {s['classes']:,} lock classes, {s['dependencies']:,} dependencies, "
              f"{s['findings']} finding(s)")
    new_classes, new_deps, new_kinds, new_findings = d.new_classes, d.new_dependencies, d.new_kinds, d.new_findings
    print(f"\nnew lock classes ({len(new_classes)})")
    for c in new_classes:
        print(f"  {c}")
    print(f"\nnew dependencies ({len(new_deps)})")
    for e in new_deps:
        print(f"  {e['held']} -> {e['taken']}  [{e['kinds']}]  taken {e['count']:,} time(s) on {e['hosts']} host(s), "
              f"first on {e['first_host']}")
    if new_kinds:
        print(f"\nknown dependencies with new kinds ({len(new_kinds)})")
        for e in new_kinds:
            print(f"  {e['held']} -> {e['taken']}  [{','.join(e['old_kinds'])}] + [{','.join(e['new_kinds'])}]")
    print(f"\nnew findings ({len(new_findings)})")
    for a in new_findings:
        print()
        print(a.render().rstrip("\n"))
    gone = (len(d.gone_classes), len(d.gone_dependencies), len(d.gone_findings))
    print(f"\ngone in NEW: {gone[0]} lock class(es), {gone[1]} dependenc(ies), {gone[2]} finding(s)")
    return EXIT_OK


@_guard("report")
def cmd_report(args: argparse.Namespace) -> int:
    from ..offline.analysis import analyze
    from ..offline.report import write_report

    res = analyze(args.paths, _selection(args), aggregates=True, progress=_progress(args))
    out = write_report(res, [str(p) for p in args.paths], args.output, top=args.top, title=args.title)
    print(f"wrote {out} ({len(res.alerts)} finding(s), {res.events:,} events)")
    return EXIT_OK
