"""Fuzz targets: each `one_<name>(data)` feeds bytes to one reader of outside input and raises
only on a bug (the input's own refusal, the documented exception, is caught here). Used by the
atheris harness (run.py) and replayed by tests/test_fuzz.py on every saved crash input and seed.

- ingest:  Arrow IPC bytes -> the gateway's decode, string checks, event validation, Engine.ingest
- push:    a serialized PushBatch protobuf -> Gateway.admit/complete over a real segment log
- dmesg:   kernel log text -> the lockdep report reader, its event batch, an Engine
- proc:    /proc/lockdep text -> the dump reader, the merge of it beside a fixed second machine,
           the findings (the reader's own refusal, DumpError, is the documented exception)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lockfleet import Engine
from lockfleet.agent.kernel.dmesg import parse_text, to_batch
from lockfleet.agent.kernel.procdump import DumpError, parse_lockdep
from lockfleet.agent.kernel.class_names import Normalizer
from lockfleet.agent.kernel.procdump_merge import findings, merge
from lockfleet.events import EventError, normalize
from lockfleet.server.gateway import Gateway, Refusal, check_strings, decode
from lockfleet.store import SegmentLog
from lockfleet.v1 import lockfleet_pb2 as pb

from google.protobuf.message import DecodeError

MAX_ROWS = 100_000


def one_ingest(data: bytes) -> None:
    try:
        table = decode(data, MAX_ROWS, 1)
        check_strings(table, 1 << 16, 1)
        ev = normalize(table)
    except (Refusal, EventError):
        return
    Engine().ingest_events(ev, host="fuzz")


class _PushState:
    """One gateway over a segment log in a temporary directory, kept across inputs."""

    def __init__(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lockfleet-fuzz-")
        self.log = SegmentLog(Path(self.dir.name) / "log", fsync="never", segment_bytes=1 << 20)
        self.gateway = Gateway(Engine(), self.log)
        self.gateway.replay()


_push: _PushState | None = None


def one_push(data: bytes) -> None:
    global _push
    try:
        msg = pb.PushBatch.FromString(data)
    except (DecodeError, ValueError):
        return
    if _push is None:
        _push = _PushState()
    gw = _push.gateway
    ticket = gw.admit(msg.host, msg.stream_id, msg.seq, msg.arrow_ipc)     # never raises for bad input
    out = gw.complete(ticket, timeout=10)
    assert out.seq == msg.seq
    assert out.ok or (out.code and out.reason and out.error), out


def one_dmesg(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    reports = parse_text(text, path="fuzz.log")
    if reports:
        batch = to_batch(reports, host="fuzz")
        Engine().ingest(batch, host="fuzz")


_OTHER_MACHINE = """all lock classes:
ffffffff82a0b0c0 FD:    1 BD:    1 +.+.: lock_b
 -> [ffffffff82a0b0e0] lock_a

ffffffff82a0b0e0 FD:    1 BD:    1 +.+.: lock_a

"""


def one_proc(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        dump = parse_lockdep(text, path="fuzz/lockdep", host="fuzz")
    except DumpError:
        return
    other = parse_lockdep(_OTHER_MACHINE, path="other/lockdep", host="other")
    findings(merge([dump, other], Normalizer.from_options(None, defaults=True)))


TARGETS = {"ingest": one_ingest, "push": one_push, "dmesg": one_dmesg, "proc": one_proc}
