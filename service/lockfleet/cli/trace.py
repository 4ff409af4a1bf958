"""`lockfleet trace -- PROGRAM ARGS`: run a native program with the pthread interposer and stream
its lock events to a service or write them to an event file (`lockfleet.agent.native.trace`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_FAILURE, EXIT_USAGE
from .connection import add_connection_options, connection


def register(subparsers: Any) -> None:
    """`lockfleet trace`; its `func` runs it."""
    from ..agent.native.preload import CLASS_MODES, CLOCKS, RING_EVENTS, RINGS
    from ..agent.native.trace import POLL_MS


    p: argparse.ArgumentParser = subparsers.add_parser(
        "trace", help="run a native program with its pthread locks traced; stream the events or write a file",
        description="Run PROGRAM with lockfleet's pthread interposer preloaded (LD_PRELOAD; also in the processes "
                    "it forks or execs): pthread_mutex_lock/trylock/timedlock/clocklock/unlock, pthread_rwlock_rdlock/"
                    "wrlock/tryrdlock/trywrlock/timedrdlock/timedwrlock/clockrdlock/clockwrlock/unlock and "
                    "pthread_cond_wait/timedwait/clockwait (a release and a retake of the mutex) are recorded (a read lock in read mode; a failed trylock or a timed-out lock records nothing) "
                    "and streamed to a service with --target, else written to an Arrow IPC event file for "
                    "`lockfleet push` (native/README.md in the source tells more). A lock's class is the symbol of a static lock (lock_a), the call site of "
                    "pthread_*_init for a lock made there (mutex_init@func+0x1d), else the call site of its first "
                    "acquisition (site@func+0x2d); --class site uses the last for every lock. Programs that "
                    "take locks without the pthread functions (Rust's std, futexes) record nothing.",
        epilog="Exit status: the program's (128+N when signal N ended it); 1 when the events could not be "
               "delivered or written; 2 on bad usage or a program that cannot be run.")
    add_connection_options(p, "ingest", default=None,
                           target_help="stream the events to the lockfleet service there (default: none, write a file)")
    p.add_argument("--host", metavar="NAME", default=None,
                   help="the host these events are from (with --target, default: $LOCKFLEET_HOST, else this "
                        "machine's name; with a file, a `host` column; default: none, `lockfleet push --host` "
                        "gives it)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="without --target: the Arrow IPC event file to write (default: lockfleet-trace-PID.arrows)")
    p.add_argument("--class", dest="class_mode", choices=CLASS_MODES, default="auto",
                   help="auto: static symbol, init site, else first-acquisition site; site: the call site of "
                        "each lock's first acquisition (default: auto)")
    p.add_argument("--clock", choices=CLOCKS, default="tick",
                   help="tick: an event's time is a clock this command ticks every 1 ms in shared memory "
                        "(a load on the hot path); precise: read per event (the TSC where it is invariant, else "
                        "CLOCK_REALTIME; tens of ns more per event). A thread's events keep their order either "
                        "way (default: tick)")
    p.add_argument("--overflow", choices=("block", "drop"), default="block",
                   help="when a thread's ring is full: wait for the sidecar, or drop the event and count it "
                        "(default: block; a sidecar silent for 2 s is taken as gone and events are dropped)")
    p.add_argument("--rings", type=int, default=RINGS, metavar="N",
                   help="threads traced at once, at most (default: %(default)s)")
    p.add_argument("--ring-events", type=int, default=RING_EVENTS, metavar="N",
                   help="events a thread's ring holds, a power of two (default: %(default)s)")
    p.add_argument("--poll-ms", type=float, default=POLL_MS, metavar="MS",
                   help="how often the rings are drained (default: %(default)s)")
    p.add_argument("--retry-for", type=float, default=30.0, metavar="S",
                   help="with --target: how long the service may be unreachable before giving up (default: "
                        "%(default)s)")
    p.add_argument("--close-timeout", type=float, default=30.0, metavar="S",
                   help="with --target: at the end, how long to wait for the last acks (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no summary line on stderr at the end")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS", help="the program to run")

    def run(args: argparse.Namespace) -> int:
        import pyarrow as pa

        from ..agent import Agent, AgentError
        from ..agent.native.preload import SCHEMA, PreloadError, TraceBuffer
        from ..agent.native.trace import AgentSink, Deferred, FileSink, ProgramError, find_program, run_traced

        argv = list(args.argv)
        if argv and argv[0] == "--":
            argv = argv[1:]
        if not argv:
            return _usage("give the program to run: lockfleet trace [options] -- PROGRAM [ARGS...]")
        if args.target is None and (args.token or args.token_file or args.tls_ca or args.tls_cert or args.tls_key):
            return _usage("--token/--tls-* options need --target")
        if args.target is not None and args.output:
            return _usage("give either --target (stream) or -o (write a file), not both")
        if args.poll_ms <= 0 or args.rings < 1:
            return _usage("--poll-ms and --rings must be positive")
        program = find_program(argv[0])
        if program is None:
            return _usage(f"{argv[0]}: no such program (or not executable)")
        sink: Any
        try:
            buf = TraceBuffer(rings=args.rings, ring_events=args.ring_events, class_mode=args.class_mode,
                              overflow=args.overflow, clock=args.clock)
        except ValueError as exc:
            return _usage(str(exc))
        except PreloadError as exc:
            print(f"lockfleet trace: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        out_path: list[Path] = []
        try:
            if args.target is not None:
                conn = connection(args, "ingest")
                sink = AgentSink(Agent(conn, args.host, quiet=True, retry_for=args.retry_for), args.close_timeout)
            else:
                sink = None

            def start(pid: int) -> None:
                nonlocal sink
                if sink is None:
                    path = Path(args.output or f"lockfleet-trace-{pid}.arrows")
                    out_path.append(path)
                    sink = FileSink(path, args.host)

            if args.target is None and args.output:     # fail on an unwritable file before running anything
                start(0)
            try:
                status = run_traced([program, *argv[1:]], Deferred(lambda: sink), buf, args.poll_ms / 1000.0,
                                    start)
                sink.close(SCHEMA)
            except ProgramError as exc:
                for path in out_path:
                    path.unlink(missing_ok=True)
                return _usage(str(exc))
            except (AgentError, OSError, pa.ArrowException) as exc:
                print(f"lockfleet trace: events not delivered: {' '.join(str(exc).split())}", file=sys.stderr)
                return EXIT_FAILURE
            if not args.quiet:
                c = buf.counters()
                line = (f"lockfleet trace: {c['events']} lock events from {c['processes']} process(es); "
                        f"{sink.summary()}")
                if c["dropped"]:
                    line += f"; {c['dropped']} dropped (ring full)"
                if c["untraced_threads"]:
                    line += f"; {c['untraced_threads']} thread(s) not traced (no free ring: raise --rings)"
                if c["table_full"]:
                    line += f"; {c['table_full']} lookups found the class/site tables full"
                print(line, file=sys.stderr)
            return status
        except OSError as exc:
            print(f"lockfleet trace: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) \
                else EXIT_FAILURE
        except AgentError as exc:
            print(f"lockfleet trace: {' '.join(str(exc).split())}", file=sys.stderr)
            return EXIT_FAILURE
        finally:
            buf.close()

    p.set_defaults(func=run)


def _usage(message: str) -> int:
    print(f"lockfleet trace: {message}", file=sys.stderr)
    return EXIT_USAGE

