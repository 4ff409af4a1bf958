"""lockfleet: the kernel's lockdep, fleet-wide.

    >>> from lockfleet import Engine
    >>> eng = Engine()
    >>> eng.ingest(batch, host="web-1")   # -> the Alerts this batch raised
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"   # the one version string: pyproject.toml and every --version read it

from .errors import LockfleetError, OperationalError, UsageError
from .events import EventError

if TYPE_CHECKING:
    from .engine import Engine
    from .findings.model import Alert, Link, Occurrence, Usage

__all__ = ["Alert", "Engine", "EventError", "Link", "LockfleetError", "Occurrence", "OperationalError", "Usage",
           "UsageError", "__version__"]

# The engine and the findings model load when first asked for: a report's renderer reads
# __version__ from here, and importing the package must not import the renderer back.
_LAZY = {"Engine": "engine", "Alert": "findings.model", "Link": "findings.model", "Occurrence": "findings.model",
         "Usage": "findings.model"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
