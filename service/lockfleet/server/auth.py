"""Who may do what: bearer tokens per role, and the host a client certificate stands for.

Token file (`--token-file`): one token per line, `ingest <token>`, `query <token>` or
`admin <token>`; blank lines and lines starting with `#` are ignored; a role may have several tokens
(rotation). Clients send `authorization: Bearer <token>` metadata. An ingest token opens
`lockfleet.v1.IngestService`, a query token the reads of `lockfleet.v1.QueryService`; an admin token opens all of
Query, including the calls that change what is published (`Suppress`, `Unsuppress`), which a query
token does not. Health and reflection stay open (they reveal no data). Tokens are compared in
constant time, against every token of the role.

Client certificates (`--client-ca`): the host a certificate stands for is its subject CN and each of
its DNS subject alternative names; a certificate whose subject has OU=lockfleet-relay is a relay's,
which may push for any host.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from ..errors import InputError
from .gateway import ANYONE, Peer

ROLES = ("ingest", "query", "admin")
RELAY_OU = "lockfleet-relay"
_SERVICE_ROLE = {"/lockfleet.v1.IngestService/": "ingest", "/lockfleet.v1.QueryService/": "query"}
# Calls that change state rather than read it, and the role they need instead of their service's.
ADMIN_METHODS = frozenset({"/lockfleet.v1.QueryService/Suppress", "/lockfleet.v1.QueryService/Unsuppress"})
# The roles that may make a call needing a role (an admin may also read).
_GRANTS = {"ingest": ("ingest",), "query": ("query", "admin"), "admin": ("admin",)}


class TokenFileError(InputError):
    """The token file is missing or malformed (the message names the line)."""


@dataclass(frozen=True)
class Tokens:
    by_role: dict[str, tuple[bytes, ...]] = field(default_factory=dict)

    def role_of(self, token: bytes) -> str:
        """The role a token grants, or "" (constant time in the token and over all tokens)."""
        found = ""
        for role in ROLES:
            for known in self.by_role.get(role, ()):
                if hmac.compare_digest(known, token) and not found:
                    found = role
        return found


def load_tokens(path: str | Path) -> Tokens:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise TokenFileError(f"--token-file {path}: cannot read: {exc.strerror or exc}") from None
    by_role: dict[str, list[bytes]] = {r: [] for r in ROLES}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            raise TokenFileError(f"--token-file {path} line {n}: expected 'ingest <token>', 'query <token>' "
                                 "or 'admin <token>'")
        if len(parts[1]) < 16:
            raise TokenFileError(f"--token-file {path} line {n}: a token must be at least 16 characters")
        by_role[parts[0]].append(parts[1].encode())
    if not any(by_role.values()):
        raise TokenFileError(f"--token-file {path}: no tokens in it")
    return Tokens({r: tuple(v) for r, v in by_role.items()})


def bearer(metadata: Any) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            if text[:7].lower() == "bearer ":
                return text[7:].strip().encode()
            return b""
    return None


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses Ingest and Query calls without a token of their role."""

    def __init__(self, tokens: Tokens, on_denied: Callable[[str], None] | None = None) -> None:
        self._tokens = tokens
        self._on_denied = on_denied or (lambda _r: None)

    def set_tokens(self, tokens: Tokens) -> None:
        """Rotation (SIGHUP): calls from now on are checked against `tokens`; calls already
        admitted go on."""
        self._tokens = tokens

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method: str = details.method
        need = "admin" if method in ADMIN_METHODS else \
            next((role for prefix, role in _SERVICE_ROLE.items() if method.startswith(prefix)), "")
        handler = continuation(details)
        if not need or handler is None:
            return handler
        token = bearer(details.invocation_metadata)
        if token is None:
            return self._deny(handler, grpc.StatusCode.UNAUTHENTICATED, "no_token",
                              f"{method} needs 'authorization: Bearer <{need} token>' metadata")
        role = self._tokens.role_of(token)
        if not role:
            return self._deny(handler, grpc.StatusCode.UNAUTHENTICATED, "bad_token", "the bearer token is not valid")
        if role not in _GRANTS[need]:
            hint = " (add an 'admin <token>' line to the server's --token-file)" if need == "admin" else ""
            return self._deny(handler, grpc.StatusCode.PERMISSION_DENIED, "wrong_role",
                              f"a {role} token does not grant {need} access ({method}){hint}")
        return handler

    def _deny(self, handler: Any, code: grpc.StatusCode, reason: str, message: str) -> Any:
        self._on_denied(reason)

        def abort(_request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(code, message)

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(abort, handler.request_deserializer, handler.response_serializer)


_RDN_SPLIT = re.compile(r"(?<!\\),")


def subject_fields(subject: str) -> list[tuple[str, str]]:
    """An RFC 2253 subject ("OU=x,CN=y") as (attribute, value) pairs."""
    out = []
    for part in _RDN_SPLIT.split(subject):
        key, sep, value = part.partition("=")
        if sep:
            out.append((key.strip().upper(), value.strip().replace("\\,", ",")))
    return out


def peer_of(context: grpc.ServicerContext, mtls: bool) -> Peer:
    """The authenticated client of a call (ANYONE unless client certificates are required)."""
    if not mtls:
        return ANYONE
    auth = context.auth_context()

    def values(key: str) -> list[str]:
        return [v.decode(errors="replace") for v in auth.get(key, ())]

    subject = " ".join(values("x509_subject"))
    fields = subject_fields(subject)
    names = set(values("x509_common_name")) | set(values("peer_dns"))
    if not names:
        names = {v for k, v in fields if k == "CN"}
    relay = any(k == "OU" and v == RELAY_OU for k, v in fields)
    return Peer(mtls=True, names=frozenset(n for n in names if n), relay=relay, label=subject)
