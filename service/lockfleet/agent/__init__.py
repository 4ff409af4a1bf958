"""The agent side: the Agent SDK (buffered, acknowledged event streams), instrumentation of
Python programs' locks, the fleet simulator, event files, pushing, and queries of the service."""

from .channel import AgentError, Connection, Refused, Unreachable, read_token
from .files import EventFile, FileError, read_event_file, to_ipc

# after the submodule is imported, so that `lockfleet.agent.instrument` is the function
from .instrument import instrument, lock_class, nested, uninstrument
from .push import PushResult, Stream, push_batches, push_streams
from .query import AlertView, ChainView, fetch_alerts, fetch_chain, fetch_stats
from .sdk import Agent, AgentClosed

__all__ = [
           "Agent",
           "AgentClosed",
           "AgentError",
           "AlertView",
           "ChainView",
           "Connection",
           "EventFile",
           "FileError",
           "PushResult",
           "Refused",
           "Stream",
           "Unreachable",
           "fetch_alerts",
           "fetch_chain",
           "fetch_stats",
           "instrument",
           "lock_class",
           "nested",
           "push_batches",
           "push_streams",
           "read_event_file",
           "read_token",
           "to_ipc",
           "uninstrument",
]
