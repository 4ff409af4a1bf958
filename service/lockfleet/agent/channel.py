"""Client side of the wire: a channel to the service and the errors an agent or a query can meet."""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 256 << 20


class AgentError(Exception):
    """A client-side failure with a one-line reason."""


class Unreachable(AgentError):
    """The service could not be reached (or went away)."""


class Refused(AgentError):
    """The service refused a request; `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def open_channel(target: str) -> grpc.Channel:
    """An insecure channel to `target` (HOST:PORT); TLS is for a later release."""
    return grpc.insecure_channel(target, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ])


def from_rpc_error(target: str, err: grpc.RpcError) -> AgentError:
    """Turn a failed call into Unreachable or Refused with a readable message."""
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else "") or str(err)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unreachable(f"cannot reach lockfleet at {target}: {code.name}: {_one_line(details)}")
    return Refused(code.name, f"lockfleet at {target} answered {code.name}: {_one_line(details)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
