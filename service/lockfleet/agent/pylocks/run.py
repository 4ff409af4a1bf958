"""Run a Python program with its threading locks traced into lockfleet:

    python -m lockfleet.agent.pylocks.run [--target HOST:PORT] [--host NAME] [options] script.py [args...]
    python -m lockfleet.agent.pylocks.run [options] -m package.module [args...]

Every argument after the script, or after `-m MODULE`, is the program's, options included, as
with `python`. The script runs as `__main__` with `sys.argv` = [script, args...] and its directory first on
`sys.path`, as `python script.py` would, with `lockfleet.agent.instrument()` on from its first
line. At exit (after its non-daemon threads end) the Agent is flushed and closed, and a one-line
summary goes to stderr (`--quiet` leaves it out). The program's exit status is kept; if the
Agent could not deliver its events, the status is still the program's (the summary says so).
"""

from __future__ import annotations

import argparse
import atexit
import os
import runpy
import sys
from typing import Any

from ... import __version__
from ..client.channel import AgentError
from ..client.options import BATCH_INTERVAL, BATCH_ROWS, DEFAULT_TARGET, MAX_BUFFERED
from ..client.sdk import Agent
from .instrument import instrument


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lockfleet.agent.pylocks.run",
        usage="%(prog)s [options] (script.py | -m MODULE) [args...]",
        description="Run a Python program with threading.Lock, RLock, Condition, Semaphore and BoundedSemaphore "
                    "traced (a lock's class is the file:line that created it), streaming its lock events to a "
                    "lockfleet service as host NAME. As with python, every argument after the script or after "
                    "-m MODULE is the program's, options included. Locks used as signals (released by another "
                    "thread) and counting semaphores are not recorded; see docs/python-agent.md.")
    p.add_argument("--target", metavar="HOST:PORT", default=os.environ.get("LOCKFLEET_TARGET", DEFAULT_TARGET),
                   help="the lockfleet service (default: $LOCKFLEET_TARGET, else %(default)s)")
    p.add_argument("--host", metavar="NAME", default=None,
                   help="the host these events are from (default: $LOCKFLEET_HOST, else this machine's name)")
    p.add_argument("--stream-id", metavar="ID", default=None, help="the stream id (default: host/random)")
    p.add_argument("--prefix", default="", help="put this before every lock class name, e.g. 'myapp:'")
    p.add_argument("--no-sites", action="store_true", help="do not record where each lock was taken (cheaper)")
    p.add_argument("--include-stdlib", action="store_true", help="trace the standard library's locks too")
    p.add_argument("--overflow", choices=("drop", "block"), default="drop",
                   help="when --max-buffered events are unacked: drop new events (counted) or make the program "
                        "wait (default: drop)")
    p.add_argument("--max-buffered", type=int, default=MAX_BUFFERED, metavar="N",
                   help="events recorded but not yet acked, at most (default: %(default)s)")
    p.add_argument("--batch-rows", type=int, default=BATCH_ROWS, metavar="N", help="(default: %(default)s)")
    p.add_argument("--batch-interval", type=float, default=BATCH_INTERVAL, metavar="S",
                   help="send a partial batch after this long (default: %(default)s)")
    p.add_argument("--close-timeout", type=float, default=10.0, metavar="S",
                   help="at exit, wait this long for the last acks (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no summary line at exit")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("connection security")
    g.add_argument("--token", default=os.environ.get("LOCKFLEET_TOKEN", ""),
                   help="the ingest bearer token (default: $LOCKFLEET_TOKEN)")
    g.add_argument("--token-file", metavar="FILE", help="the token alone, or the server's format ('ingest <token>')")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting the server certificate this CA signed")
    g.add_argument("--tls-cert", metavar="PEM", help="this client's certificate (mTLS)")
    g.add_argument("--tls-key", metavar="PEM", help="this client's private key (mTLS)")
    g.add_argument("--tls-server-name", metavar="NAME", default="", help="check the server certificate against NAME")
    p.add_argument("-m", dest="module", metavar="MODULE",
                   help="run a module, as python -m does; every argument after MODULE is the module's")
    p.add_argument("script", nargs="?", metavar="script.py",
                   help="the program to run; every argument after it is the program's, as with python")
    p.add_argument("args", nargs="*", metavar="args", help=argparse.SUPPRESS)
    return p


