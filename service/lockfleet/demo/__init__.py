"""The demo: the seed report's five-lock cycle, spread over a simulated fleet of four hosts.

    >>> from lockfleet.demo import seed_scenario, HOSTS, CYCLE
    >>> tables = seed_scenario()          # host -> pa.Table of lock events
"""

from .data import DEFAULT_EVENTS, seed_scenario
from .fleet import run_demo
from .scenario import CYCLE, HOSTS, TASKS

__all__ = ["CYCLE", "DEFAULT_EVENTS", "HOSTS", "TASKS", "run_demo", "seed_scenario"]
