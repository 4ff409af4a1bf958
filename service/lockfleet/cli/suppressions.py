"""`lockfleet suppress`, `unsuppress`, `suppressions`: findings marked "known, accepted" (listed,
never published), and the service's blessed lock orders."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from .common import EXIT_OK, reported
from .connection import add_connection_options, connection
from .tables import print_json, table, when


@reported
def cmd_suppress(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import suppress

    author = args.author or os.environ.get("LOCKFLEET_AUTHOR") or _user()
    s, known = suppress(connection(args, "admin"), args.id, args.reason, author)
    if args.json:
        print_json({"suppression": s, "known": known})
        return EXIT_OK
    print(f"suppressed {s['id']} (by {s['author'] or 'unknown'}): {s['reason']}")
    if not known:
        print(f"note: no finding {s['id']} exists yet; it will be listed as suppressed, and never published, "
              "if it appears", file=sys.stderr)
    return EXIT_OK


@reported
def cmd_unsuppress(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import unsuppress

    s = unsuppress(connection(args, "admin"), args.id)
    if args.json:
        print_json({"unsuppressed": s})
    else:
        print(f"unsuppressed {s['id']} (was: {s['reason']}); it is published again if it is not yet")
    return EXIT_OK


@reported
def cmd_suppressions(args: argparse.Namespace) -> int:
    from ..agent.client.fetch import fetch_suppressions

    recorded, blessed = fetch_suppressions(connection(args, "query"))
    if args.json:
        print_json({"suppressions": recorded, "blessed": blessed})
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


def register(sub: Any) -> None:
    """`suppress`, `unsuppress`, `suppressions`; each sets `func`."""
    p = sub.add_parser("suppress", help='mark a finding "known, accepted": listed, never published',
                       description="Record that finding ID is known and accepted: it stays listed (marked) by "
                                   "`lockfleet alerts` but is never published to any sink, also when it grows. "
                                   "Persistent across restarts. A publication made before is not recalled. Needs "
                                   "an admin token when the service has a token file.")
    p.add_argument("id", metavar="ID", help="the finding id")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why it is accepted (required)")
    p.add_argument("--author", default="", metavar="NAME",
                   help="who accepts it (default: $LOCKFLEET_AUTHOR, else the login name)")
    add_connection_options(p, "admin")
    p.add_argument("--json", action="store_true", help='print {"suppression": {...}, "known": ...} instead')
    p.set_defaults(func=cmd_suppress)

    p = sub.add_parser("unsuppress", help="undo `lockfleet suppress ID`: publish the finding again",
                       description="Remove the suppression of finding ID; if it was never published, it is "
                                   "published now. A finding suppressed by a blessed lock order (--blessed) "
                                   "cannot be unsuppressed here. Needs an admin token when the service has a "
                                   "token file.")
    p.add_argument("id", metavar="ID", help="the finding id")
    add_connection_options(p, "admin")
    p.add_argument("--json", action="store_true", help='print {"unsuppressed": {...}} instead')
    p.set_defaults(func=cmd_unsuppress)

    p = sub.add_parser("suppressions", help="the recorded suppressions and the blessed lock orders",
                       description="Print every recorded suppression (id, author, since when, reason) and the "
                                   "service's blessed lock orders (`serve --blessed FILE`).")
    add_connection_options(p, "query")
    p.add_argument("--json", action="store_true", help='print {"suppressions": [...], "blessed": [...]} instead')
    p.set_defaults(func=cmd_suppressions)
