"""A small version of benchmarks/load.py: 100 concurrent asyncio agent streams in two processes
against one `lockfleet serve` over loopback for a few seconds: zero errors, nothing lost (the
service's event count equals what was acked), in-flight bytes within their bound. Latency figures
are printed, never asserted (docs/RELIABILITY.md has the full run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from load import ok, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_a_hundred_concurrent_streams_lose_nothing_and_stay_bounded():
    r = run(streams=100, procs=2, seconds=4.0, interval=0.5, rows=64, max_inflight_bytes=8 << 20, progress=False)
    print(json.dumps(r))
    assert r["errors"] == 0, r["error_samples"]
    assert r["batches_sent"] == r["batches_acked"] >= 100 * 6
    assert r["server_events"] == r["events_acked"] == r["batches_acked"] * 64
    assert r["inflight_bytes_peak"] <= r["inflight_bytes_limit"]
    assert ok(r)
