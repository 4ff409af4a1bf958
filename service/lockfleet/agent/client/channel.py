"""Client side of the wire: how to reach the service (address, TLS, token) and the errors an agent
or a query can meet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from ...errors import OperationalError, RefusedError

MAX_MESSAGE_BYTES = 256 << 20


class AgentError(OperationalError):
    """A client-side failure with a one-line reason."""


class Unreachable(AgentError):
    """The service could not be reached (or went away)."""


class Refused(AgentError, RefusedError):
    """The service refused a request; `code` is the gRPC status code name."""

    def __init__(self, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Connection:
    """Where the service is and how to talk to it. `tls_ca` turns TLS on (the CA that signed the
    server's certificate); `tls_cert`/`tls_key` are this client's certificate (mTLS); `token` is
    sent as `authorization: Bearer <token>`."""

    target: str
    token: str = ""
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    server_name: str = ""        # the name to check the server's certificate against, if not the target's

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def as_connection(target: str | Connection) -> Connection:
    return target if isinstance(target, Connection) else Connection(target)


def read_token(path: str | Path, role: str) -> str:
    """A token from a file: either the token alone, or lines `ROLE TOKEN` (the server's format),
    of which the one for `role` ("ingest" or "query") is taken. Raises AgentError."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AgentError(f"--token-file {path}: cannot read: {exc.strerror or exc}") from None
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0]
    for parts in lines:
        if len(parts) == 2 and parts[0] == role:
            return parts[1]
    raise AgentError(f"--token-file {path}: no '{role} <token>' line in it")


def open_channel(target: str | Connection) -> grpc.Channel:
    """A channel to the service: TLS when the connection names a CA, else insecure."""
    conn = as_connection(target)
    options: list[tuple[str, int | str]] = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    if conn.server_name:
        options.append(("grpc.ssl_target_name_override", conn.server_name))
    if not (conn.tls_ca or conn.tls_cert):
        return grpc.insecure_channel(conn.target, options=options)

    def read(path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise AgentError(f"{what} {path}: cannot read: {exc.strerror or exc}") from None

    if bool(conn.tls_cert) != bool(conn.tls_key):
        raise AgentError("--tls-cert and --tls-key go together")
    creds = grpc.ssl_channel_credentials(root_certificates=read(conn.tls_ca, "--tls-ca"),
                                         private_key=read(conn.tls_key, "--tls-key"),
                                         certificate_chain=read(conn.tls_cert, "--tls-cert"))
    return grpc.secure_channel(conn.target, creds, options=options)


def from_rpc_error(target: str | Connection, err: grpc.RpcError) -> AgentError:
    """Turn a failed call into Unreachable or Refused with a readable message."""
    where = as_connection(target).target
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else "") or str(err)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unreachable(f"cannot reach lockfleet at {where}: {code.name}: {_one_line(details)}")
    return Refused(code.name, f"lockfleet at {where} answered {code.name}: {_one_line(details)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())
