"""Commands that read kernels' lockdep output: `lockfleet dmesg` (lockdep reports in kernel logs)
and `lockfleet proc-lockdep` (/proc/lockdep dumps of several machines); both print the findings of
the merged graph or, with --push, send the events to a service with the shared connection options
(`--target`, TLS, tokens). The reading and merging is `lockfleet.agent.kernel`'s."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

from .common import EXIT_OK, EXIT_USAGE, LockfleetError, add_irq_rule_option, exit_status
from .connection import DEFAULT_TARGET, add_connection_options, connection


def main_dmesg(paths: list[str], json_out: bool, push_target: str | Any = None, host: str | None = None,
               *, rules: str | None = None, normalize: bool = True, irq_rule: str = "") -> int:
    """`lockfleet dmesg FILE... [--json] [--push [connection options]] [--host NAME] [--rules FILE]
    [--no-normalize]`: print (or push, to `push_target`: HOST:PORT or a Connection) what the logs'
    lockdep reports make; returns the exit status."""
    from ..agent.kernel.class_names import Normalizer, RulesError
    from ..agent.kernel.dmesg import DmesgError, findings, incomplete_reports, read_log, report_sources, summary
    from ..engine import IRQ_RULE_DEFAULT

    try:
        norm = Normalizer.from_options(rules, defaults=normalize)
        logs = [read_log(p, host) for p in paths]
    except (DmesgError, RulesError) as exc:
        print(f"lockfleet dmesg: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if push_target is not None:
            return _push(logs, norm, push_target, host, json_out)
        alerts = findings(logs, norm, irq_rule or IRQ_RULE_DEFAULT)
        incomplete = incomplete_reports(logs, alerts)
        for inc in incomplete:
            print(f"lockfleet dmesg: {inc['file']}:{inc['line']}: incomplete {inc['kind']} report: {inc['reason']}; "
                  + (f"its finding {inc['finding']} is printed as far as the log holds it" if inc["finding"]
                     else "no finding from it"), file=sys.stderr)
        if json_out:
            print(json.dumps({"alerts": [a.to_dict() for a in alerts], "incomplete": incomplete}, indent=2))
            return EXIT_OK
        where = report_sources(logs, norm)
        for a in alerts:
            if a.printed is None:
                seen = sorted({s for link in a.links for s in where.get((link.held, link.taken), ())})
                what = "cycle" if a.kind == "circular" else "finding"
                print(f"lockfleet: no single report shows this {what}; its dependencies come from "
                      f"{', '.join(seen) or 'the reports'}")
            print(a.render())
        print(summary(logs, alerts, len(incomplete)))
        return EXIT_OK
    except Exception as exc:
        text = " ".join(str(exc).split()) if isinstance(exc, LockfleetError) else f"{type(exc).__name__}: {exc}"
        print(f"lockfleet dmesg: {text}", file=sys.stderr)
        return exit_status(exc)


def _push(logs: list[Any], norm: Any, target: str | Any, host: str | None, json_out: bool) -> int:
    from ..agent import push_batches
    from ..agent.kernel.dmesg import to_batch

    where = target if isinstance(target, str) else target.target

    pushed = []
    for log in logs:
        batch = to_batch(log.reports, norm, log.host)
        # the same log, host and rules are the same stream: pushing again applies nothing twice
        stream_id = hashlib.sha256(f"dmesg\0{log.host}\0{norm.fingerprint()}\0{log.sha256}".encode()).hexdigest()[:32]
        result = push_batches(target, log.host, stream_id, [batch] if batch.num_rows else [])
        pushed.append({"file": log.path, "host": log.host, "reports": len(log.reports), "events": batch.num_rows,
                       "duplicates": result.duplicates, "new_alerts": list(result.new_alerts)})
    if json_out:
        print(json.dumps({"pushed": pushed}, indent=2))
    else:
        for p in pushed:
            print(f"pushed {p['events']} events from {p['reports']} report(s) in {p['file']} for host {p['host']} "
                  f"to {where}" + (f"; new alerts: {', '.join(p['new_alerts'])}" if p["new_alerts"] else ""))
    return EXIT_OK


def register_dmesg(subparsers: Any) -> None:
    """`lockfleet dmesg`; its `func` runs it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "dmesg", help="read lockdep reports from kernel logs and print the cycles of their merged graph",
        description="Read kernel logs (dmesg, console or syslog, with or without timestamps) holding lockdep "
                    "reports. Each report's own finding is printed as the kernel printed it (its lines, in "
                    "order, without other tasks' output interleaved with them; a section the log lost is "
                    "said to be unknown, never made up): circular locking, recursive locking, irq lock "
                    "inversion / safe -> unsafe order, inconsistent lock state (any usage names, IN-NMI "
                    "too), bad unlock balance, held lock freed. Reports that show the same finding are one "
                    "finding; every report's own finding is kept whatever the order of the files. Then the "
                    "dependency chains of all reports are merged into one graph and what only that graph "
                    "shows is printed in addition: cycles (and irq findings) that no single report shows.",
        epilog="A report the log holds only in part (cut, or its header lost) is named on stderr, and in "
               "--json under \"incomplete\" (file, line, kind, reason, and the finding it still gave or null). "
               "`count` in --json is, for every kind, the number of reports a finding was read from (for a "
               "merged-graph finding: the number of reports its dependencies come from).")
    p.add_argument("files", nargs="+", metavar="FILE", help="kernel logs to read ('-' for stdin)")
    p.add_argument("--json", action="store_true",
                   help='print {"alerts": [alert.to_dict(), ...], "incomplete": [...]} instead')
    p.add_argument("--host", default=None, metavar="NAME",
                   help="the host the logs come from (default: a syslog line's host, else the file's name)")
    p.add_argument("--rules", default=None, metavar="FILE",
                   help="more name rules, one `regex<TAB>replacement` a line, applied after the built-in ones")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep class names as printed (no built-in rules: `#N` per-boot suffixes stay)")
    p.add_argument("--push", action="store_true", help="send the events to the service instead of printing")
    add_connection_options(p, "ingest", default=None,
                           target_help=f"with --push: address of the lockfleet service (default: {DEFAULT_TARGET})")
    add_irq_rule_option(p)
    p.set_defaults(func=run_dmesg)


