"""The web console's HTTP server (`lockfleet serve --http HOST:PORT`): the page and its script
(static files of this package: no build step, nothing fetched from another site, which the
Content-Security-Policy also enforces), a JSON API over `ConsoleViews`, and server-sent events that
follow the publication outbox, as WatchAlerts does.

Security is the gRPC side's: the same TLS certificate and key (and, with --client-ca, client
certificates required), the same bearer tokens. A browser signs in once with its token (POST
/api/session), kept in an HttpOnly, SameSite=Strict cookie; scripts may send `Authorization:
Bearer <token>` instead. A query token reads, an admin token also suppresses and unsuppresses.
Changes need a JSON body and the `X-Lockfleet-Console` header, which no other site's page can send
without a CORS preflight that this server never grants. Without a token file everyone that can
reach the address may do everything, as on gRPC: so without TLS it listens on loopback only, and
answers only requests whose Host is a loopback name (no DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ...errors import LockfleetError
from ...publishing.suppress import SuppressionError
from ..auth import Tokens
from .views import ConsoleViews, NotFound

log = logging.getLogger(__name__)

COOKIE = "lockfleet_token"
CSRF_HEADER = "X-Lockfleet-Console"
STATIC = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
          "console.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEARTBEAT = 15.0
MAX_BODY = 64 * 1024


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _int(q: dict[str, list[str]], key: str, default: int = 0) -> int:
    raw = (q.get(key) or [""])[0].strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"query parameter {key!r}: not an integer: {raw!r}") from None


class _HttpError(LockfleetError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ConsoleServer:
    """Serves the console on (host, port) until `stop()`; `port` is the one bound."""

    def __init__(self, host: str, port: int, views: ConsoleViews, tokens: Tokens | None = None,
                 ssl_context: ssl.SSLContext | None = None, max_streams: int = 16) -> None:
        self.views = views
        self.tokens = tokens
        self.tls = ssl_context is not None
        self.max_streams = max_streams
        self.streams = 0
        self.allowed_hosts = {host.strip("[]").lower(), "localhost", "127.0.0.1", "::1"}
        self._streams_lock = threading.Lock()
        self._stopping = threading.Event()
        console = self

        class Handler(_Handler):
            server_console = console

        cls = type("ConsoleHTTPServer", (ThreadingHTTPServer,),
                   {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET, "daemon_threads": True,
                    "allow_reuse_address": True})
        self._httpd = cls((host, port), Handler)
        if ssl_context is not None:   # the handshake happens in the request's thread, not in accept()
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True,
                                                         do_handshake_on_connect=False)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="lockfleet-console", daemon=True)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def role(self, token: str | None) -> str:
        """The role a request has: every role without a token file; else its token's, or ""."""
        if self.tokens is None:
            return "admin"
        if not token:
            return ""
        return self.tokens.role_of(token.encode())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.views.publishing.outbox.wake()
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_console: ConsoleServer
    protocol_version = "HTTP/1.1"
    server_version = "lockfleet-console"
    sys_version = ""

    # -- plumbing ---------------------------------------------------------------------------

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(30)
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", self.client_address, exc)
                raise
            self.connection.settimeout(None)

    def _headers(self, status: int, ctype: str, length: int | None, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self._headers(status, ctype, len(body), extra)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data, default=_jsonable).encode(), "application/json", extra)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is not None:
            return auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:
            return None
        morsel = cookie.get(COOKIE)
        return unquote(morsel.value) if morsel else None

    def _need(self, role: str) -> str:
        have = self.server_console.role(self._token())
        if not have:
            raise _HttpError(401, "sign in with a query or admin token")
        if role == "query" and have not in ("query", "admin"):
            raise _HttpError(403, f"a {have} token does not grant reading the console")
        if role == "admin" and have != "admin":
            raise _HttpError(403, f"a {have} token does not grant {role} access (suppressions need an admin token)")
        return have

    def _body(self) -> dict[str, Any]:
        if self.headers.get(CSRF_HEADER) != "1":
            raise _HttpError(403, f"changes need the {CSRF_HEADER}: 1 header (sent by the console page)")
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            raise _HttpError(415, "send a JSON body (Content-Type: application/json)")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _HttpError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            raise _HttpError(413, f"a body of at most {MAX_BODY} bytes")
        try:
            data = json.loads(self.rfile.read(n) or b"{}")
        except ValueError as exc:
            raise _HttpError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _HttpError(400, "the body must be a JSON object")
        return data

    def _check_host(self) -> None:
        """Without TLS, only names of this machine's loopback (or the address it listens on): a page of
        another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) gets nothing."""
        c = self.server_console
        if c.tls:
            return   # the browser checked the certificate against the name it used
        raw = (self.headers.get("Host") or "").strip().lower()
        name = raw[1:raw.index("]")] if raw.startswith("[") and "]" in raw else raw.rsplit(":", 1)[0]
        if name not in c.allowed_hosts:
            raise _HttpError(421, f"this console answers only to {', '.join(sorted(c.allowed_hosts))} "
                                  f"(the Host header was {raw!r})")

    def _dispatch(self, fn: Any) -> None:
        try:
            self._check_host()
            fn()
        except _HttpError as exc:
            self._json({"error": str(exc)}, exc.status)
        except NotFound as exc:
            self._json({"error": str(exc)}, 404)
        except (ValueError, SuppressionError) as exc:
            self._json({"error": str(exc)}, 400)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except OSError as exc:
            self._json({"error": f"the service could not do it: {exc.strerror or exc}"}, 503)

    # -- routes -----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def _get(self) -> None:
        url = urlsplit(self.path)
        path, q = url.path, parse_qs(url.query)
        v = self.server_console.views

        def arg(key: str) -> str:
            return (q.get(key) or [""])[0]

        if path in ("/", "/index.html"):
            self._send(200, _static("index.html"), STATIC["index.html"])
        elif path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            self._send(200, _static(name), STATIC[name])
        elif path == "/api/session":
            c = self.server_console
            role = c.role(self._token())
            self._json({"role": role, "tokens": c.tokens is not None, "tls": c.tls})
        elif path == "/api/findings":
            self._need("query")
            self._json(v.findings(arg("kind"), arg("host"), arg("lock"), _int(q, "since_ns"), _int(q, "until_ns"),
                                  arg("hide_suppressed") in ("1", "true")))
        elif path == "/api/finding":
            self._need("query")
            self._json(v.finding(arg("id")))
        elif path == "/api/graph.svg":
            self._need("query")
            radius = _int(q, "radius", 1)
            max_edges = _int(q, "max_edges", 60)
            if not 0 <= radius <= 4 or not 1 <= max_edges <= 500:
                raise ValueError("radius is 0..4 and max_edges 1..500")
            layout = arg("layout") or "auto"
            if layout not in ("auto", "builtin"):
                raise ValueError("layout is auto or builtin")
            text, drawer = v.graph_svg(arg("id"), radius, max_edges, layout)
            self._send(200, text.encode(), "image/svg+xml", {"X-Lockfleet-Layout": drawer})
        elif path == "/api/lock":
            self._need("query")
            self._json(v.lock(arg("name")))
        elif path == "/api/hosts":
            self._need("query")
            self._json(v.hosts())
        elif path == "/api/stats":
            self._need("query")
            self._json(v.stats())
        elif path == "/api/suppressions":
            self._need("query")
            self._json(v.suppressions())
        elif path == "/api/events":
            self._need("query")
            self._events(q)
        else:
            raise _HttpError(404, f"nothing at {path}")

    def _post(self) -> None:
        path = urlsplit(self.path).path
        c = self.server_console
        if path == "/api/session":
            body = self._body()
            token = str(body.get("token", "")).strip()
            if c.tokens is None:
                raise _HttpError(400, "this service has no --token-file: no sign-in is needed")
            role = c.role(token)
            if not role:
                raise _HttpError(401, "that token is not valid here")
            if role == "ingest":
                raise _HttpError(403, "an ingest token does not grant reading the console")
            cookie = f"{COOKIE}={quote(token, safe='')}; Path=/; HttpOnly; SameSite=Strict" + \
                ("; Secure" if c.tls else "")
            self._json({"role": role, "tokens": True, "tls": c.tls}, extra={"Set-Cookie": cookie})
        elif path == "/api/session/end":
            self._body()
            cookie = f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if c.tls else "")
            self._json({"role": c.role(None), "tokens": c.tokens is not None, "tls": c.tls},
                       extra={"Set-Cookie": cookie})
        elif path == "/api/suppressions":
            self._need("admin")
            body = self._body()
            author = str(body.get("author") or "").strip() or "console"
            out = c.views.suppress(str(body.get("id", "")), str(body.get("reason", "")), author)
            log.info("suppressed %s by %s (web console): %s", out["suppression"]["id"], author,
                     out["suppression"]["reason"])
            self._json(out, 201)
        else:
            raise _HttpError(404, f"nothing to POST at {path}")

    def _delete(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/api/suppressions":
            raise _HttpError(404, f"nothing to DELETE at {url.path}")
        self._need("admin")
        self._body()
        finding_id = (parse_qs(url.query).get("id") or [""])[0]
        out = self.server_console.views.unsuppress(finding_id)
        log.info("unsuppressed %s (web console)", finding_id)
        self._json(out)

    # -- server-sent events -----------------------------------------------------------------

    def _events(self, q: dict[str, list[str]]) -> None:
        """Publications after `after` (or Last-Event-ID), then each new one as it is made; an
        event when the suppressions change; a comment every HEARTBEAT seconds."""
        c = self.server_console
        outbox = c.views.publishing.outbox
        sups = c.views.publishing.suppressions
        last_id = self.headers.get("Last-Event-ID")
        after = int(last_id) if last_id and last_id.isdigit() else _int(q, "after", -1)
        if after < 0:
            after = outbox.last_seq
        with c._streams_lock:
            if c.streams >= c.max_streams:
                raise _HttpError(503, f"already {c.streams} live streams open (--max-watchers)")
            c.streams += 1
        try:
            self._headers(200, "text/event-stream", None, {"Connection": "close"})
            self.close_connection = True
            self._write(f"retry: 2000\nevent: hello\ndata: {json.dumps({'last_seq': outbox.last_seq})}\n\n")
            version = sups.version
            beat = time.monotonic()
            while not c.stopping and not outbox.readers_closed:
                for rec in outbox.wait_after(after, 1.0, limit=256, reader=True):
                    data = {k: rec[k] for k in ("seq", "event", "id", "kind", "hosts", "new_hosts", "new_kinds",
                                                "published_ns")}
                    self._write(f"id: {rec['seq']}\nevent: publication\ndata: {json.dumps(data)}\n\n")
                    after = rec["seq"]
                    beat = time.monotonic()
                if sups.version != version:
                    version = sups.version
                    self._write(f"event: suppressions\ndata: {json.dumps({'count': len(sups.all())})}\n\n")
                if time.monotonic() - beat >= HEARTBEAT:
                    self._write(": ping\n\n")
                    beat = time.monotonic()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        finally:
            with c._streams_lock:
                c.streams -= 1

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()


def _jsonable(value: object) -> object:
    item = getattr(value, "tolist", None)
    return item() if callable(item) else str(value)

