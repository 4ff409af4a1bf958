"""The network between agents and the service cut and restored, for real: the service and two
agents run in their own network namespace (`ip netns`), talking over its loopback, and the test
takes that loopback down mid-stream (twice) and brings it back. The agents resend; the service
ends with every event exactly once (nothing lost, nothing doubled), and the agents saw the cuts.
The cut takes the link down and destroys the established connections (`ss -K`), as a dropped
route or a middlebox reset would. Loopback only: the namespace has no other interface. (`tc netem` would add delay and loss the same
way, but this kernel has no sch_netem; the cut needs only iproute2.)"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import lockfleet_command, require

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
AGENT = Path(__file__).resolve().parent / "faults" / "netagent.py"


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def netns():
    require(os.geteuid() == 0 and shutil.which("ip"), "network namespaces need root and iproute2's ip")
    name = f"lf-test-{os.getpid()}-{random.randrange(1 << 20)}"
    made = _ip("netns", "add", name)
    require(made.returncode == 0, f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        assert _ip("netns", "exec", name, "ip", "link", "set", "lo", "up").returncode == 0
        yield name
    finally:
        _ip("netns", "del", name)


def test_agents_resend_across_network_cuts_and_nothing_is_lost_or_doubled(netns, tmp_path):
    inside = ["ip", "netns", "exec", netns]
    target = "127.0.0.1:47001"            # a fresh namespace: nothing else listens there
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen([*inside, *lockfleet_command(), "serve", "--listen", target, "--data-dir",
                               str(tmp_path / "data")], stdout=subprocess.DEVNULL, stderr=log)
    agents: list[subprocess.Popen[str]] = []
    try:
        def stats() -> dict | None:
            proc = subprocess.run([*inside, *lockfleet_command(), "stats", "--json", "--target", target],
                                  capture_output=True, text=True, timeout=60)
            return json.loads(proc.stdout) if proc.returncode == 0 else None

        deadline = time.monotonic() + 60
        while stats() is None:
            if time.monotonic() >= deadline or server.poll() is not None:
                pytest.fail("the service did not come up:\n" + (tmp_path / "serve.log").read_text())
            time.sleep(0.2)
        n = 1500
        agents = [subprocess.Popen([*inside, sys.executable, str(AGENT), target, f"net-{i}", str(n)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        deadline = time.monotonic() + 60      # both agents streaming before the first cut
        while (stats() or {}).get("events", 0) < 1600:
            if time.monotonic() >= deadline:
                pytest.fail("the agents did not start streaming")
            time.sleep(0.05)
        for down in (1.5, 1.0):               # two cuts while the agents stream
            time.sleep(0.3)
            assert _ip("netns", "exec", netns, "ip", "link", "set", "lo", "down").returncode == 0
            # and the connections with it (with the link down, TCP would otherwise just wait it out)
            killed = subprocess.run([*inside, "ss", "-K", "state", "established"], capture_output=True, text=True,
                                    timeout=30)
            assert killed.returncode == 0, killed.stderr
            time.sleep(down)
            assert _ip("netns", "exec", netns, "ip", "link", "set", "lo", "up").returncode == 0
        results = []
        for a in agents:
            out, err = a.communicate(timeout=150)
            assert a.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        st = stats()
        assert st is not None
        assert st["events"] == 2 * 4 * n, (st["events"], results)           # each event exactly once
        for r in results:
            assert r["acked_events"] == 4 * n and r["unacked_batches"] == 0 and not r["failed"], r
        assert sum(r["reconnects"] for r in results) >= 2, [(r["calls"], r["reconnects"], r["duplicate_batches"], r["last_error"]) for r in results]
        print(f"2 agents x {4 * n} events across 2 loopback cuts: reconnects "
              f"{[r['reconnects'] for r in results]}, duplicate acks {[r['duplicate_batches'] for r in results]}, "
              f"service events {st['events']}, duplicates {st['ingest']['duplicates']}")
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