def run_dmesg(args: argparse.Namespace) -> int:
    target = connection(args, "ingest") if args.push else None
    return main_dmesg(args.files, args.json, target, args.host, rules=args.rules, normalize=not args.no_normalize,
                      irq_rule=args.irq_rule)


def run_proc_lockdep(args: argparse.Namespace) -> int:
    from ..agent.kernel.class_names import Normalizer, RulesError
    from ..agent.kernel.procdump import DumpError, read_dumps
    from ..agent.kernel.procdump_merge import findings, merge, push, render, summary, warn

    try:
        norm = Normalizer.from_options(args.rules, defaults=not args.no_normalize)
        dumps = read_dumps(args.dumps, args.host or None)
    except (DumpError, RulesError) as exc:
        warn(str(exc))
        return EXIT_USAGE
    for d in dumps:
        for p in d.problems:
            warn(f"warning: {p}")
    conn = connection(args, "ingest") if args.push else None   # its usage errors are the cli's
    try:
        if conn is not None:
            return push(dumps, norm, conn, args.target, args.json)
        progress = warn if args.progress or (len(dumps) >= 20 and sys.stderr.isatty()) else None
        m = merge(dumps, norm, progress)
        found = findings(m)
        hidden = sum(1 for f in found if f.closed_by is not None)
        shown = [f for f in found if args.all or f.closed_by is None]
        if args.json:
            print(json.dumps({"alerts": [f.to_dict() for f in shown]}, indent=2))
            return EXIT_OK
        for f in shown:
            print(render(f))
        print(summary(m, len(found) - hidden, hidden, args.all, sum(1 for f in found if f.cross_witnesses)))
        return EXIT_OK
    except Exception as exc:
        text = " ".join(str(exc).split()) if isinstance(exc, LockfleetError) else f"{type(exc).__name__}: {exc}"
        warn(text)
        return exit_status(exc)


def register_proc_lockdep(subparsers: Any) -> None:
    """`lockfleet proc-lockdep`; its `func` runs it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "proc-lockdep", help="merge /proc/lockdep dumps of many machines and print the findings no machine closed",
        description="Read /proc/lockdep dumps of several kernel test machines (one per machine; the host is the "
                    "file's stem, or the directory's name for a directory holding a copy of lockdep, "
                    "lockdep_chains and lockdep_stats), merge them into one lock graph and print, in lockdep's "
                    "format, the findings that no single machine closed (circular dependencies, irq-safe -> "
                    "irq-unsafe paths, inconsistent irq usage across machines), each with the machines that "
                    "hold each link. lockdep_chains and lockdep_stats beside a dump (<file>_chains, "
                    "<file>_stats, or <stem>.lockdep_chains, <stem>.lockdep_stats) or given as arguments are "
                    "read too: the chains add the dependencies /proc/lockdep hides (those past a trylock), the "
                    "stats say when a dump is incomplete. /proc/lockdep prints no read/write kind for a "
                    "dependency: classes whose usage shows only reads are taken as non-recursive readers, "
                    "the rest as exclusive, and each finding says so. A dump cut in the middle is said on "
                    "stderr and what it holds before the cut is used.",
        epilog="Exit status: 0 success (findings or not), 2 bad usage or a file that is not a dump, 1 any other "
               "failure. With --push, the events go to the service as events of each dump's host "
               "(pushing the same dump again applies nothing twice).")
    p.add_argument("dumps", nargs="+", metavar="DUMP",
                   help="a copy of /proc/lockdep (or a directory holding one), one per machine")
    p.add_argument("--host", action="append", default=None, metavar="NAME",
                   help="the machine of each DUMP, once per DUMP in order (default: the file's stem)")
    p.add_argument("--json", action="store_true", help='print {"alerts": [alert.to_dict(), ...]} instead')
    p.add_argument("--all", action="store_true",
                   help="also print the findings one machine held whole by itself (its lockdep reported them)")
    p.add_argument("--rules", default=None, metavar="FILE",
                   help="more class name rules, one `regex<TAB>replacement` a line (as lockfleet dmesg)")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep class names as printed (by default the per-boot `#N` name versions are dropped)")
    p.add_argument("--progress", action="store_true", help="say on stderr as each dump is merged")
    p.add_argument("--push", action="store_true",
                   help="send each dump's dependencies and irq usage to the service (--target) as events of its host")
    add_connection_options(p, "ingest")
    p.set_defaults(func=run_proc_lockdep)
