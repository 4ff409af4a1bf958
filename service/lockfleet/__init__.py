"""lockfleet: the kernel's lockdep, fleet-wide.

    >>> from lockfleet import Engine
    >>> eng = Engine()
    >>> eng.ingest(batch, host="web-1")   # -> the Alerts this batch raised
"""

__version__ = "0.1.0"   # the one version string: pyproject.toml and every --version read it

from .alerts.model import Alert, Link, Occurrence, Usage
from .engine import Engine
from .errors import LockfleetError, OperationalError, UsageError
from .events import EventError

__all__ = ["Alert", "Engine", "EventError", "Link", "LockfleetError", "Occurrence", "OperationalError", "Usage",
           "UsageError", "__version__"]
