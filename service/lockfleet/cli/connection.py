"""The one set of connection options of every command that talks to a service (`--target`,
`--token`, `--token-file`, `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`) and the
`Connection` they make."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .common import EXIT_USAGE, CliError, hostport

DEFAULT_TARGET = "127.0.0.1:50551"


def add_connection_options(p: argparse.ArgumentParser, role: str, *, default: str | None = DEFAULT_TARGET,
                           target_help: str = "") -> None:
    """Add the connection options to `p`; `role` is the token's role (ingest, query or admin).
    `default=None` leaves `--target` unset unless given (a command that talks to a service only
    when asked, as `dmesg --push`); `connection()` then falls back to DEFAULT_TARGET."""
    p.add_argument("--target", metavar="HOST:PORT", type=hostport, default=default,
                   help=target_help or f"address of the lockfleet service (default: {DEFAULT_TARGET})")
    g = p.add_argument_group("connection security (default: plain gRPC, no token)")
    g.add_argument("--token", metavar="TOKEN", default="", help=f"the {role} bearer token")
    g.add_argument("--token-file", metavar="FILE",
                   help=f"a file with the token alone, or with an '{role} <token>' line (the server's format)")
    g.add_argument("--tls-ca", metavar="PEM", help="use TLS, trusting the server certificate this CA signed")
    g.add_argument("--tls-cert", metavar="PEM", help="this client's certificate (mTLS)")
    g.add_argument("--tls-key", metavar="PEM", help="this client's private key (mTLS)")
    g.add_argument("--tls-server-name", metavar="NAME", default="",
                   help="check the server certificate against NAME instead of the --target host")


def connection(args: argparse.Namespace, role: str) -> Any:
    """The `lockfleet.agent.Connection` the options in `args` describe, checked: unreadable files
    and options that do not go together are a `CliError` with status 2."""
    from ..agent import AgentError, Connection, read_token

    token = args.token
    if args.token_file:
        try:
            token = read_token(args.token_file, role)
        except AgentError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
    for option in ("tls_ca", "tls_cert", "tls_key"):
        path = getattr(args, option)
        if path and not os.access(path, os.R_OK):
            raise CliError(f"--{option.replace('_', '-')} {path}: cannot read it", EXIT_USAGE)
    if (args.tls_cert or args.tls_key) and not args.tls_ca:
        raise CliError("--tls-cert/--tls-key need --tls-ca", EXIT_USAGE)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    return Connection(args.target or DEFAULT_TARGET, token=token, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, server_name=args.tls_server_name)
