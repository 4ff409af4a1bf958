"""Seed inputs for the fuzz targets: valid inputs of each kind (the fuzzer mutates from there)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

SHARED = Path(os.environ.get("LOCKFLEET_SHARED") or Path(__file__).resolve().parents[3] / "shared")


def _ipc(batch: pa.RecordBatch) -> bytes:
    from lockfleet.agent import to_ipc

    return to_ipc(batch)


def ingest_seeds() -> list[bytes]:
    n = 8
    base = {"ts_ns": pa.array(range(n), pa.int64()), "tid": pa.array([1, 1, 2, 2, 1, 1, 2, 2], pa.int64()),
            "op": pa.array([0, 2, 0, 0, 1, 1, 1, 1], pa.uint8()),
            "lock": pa.array(["A", "B", "B", "A", "B", "A", "A", "B"], pa.utf8())}
    full = {**base, "mode": pa.array([0, 1, 2, 0, 0, 0, 0, 0], pa.uint8()),
            "subclass": pa.array([0, 1, 0, 0, 1, 0, 0, 0], pa.uint8()),
            "instance": pa.array(range(100, 100 + n), pa.uint64()), "irq": pa.array([0, 4, 1, 0, 0, 8, 0, 2], pa.uint8()),
            "site": pa.array(["f+0x1/0x2"] * n, pa.utf8()), "task": pa.array(["t/1"] * n, pa.utf8()),
            "host": pa.array(["h1", None, "h2", "h2", "h1", None, "h2", "h2"], pa.utf8())}
    dicts = {**base, "lock": pa.array(["A", "B", "B", "A", "B", "A", "A", "B"]).dictionary_encode()}
    return [_ipc(pa.record_batch(base)), _ipc(pa.record_batch(full)), _ipc(pa.record_batch(dicts))]


def push_seeds() -> list[bytes]:
    from lockfleet.v1 import lockfleet_pb2 as pb

    return [pb.PushRequest(host="h1", stream_id="s", seq=1, arrow_ipc=ipc).SerializeToString()
            for ipc in ingest_seeds()] + [pb.PushRequest(host="h1", stream_id="s", seq=5).SerializeToString()]


MINIMAL_REPORT = b"""[   10.000000] ======================================================
[   10.000001] WARNING: possible circular locking dependency detected
[   10.000002] ------------------------------------------------------
[   10.000003] t/1 is trying to acquire lock:
[   10.000004] ffff000000000001 (lock_b){+.+.}-{3:3}, at: f_b+0x1/0x2
[   10.000005]
[   10.000005] but task is already holding lock:
[   10.000006] ffff000000000002 (lock_a){+.+.}-{3:3}, at: f_a+0x1/0x2
[   10.000007]
[   10.000007] which lock already depends on the new lock.
[   10.000008]
[   10.000008] the existing dependency chain (in reverse order) is:
[   10.000009]
[   10.000009] -> #1 (lock_a){+.+.}-{3:3}:
[   10.000010]        f_a+0x1/0x2
[   10.000011]
[   10.000011] -> #0 (lock_b){+.+.}-{3:3}:
[   10.000012]        f_b+0x1/0x2
"""


def dmesg_seeds() -> list[bytes]:
    out = [MINIMAL_REPORT]
    for d in (SHARED / "seed", SHARED / "corpus" / "lockdep-reports"):
        if d.is_dir():
            out += [p.read_bytes() for p in sorted(d.iterdir()) if p.suffix in (".txt", ".log") and p.is_file()][:12]
    return out


PROC_DUMP = b"""all lock classes:
ffffffff82a0b0e0 OPS:      12 FD:    2 BD:    1 +.+.: lock_a
 -> [ffffffff82a0b0c0] lock_b
 -> [ffffffff82a0b100] &rq->lock/1

ffffffff82a0b0c0 FD:    1 BD:    2 -.-.: lock_b
 -> [ffffffff82a0b120] (console_sem).lock

ffffffff82a0b100 FD:    0 BD:    1 ....: &rq->lock/1

ffffffff82a0b120 FD:    0 BD:    2 +.+.: (console_sem).lock

"""


def proc_seeds() -> list[bytes]:
    return [PROC_DUMP, PROC_DUMP[: len(PROC_DUMP) // 2]]


SEEDS = {"ingest": ingest_seeds, "push": push_seeds, "dmesg": dmesg_seeds, "proc": proc_seeds}


def write(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for i, s in enumerate(seeds):
        (directory / f"seed-{i:03d}").write_bytes(s)
    return len(seeds)
