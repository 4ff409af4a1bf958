"""One service per data dir: an exclusive advisory lock (flock) on `DIR/lock`, held for the
life of the process and released by the kernel when it exits, however it exits."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import OperationalError


class DataDirLocked(OperationalError, RuntimeError):
    """Another process holds the data dir."""


def lock_data_dir(data_dir: Path) -> int:
    """Create `data_dir` if needed and lock it; return the lock's file descriptor (keep it open).

    Raises DataDirLocked naming the holder's pid when another process has it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DataDirLocked(f"data dir {data_dir} is in use by another lockfleet serve (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
