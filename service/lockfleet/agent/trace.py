"""`lockfleet trace`: run a native program with the pthread interposer and deliver its lock events.

    lockfleet trace --target 127.0.0.1:50551 --host web-1 -- ./server --port 80   # stream to a service
    lockfleet trace -o events.arrow -- ./server                                  # write an event file

The program (and every process it forks or execs) runs with native/lockfleet_preload.c preloaded;
this process is the sidecar: it drains the shared memory every --poll-ms and hands the batches to
an Agent (`sdk.Agent.send_batch`: batched, acknowledged, resent after a reconnect) or appends them
to an Arrow IPC file (fsync'd when closed) for `lockfleet push`. When the program exits, whatever
it recorded is delivered, also when it died holding locks or was killed.

Exit status: the program's (128 + N when a signal N ended it), unless the events could not be
delivered or written (1), or the command line or the program is bad (2).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import EXIT_FAILURE, EXIT_USAGE, UsageError
from .channel import AgentError
from .preload import CLASS_MODES, CLOCKS, RING_EVENTS, RINGS, SCHEMA, PreloadError, TraceBuffer
from .sdk import Agent

POLL_MS = 20.0
DELAY_MIN = 0.0002


class FileSink:
    """Batches appended to an Arrow IPC stream-format file (each batch with its own dictionaries,
    as `lockfleet push` and `lockfleet analyze` read it), with a `host` column when given;
    fsync'd when closed."""

    def __init__(self, path: Path, host: str | None) -> None:
        self.path = path
        self.host = host
        self._sink = pa.OSFile(str(path), "wb")
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.rows = 0

    def send(self, batch: pa.RecordBatch) -> None:
        if self.host is not None:
            host = pa.DictionaryArray.from_arrays(pa.array(np.zeros(batch.num_rows, np.int32)),
                                                  pa.array([self.host], pa.string()))
            batch = pa.RecordBatch.from_arrays([*batch.columns, host],
                                               schema=batch.schema.append(pa.field("host", host.type)))
        if self._writer is None:
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self, schema: pa.Schema) -> None:
        if self._writer is None:   # no events: still a valid, empty event file
            self.send(pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema))
            self.rows = 0
        assert self._writer is not None
        self._writer.close()
        self._sink.flush()
        os.fsync(self._sink.fileno())
        self._sink.close()

    def summary(self) -> str:
        return f"{self.rows} events written to {self.path}"


class AgentSink:
    """Batches streamed to a service on one Agent stream."""

    def __init__(self, agent: Agent, timeout: float) -> None:
        self.agent = agent
        self.timeout = timeout

    def send(self, batch: pa.RecordBatch) -> None:
        self.agent.send_batch(batch)

    def close(self, schema: pa.Schema) -> None:
        if not self.agent.flush(self.timeout):
            self.agent.abort()
            raise AgentError(f"the service at {self.agent.connection.target} did not acknowledge every batch in "
                             f"{self.timeout:g}s")
        self.agent.close(self.timeout)

    def summary(self) -> str:
        st = self.agent.stats()
        text = (f"{st['acked_events']} events acked by {st['target']} for host {st['host']} "
                f"(stream {st['stream_id']})")
        if st["new_alerts"]:
            text += f"; new alerts: {', '.join(st['new_alerts'])}"
        return text


class ProgramError(UsageError):
    """The program cannot be started."""


class _Guarded:
    """A sink whose first failure is kept (and raised by `check`) while the program runs on: the
    rings go on being drained, so that the program never waits on a sink that is gone."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.error: BaseException | None = None

    def send(self, batch: pa.RecordBatch) -> None:
        if self.error is None:
            try:
                self.sink.send(batch)
            except (AgentError, OSError, pa.ArrowException) as exc:
                self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def run_traced(argv: list[str], sink: Any, buf: TraceBuffer, poll: float,
               on_start: Callable[[int], None] | None = None) -> int:
    """Run argv with the interposer, draining into sink until it exits; its exit status. A sink
    that fails does not stop the program: the error is raised once it has exited."""
    sink = _Guarded(sink)
    try:
        proc = subprocess.Popen(argv, env={**os.environ, **buf.env()})
    except OSError as exc:
        raise ProgramError(f"{argv[0]}: cannot run it: {exc.strerror or exc}") from None
    if on_start is not None:
        on_start(proc.pid)

    def forward(signum: int, _frame: Any) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)   # the terminal's ^C reaches the program
    # Poll every `poll` seconds while the program is quiet; sooner while its rings fill (a full ring
    # makes its thread wait), down to DELAY_MIN.
    delay = poll
    busy = buf.ring_events // 8
    try:
        while proc.poll() is None:
            got = 0
            for batch in buf.drain():
                sink.send(batch)
                got += batch.num_rows
            if got >= busy:
                delay = max(delay / 4, DELAY_MIN)
            elif got == 0:
                delay = min(delay * 2, poll)
            time.sleep(delay)
        status = proc.returncode
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for _ in range(3):      # the last events of the program (and of children that exited with it)
        for batch in buf.drain():
            sink.send(batch)
        buf.reap()
    sink.check()
    return status if status >= 0 else 128 - status


def add_trace_parser(subparsers: Any, target_option: Callable[[argparse.ArgumentParser, str], None],
                     connection: Callable[[argparse.Namespace, str], Any]) -> argparse.ArgumentParser:
    """Register `lockfleet trace` (cli.py passes its --target/TLS/token options and the function
    that turns them into a Connection); its `func` runs it."""
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
    target_option(p, "ingest")
    p.set_defaults(target=None)
    for action in p._actions:
        if action.dest == "target":
            action.help = "stream the events to the lockfleet service there (default: none, write a file)"
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
        program = _find_program(argv[0])
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
                status = run_traced([program, *argv[1:]], _Deferred(lambda: sink), buf, args.poll_ms / 1000.0,
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
    return p


class _Deferred:
    """A sink made once the program's pid is known (the default file name holds it)."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def send(self, batch: pa.RecordBatch) -> None:
        self._get().send(batch)


def _find_program(name: str) -> str | None:
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    import shutil

    return shutil.which(name)


def _usage(message: str) -> int:
    print(f"lockfleet trace: {message}", file=sys.stderr)
    return EXIT_USAGE
