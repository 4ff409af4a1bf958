"""The lockfleet service: gRPC servicers in front of a gateway that feeds the engine durably.

Knows nothing of how cycles are found: it decodes, dedupes, logs and asks the Engine.
"""

from .app import Service, ServiceError, UsageError, serve_forever

__all__ = ["Service", "ServiceError", "UsageError", "serve_forever"]
