"""`lockfleet report`: one self-contained HTML page with the findings (lockdep text and cycle drawn),
the aggregates as tables, and plots; checked in a real browser (headless Debian chromium: skipped,
saying why, where it is absent; a failure under CI=true)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from html import unescape

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import require_program  # noqa: E402
from test_offline_fixtures import service_run, workload, write_archive  # noqa: E402

from lockfleet.cli import main  # noqa: E402

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _headline(text: str) -> str:
    return next(ln.strip() for ln in text.splitlines() if "WARNING" in ln)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    recs = workload(7, hosts=4, batches=30)
    eng = service_run(recs)
    archive = write_archive(tmp, recs)
    out = tmp / "report.html"
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["report", str(archive), "-o", str(out), "--title", "fleet <report> & co"]) == 0
    assert "wrote" in buf.getvalue()
    return out, eng.alerts()


def test_page_is_self_contained_and_holds_everything(report):
    out, alerts = report
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<(script|link|img|iframe)\b", html)            # nothing to fetch
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "fleet &lt;report&gt; &amp; co" in html                         # escaped
    kinds = {a.kind for a in alerts}
    assert "circular" in kinds and len(alerts) > 1
    for a in alerts:
        assert f'id="{a.id}"' in html
        assert _headline(a.render()) in html
    rings = html.count('class="ring"')
    assert rings == sum(a.kind in ("circular", "irq_inversion") for a in alerts)
    for t in ("Events per lock class", "Hold times per lock class", "Dependencies", "Hosts",
              "Locks most often held while others are taken", "Events over time"):
        assert t in html
    assert html.count('class="chart"') >= 2                               # timeline + hold times
    # every lock of every cycle is named in its drawing
    for a in alerts:
        if a.kind == "circular":
            section = html[html.index(f'id="{a.id}"'):]
            svg = section[: section.index("</svg>")]
            for lock in a.locks:
                assert f"<title>{lock}</title>" in unescape(svg)


def test_page_renders_in_headless_chromium(report, tmp_path):
    browser = require_program("chromium", "chromium")
    out, alerts = report
    proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           "--dump-dom", out.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dom = proc.stdout
    assert "<svg" in dom and "</html>" in dom
    for a in alerts:
        assert a.id in dom
        assert _headline(a.render()) in unescape(dom)
