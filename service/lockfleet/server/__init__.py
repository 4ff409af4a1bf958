"""The lockfleet service: gRPC servicers in front of a gateway that feeds the engine durably.

Knows nothing of how cycles are found: it decodes, checks, dedupes, logs and asks the Engine.
"""

from __future__ import annotations

from typing import Any

from .config import Limits, ServeConfig

__all__ = ["Limits", "ServeConfig", "Service", "ServiceError", "UsageError", "serve_forever"]


def __getattr__(name: str) -> Any:   # the gRPC server is imported only when asked for
    if name in ("Service", "ServiceError", "UsageError", "serve_forever"):
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
