"""What an Agent's batcher, sender and public methods share: one lock and the conditions they
wait on, whether the Agent is closing, stopped or failed, and the counters of what it recorded,
sent and had acknowledged. Every field is read and written under `lock` unless it says so."""

from __future__ import annotations

import _thread
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .channel import AgentError

# The primitives the Agent itself uses, taken before `instrument()` may patch `threading`.
allocate_lock = _thread.allocate_lock
Condition = threading.Condition
Thread = threading.Thread
get_native_id = threading.get_native_id
time_ns = time.time_ns
monotonic = time.monotonic

THREAD_PREFIX = "lockfleet-agent"


class StreamState:
    """The state one Agent's threads share (see the module's documentation)."""

    def __init__(self) -> None:
        self.lock = allocate_lock()
        self.cut_cond = Condition(self.lock)     # the batcher waits here
        self.send_cond = Condition(self.lock)    # the sender and the request generator wait here
        self.room_cond = Condition(self.lock)    # flush, close and blocked writers wait here
        self.wake = threading.Event()            # interrupts the sender's backoff sleep (no lock)
        self.closing = False
        self.stop = False
        self.error: AgentError | None = None
        self.events_ok = True                    # False once closing, failed, or sending batches
        self.open_early = False                  # connect(): open the Push call before any event
        self.flush_upto = 0                      # cut everything accepted up to here now
        # accepted events = cut_total + what the batcher still buffers
        self.cut_total = 0          # events taken out of the buffer into batches
        self.settled = 0            # of them, acked or refused for good
        self.inflight = 0           # cut_total - settled (read without the lock by the hot path)
        self.prebuilt_total = 0     # pre-built batches accepted (they may be empty: counted apart)
        self.prebuilt_settled = 0
        self.acked_events = 0
        self.applied_events = 0
        self.refused_events = 0
        self.dropped = 0
        self.batches_cut = 0
        self.batches_acked = 0
        self.duplicates = 0
        self.refused_batches = 0
        self.reconnects = 0
        self.calls = 0
        self.connected = False
        self.new_alerts: list[str] = []
        self.last_error = ""

    def notify_all_locked(self) -> None:
        self.cut_cond.notify_all()
        self.send_cond.notify_all()
        self.room_cond.notify_all()
