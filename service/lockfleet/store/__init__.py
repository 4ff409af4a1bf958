"""Durable storage of the service: the append-only segment log of accepted batches."""

from .dirlock import DataDirLocked, lock_data_dir
from .segment_log import LogCorrupt, Record, SegmentLog

__all__ = ["DataDirLocked", "LogCorrupt", "Record", "SegmentLog", "lock_data_dir"]
