"""Durable storage of the service: the event log interface and its embedded segment log, snapshots,
the Parquet archive, and the data dir lock."""

from .archive import Archiver
from .dirlock import DataDirLocked, lock_data_dir
from .eventlog import EventLog, LogCorrupt, LogUnavailable, Record, SealedPart
from .segment_log import FSYNC_MODES, SegmentLog
from .snapshot import (
           SnapshotCorrupt,
           SnapshotIncompatible,
           load_newest,
           prune_snapshots,
           read_snapshot,
           snapshot_files,
           write_snapshot,
)

__all__ = [
           "FSYNC_MODES",
           "Archiver",
           "DataDirLocked",
           "EventLog",
           "LogCorrupt",
           "LogUnavailable",
           "Record",
           "SealedPart",
           "SegmentLog",
           "SnapshotCorrupt",
           "SnapshotIncompatible",
           "load_newest",
           "lock_data_dir",
           "prune_snapshots",
           "read_snapshot",
           "snapshot_files",
           "write_snapshot",
]
