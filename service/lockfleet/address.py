"""HOST:PORT addresses: parsing, and whether a host is loopback (the only place we listen
without TLS)."""

from __future__ import annotations

import ipaddress
import socket


def parse_hostport(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); raises ValueError with a readable reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50551)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:50551")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port!r} is not a number in 0..65535")
    return host, int(port)


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True when every address `host` stands for is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def hostport_arg(text: str) -> str:
    """argparse type for a HOST:PORT option: the text itself, or a usage error saying why."""
    import argparse

    try:
        parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text
