"""The agent side: read event files, push them to the service, and query it."""

from .channel import AgentError, Refused, Unreachable
from .files import EventFile, FileError, read_event_file, to_ipc
from .push import PushResult, Stream, push_batches, push_streams
from .query import AlertView, ChainView, fetch_alerts, fetch_chain, fetch_stats

__all__ = ["AgentError", "AlertView", "ChainView", "EventFile", "FileError", "PushResult", "Refused", "Stream",
           "Unreachable", "fetch_alerts", "fetch_chain", "fetch_stats", "push_batches", "push_streams",
           "read_event_file", "to_ipc"]