def split_argv(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """(our options up to and including the script or `-m MODULE`, the program's arguments): as
    `python` does, everything after the script or the module goes to the program, options too."""
    takes_value = {opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings}
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            return argv[:i + 2], argv[i + 2:]
        if tok == "-m":
            return argv[:i + 2], argv[i + 2:]
        if tok.startswith("-m") and not tok.startswith("--"):
            return argv[:i + 1], argv[i + 1:]       # -mMODULE
        if tok.startswith("-") and tok != "-":
            if tok in takes_value and "=" not in tok:
                i += 1                            # its value
            i += 1
            continue
        return argv[:i + 1], argv[i + 1:]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ours, program_args = split_argv(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(ours)
    if args.module is not None and args.script is not None:
        program_args = [args.script, *program_args]   # -m MODULE -- ARGS: the "--" is passed on as python would
    if args.module is None and args.script is None:
        print("python -m lockfleet.agent.pylocks.run: give a script (or -m MODULE) to run", file=sys.stderr)
        return 2
    try:
        agent = Agent(args.target, args.host, stream_id=args.stream_id, token=args.token,
                      token_file=args.token_file, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                      server_name=args.tls_server_name, overflow=args.overflow,
                      max_buffered_events=args.max_buffered, batch_rows=args.batch_rows,
                      batch_interval=args.batch_interval)
    except (AgentError, ValueError) as exc:
        print(f"python -m lockfleet.agent.pylocks.run: {exc}", file=sys.stderr)
        return 2
    instrument(agent=agent, sites=not args.no_sites, prefix=args.prefix, include_stdlib=args.include_stdlib,
               close_at_exit=False)
    # atexit runs after the interpreter has joined the program's non-daemon threads
    atexit.register(_finish, agent, args.close_timeout, args.quiet, os.getpid())
    if args.module is not None:
        sys.argv = [args.module, *program_args]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        script = args.script
        sys.argv = [script, *program_args]
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


def _finish(agent: Agent, timeout: float, quiet: bool, pid: int) -> None:
    from .instrument import uninstrument

    if os.getpid() != pid:
        return           # a forked child of the program: the Agent (and its threads) are the parent's
    uninstrument(close=False)
    error: Any = None
    try:
        agent.close(timeout)
    except AgentError as exc:
        error = exc
    if quiet and error is None:
        return
    st = agent.stats()
    line = (f"lockfleet: {st['recorded']} lock events for host {st['host']} to {st['target']} "
            f"(stream {st['stream_id']}): {st['acked_events']} acked")
    if st["dropped"]:
        line += f", {st['dropped']} dropped (buffer full)"
    if st["refused_events"]:
        line += f", {st['refused_events']} refused"
    if st["new_alerts"]:
        line += f"; new alerts: {', '.join(st['new_alerts'])}"
    if error is not None:
        line += f"; NOT DELIVERED: {' '.join(str(error).split())}"
    print(line, file=sys.stderr)


_REEXEC = "_LOCKFLEET_RUN_GRPC_QUIET_FORK"


def _without_grpc_fork_handlers() -> None:
    """gRPC's fork handlers print a line on stderr ("Other threads are currently calling into
    gRPC, skipping fork() handlers") each time the traced program forks while the Agent's threads
    are in gRPC: output the program did not write. The child never uses the Agent (tracing stops
    in a forked child), so the handlers are not needed. gRPC reads GRPC_ENABLE_FORK_SUPPORT when it
    is imported, which `python -m lockfleet.agent.pylocks.run` has done by now; so run executes itself
    again, once, with it set to 0, and then takes it out of the environment again, so that the
    program and its children see the environment they were given. A value the user set is kept."""
    if os.environ.pop(_REEXEC, None) == "1":
        os.environ.pop("GRPC_ENABLE_FORK_SUPPORT", None)
        return
    if "GRPC_ENABLE_FORK_SUPPORT" in os.environ or not getattr(sys, "orig_argv", None):
        return
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0", **{_REEXEC: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


if __name__ == "__main__":
    _without_grpc_fork_handlers()
    sys.exit(main())
