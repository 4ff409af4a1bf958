"""`python -m lockfleet.cli ...`: the `lockfleet` command."""

from .main import run

run()
