"""The agent side: read event files, push them to the service, and query it."""

from .channel import AgentError, Connection, Refused, Unreachable, read_token
from .files import EventFile, FileError, read_event_file, to_ipc
from .push import PushResult, Stream, push_batches, push_streams
from .query import AlertView, ChainView, fetch_alerts, fetch_chain, fetch_stats

__all__ = ["AgentError", "AlertView", "ChainView", "Connection", "read_token", "EventFile", "FileError", "PushResult", "Refused", "Stream",
           "Unreachable", "fetch_alerts", "fetch_chain", "fetch_stats", "push_batches", "push_streams",
           "read_event_file", "to_ipc"]
