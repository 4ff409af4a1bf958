"""Headless Chromium driven over the DevTools protocol (a websocket, `websocket-client`): enough to
open a page, run JavaScript in it, wait for a condition, click and type, and take screenshots.

    with Browser.launch(tmp_path) as b:      # Debian's `chromium`
        b.goto("http://127.0.0.1:8080/")
        b.wait_for("document.querySelector('#findings') !== null")
        b.screenshot(path)
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-allow-origins=*")
WIDTH = 1400


def chromium_or_skip() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not on PATH under CI=true: .ci/install-deps should have installed it")
        pytest.skip("chromium is not on PATH (Debian's `chromium`; .ci/install-deps installs it)")
    return exe


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, proc: subprocess.Popen[bytes], ws: Any, port: int) -> None:
        self.proc, self.ws, self.port = proc, ws, port
        self._id = 0
        self.events: list[dict[str, Any]] = []

    @classmethod
    def launch(cls, workdir: Path, width: int = WIDTH, height: int = 900) -> Browser:
        import websocket

        exe = chromium_or_skip()
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)   # a previous run's, naming a port nobody listens on now
        log = open(workdir / "chromium.log", "wb")
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                 f"--window-size={width},{height}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise BrowserError(f"chromium exited with {proc.returncode}: "
                                   f"{(workdir / 'chromium.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        pages: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not pages:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
            except OSError:
                time.sleep(0.1)
        if not pages:
            proc.kill()
            raise BrowserError("chromium opened no page target")
        ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        b = cls(proc, ws, port)
        b.call("Page.enable")
        b.call("Runtime.enable")
        b.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        return b

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        my = self._id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression[:80]}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.01) -> float:
        """Wait until `expression` is truthy in the page; returns the time.monotonic() it was seen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.js(f"!!({expression})"):
                    return time.monotonic()
            except BrowserError:
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"not true after {timeout}s: {expression}")
            time.sleep(interval)

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(self, selector: str, value: str) -> None:
        """Set an input's value as typing would (input and change events)."""
        self.js(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            el.focus(); el.value = {json.dumps(value)};
            el.dispatchEvent(new Event('input', {{bubbles: true}}));
            el.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page WIDTH pixels wide (the whole page's height when `full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            m = self.call("Page.getLayoutMetrics")
            size = m.get("cssContentSize") or m["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": WIDTH, "height": min(int(size["height"]) + 1, 6000),
                                "scale": 1})
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
