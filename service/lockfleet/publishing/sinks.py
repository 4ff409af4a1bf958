"""Where publications go. Each sink gets every publication of the outbox once, in order; `send`
returns once the sink acknowledged it and raises `SinkError` otherwise (the publisher then backs
off and retries the same publication).

- `JsonlSink`: appends each publication as one line to `<data-dir>/alerts.jsonl` (fsynced). On
  start it reads the file's last line, so that a crash between the append and the cursor's save
  never writes a line twice.
- `AlertmanagerSink`: Prometheus Alertmanager's API v2, `POST <url>/api/v2/alerts`. One
  Alertmanager alert per finding, identified by a stable label set, so that a later publication
  of the same finding (it grew) updates it in place: `alertname` (per kind, lockdep's words),
  `kind`, `locks` (the finding's locks in its order, joined by ","), `severity` (`critical` for
  the kinds that can deadlock, `warning` for a bad unlock), `finding` (the id), `service="lockfleet"`,
  plus any `--alertmanager-label`. The lockdep-style report is the `description` annotation.
  A lock-order finding does not go away by itself: `endsAt` is set `ttl` ahead (default a year).
- `WebhookSink`: `POST <url>` of the publication as JSON (`Content-Type: application/json`), with
  `X-Lockfleet-Seq`, `X-Lockfleet-Event`, `Idempotency-Key` (`<finding id>/<seq>`) and, given a
  secret, `X-Lockfleet-Signature: sha256=<hex HMAC-SHA256 of the body>`. Any 2xx is an ack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ..errors import OperationalError
from ..store.jsonfiles import JsonLines

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
ALERTNAMES = {
    "circular": "LockdepCircularLockingDependency",
    "recursive": "LockdepRecursiveLocking",
    "bad_unlock": "LockdepBadUnlockBalance",
    "irq_inversion": "LockdepIrqLockInversion",
    "inconsistent_state": "LockdepInconsistentLockState",
}
SUMMARIES = {
    "circular": "possible circular locking dependency",
    "recursive": "possible recursive locking",
    "bad_unlock": "bad unlock balance",
    "irq_inversion": "irq-safe -> irq-unsafe lock order",
    "inconsistent_state": "inconsistent lock state",
}
SEVERITY = {"bad_unlock": "warning"}   # every other kind can deadlock: critical
USER_AGENT = "lockfleet"


class SinkError(OperationalError):
    """The sink did not acknowledge a publication (the message says why)."""


class SinkRejected(SinkError):
    """The sink refused this publication for good (an HTTP 4xx other than 408 and 429): sending the
    same bytes again will not help. After a few tries the publisher dead-letters it."""


TRANSIENT_4XX = (408, 429)      # request timeout, too many requests: retried like a 5xx


class Sink:
    """One destination. `key` identifies it across restarts (its cursor); `name` is for people."""

    key = ""
    name = ""

    def recover(self, cursor: int) -> int:
        """Called once before the first send, with the stored cursor; returns the cursor to resume
        from (a sink that can tell what it already holds may move it forward)."""
        return cursor

    def send(self, publication: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlSink(Sink):
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.key = "jsonl"
        self.name = f"jsonl:{self.path.name}"
        self._file = JsonLines(self.path)

    def recover(self, cursor: int) -> int:
        records = self._file.open()
        last = max((int(r.get("seq", 0)) for r in records[-1:]), default=0)
        return max(cursor, last)

    def send(self, publication: dict[str, Any]) -> None:
        try:
            self._file.append(publication)
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._file.close()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through a proxy
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace").strip()
        error = SinkRejected if 400 <= exc.code < 500 and exc.code not in TRANSIENT_4XX else SinkError
        raise error(f"{url} answered HTTP {exc.code}{': ' + ' '.join(detail.split()) if detail else ''}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SinkError(f"cannot POST to {url}: {reason}") from None


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alertmanager_alert(pub: dict[str, Any], extra_labels: dict[str, str] | None = None,
                       ttl_seconds: float = 365 * 86400.0, generator_url: str = "") -> dict[str, Any]:
    """The Alertmanager API v2 alert (postableAlert) for one publication."""
    alert = pub["alert"]
    kind = alert["kind"]
    locks = list(alert["locks"])
    labels = {
        **(extra_labels or {}),
        "alertname": ALERTNAMES.get(kind, "LockfleetFinding"),
        "kind": kind,
        "locks": ",".join(locks),
        "severity": SEVERITY.get(kind, "critical"),
        "finding": alert["id"],
        "service": "lockfleet",
    }
    order = " -> ".join(locks + locks[:1]) if kind == "circular" else ", ".join(locks)
    hosts = ", ".join(alert.get("hosts", ()))
    growth = ""
    if pub["event"] == "grew":
        bits = ([f"new host(s) {', '.join(pub['new_hosts'])}"] if pub.get("new_hosts") else []) + \
               ([f"new dependency kind(s) {'; '.join(pub['new_kinds'])}"] if pub.get("new_kinds") else [])
        growth = "; grew: " + ", ".join(bits)
    annotations = {
        "summary": f"{SUMMARIES.get(kind, kind)}: {order} (hosts {hosts or 'unknown'}){growth}",
        "description": pub.get("report", ""),
        "hosts": hosts,
        "publication": f"{pub['seq']} {pub['event']}",
    }
    single = alert.get("single_host")
    annotations["single_host"] = single or "none: no single host took the whole finding"
    starts = int(pub.get("first_published_ns") or pub["published_ns"])
    ends = datetime.fromtimestamp(pub["published_ns"] / 1e9, tz=UTC) + timedelta(seconds=ttl_seconds)
    out = {"labels": labels, "annotations": annotations, "startsAt": _rfc3339(starts),
           "endsAt": ends.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    if generator_url:
        out["generatorURL"] = generator_url
    return out


class AlertmanagerSink(Sink):
    def __init__(self, url: str, extra_labels: dict[str, str] | None = None, ttl_seconds: float = 365 * 86400.0,
                 timeout: float = HTTP_TIMEOUT) -> None:
        base = url.rstrip("/")
        self.url = base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"
        self.key = f"alertmanager:{self.url}"
        self.name = f"alertmanager:{urllib.parse.urlsplit(self.url).netloc}"
        self.extra_labels = dict(extra_labels or {})
        self.ttl_seconds = ttl_seconds
        self.timeout = timeout

    def send(self, publication: dict[str, Any]) -> None:
        body = json.dumps([alertmanager_alert(publication, self.extra_labels, self.ttl_seconds)]).encode()
        _post(self.url, body, {}, self.timeout)


def signature(secret: bytes, body: bytes) -> str:
    """The X-Lockfleet-Signature header value for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink(Sink):
    def __init__(self, url: str, secret: bytes | None = None, timeout: float = HTTP_TIMEOUT) -> None:
        self.url = url
        self.key = f"webhook:{url}"
        self.name = f"webhook:{urllib.parse.urlsplit(url).netloc}"
        self.secret = secret
        self.timeout = timeout

    def send(self, publication: dict[str, Any]) -> None:
        body = json.dumps(publication, sort_keys=True).encode()
        headers = {"X-Lockfleet-Seq": str(publication["seq"]), "X-Lockfleet-Event": publication["event"],
                   "Idempotency-Key": f"{publication['id']}/{publication['seq']}"}
        if self.secret:
            headers["X-Lockfleet-Signature"] = signature(self.secret, body)
        _post(self.url, body, headers, self.timeout)


def read_secret(path: str | os.PathLike[str]) -> bytes:
    """A webhook secret from a file (surrounding blanks and newlines dropped); ValueError if unusable."""
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(f"--webhook-secret-file {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) < 16:
        raise ValueError(f"--webhook-secret-file {path}: the secret must be at least 16 bytes")
    return data


def check_url(url: str, what: str) -> str:
    """An http(s) URL with a host, or ValueError naming the option."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} {url!r}: expected an http:// or https:// URL")
    return url
