"""An event source from Python programs: threading's locks replaced by traced versions
(`instrument`) and a program run under them (`run`, `python -m lockfleet.agent.pylocks.run`)."""
