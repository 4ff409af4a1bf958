"""The agent side, by role:

- `client/`: the client SDK: the `Agent` (buffered, acknowledged event streams), how to reach a
  service (`channel`), event files (`event_files`), pushing streams of batches (`push`) and
  fetching what the service knows (`fetch`);
- event sources: `kernel/` (lockdep reports in kernel logs, /proc/lockdep dumps and the procfs
  agent), `pylocks/` (a Python program's threading locks), `native/` (the pthread interposer of
  `lockfleet trace`);
- `edgemode`: run the core on the host and ship only what is new;
- `simulator`: a fleet of agent processes with a seeded lock workload.

This package exports the client SDK and the instrumentation entry points."""

from .client.channel import AgentError, Connection, Refused, Unreachable, read_token
from .client.event_files import EventFile, FileError, read_event_file, to_ipc
from .client.fetch import AlertView, ChainView, fetch_alerts, fetch_chain, fetch_stats
from .client.push import PushResult, Stream, push_batches, push_streams, split_by_thread
from .client.sdk import Agent, AgentClosed
from .pylocks.instrument import instrument, lock_class, nested, uninstrument

__all__ = ["Agent", "AgentClosed", "AgentError", "AlertView", "ChainView", "Connection", "read_token", "EventFile",
           "FileError", "PushResult", "Refused", "Stream", "Unreachable", "fetch_alerts", "fetch_chain", "fetch_stats",
           "instrument", "lock_class", "nested", "push_batches", "push_streams", "split_by_thread", "read_event_file", "to_ipc", "uninstrument"]
