"""The agent side: the Agent SDK (buffered, acknowledged event streams), instrumentation of
Python programs' locks, the fleet simulator, event files, pushing, and queries of the service."""

from .channel import AgentError, Connection, Refused, Unreachable, read_token
from .files import EventFile, FileError, read_event_file, to_ipc
from .push import PushResult, Stream, push_batches, push_streams, split_by_thread
from .query import AlertView, ChainView, fetch_alerts, fetch_chain, fetch_stats
from .sdk import Agent, AgentClosed
# after the submodule is imported, so that `lockfleet.agent.instrument` is the function
from .instrument import instrument, lock_class, nested, uninstrument  # noqa: E402


__all__ = ["Agent", "AgentClosed", "AgentError", "AlertView", "ChainView", "Connection", "read_token", "EventFile",
           "FileError", "PushResult", "Refused", "Stream", "Unreachable", "fetch_alerts", "fetch_chain", "fetch_stats",
           "instrument", "lock_class", "nested", "push_batches", "push_streams", "split_by_thread", "read_event_file", "to_ipc", "uninstrument"]
