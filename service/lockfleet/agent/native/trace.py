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

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ...errors import UsageError
from ..client.channel import AgentError
from ..client.sdk import Agent
from .preload import TraceBuffer

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


class Deferred:
    """A sink made once the program's pid is known (the default file name holds it)."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def send(self, batch: pa.RecordBatch) -> None:
        self._get().send(batch)


def find_program(name: str) -> str | None:
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    import shutil

    return shutil.which(name)


