"""`lockfleet simulate`: the seeded lock graph (layers, Zipf reuse, planted cycles split across
hosts) makes exactly the planted cycles and no other finding, in an in-memory Engine; and a small
fleet of agent processes against `lockfleet serve` sends what it says and gets every planted
cycle back as a circular alert."""

from __future__ import annotations

import json

import pytest

from lockfleet import Engine
from lockfleet.agent import fetch_alerts, fetch_stats
from lockfleet.agent.client.encoding import rows_to_table as _rows_to_table
from lockfleet.agent.simulator import HostWorkload, SimConfig, make_plan


def test_plan_is_seeded_and_splits_each_cycle_across_hosts():
    cfg = SimConfig(hosts=5, classes=60, layers=5, cycles=4, seed=3)
    plan = make_plan(cfg)
    assert plan == make_plan(cfg) and plan != make_plan(SimConfig(hosts=5, classes=60, layers=5, cycles=4, seed=4))
    assert [len(layer) for layer in plan.layers] == [12] * 5
    background = {name for layer in plan.layers for name in layer}
    assert len(background) == 60
    for p in plan.planted:
        assert len(p.locks) == 3 and len(set(p.hosts)) == 3       # no host takes a whole cycle
        assert not set(p.locks) & background
    assert len(make_plan(SimConfig(hosts=1, cycles=2)).planted[0].locks) == 2


def test_workload_makes_exactly_the_planted_cycles():
    cfg = SimConfig(hosts=3, duration=1.0, classes=40, layers=4, threads=6, depth=4, cycles=3, seed=11)
    plan = make_plan(cfg)
    eng = Engine()
    for i, host in enumerate(plan.hosts):
        work = HostWorkload(cfg, plan, i)
        rows = []
        for step in range(20):
            rows += work.events(1500, elapsed=step * cfg.duration / 20)
        rows += work.finish()
        assert sum(work.planted_taken) == cfg.planted_repeats * len(plan.edges_of(host))
        taken = [sum(1 for r in rows if r[2] == 0 and r[3] == name) for name in plan.layers[0]]
        counts = sorted(taken, reverse=True)
        assert counts[0] > 4 * counts[len(counts) // 2]           # skewed reuse: each host has hot locks
        hot = work.ranked[0][0]
        assert taken[plan.layers[0].index(hot)] == counts[0]
        eng.ingest(_rows_to_table(rows), host=host)
    alerts = eng.alerts()
    assert sorted((a.kind, tuple(sorted(a.locks))) for a in alerts) == sorted(
        ("circular", tuple(sorted(p.locks))) for p in plan.planted)
    assert all(len(a.hosts) == 3 for a in alerts)
    assert eng.stats()["edges"] > 40


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_simulated_fleet_gets_its_planted_cycles_back(lockfleet_cli, lockfleet_server):
    proc = lockfleet_cli("simulate", "--hosts", "3", "--rate", "1500", "--duration", "2", "--cycles", "2",
                         "--seed", "7", "--target", lockfleet_server.target, "--check", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and [p["found"] for p in out["planted"]] == [True, True]
    assert len(out["hosts"]) == 3 and all(h["acked"] == h["events"] >= 2000 for h in out["hosts"])
    assert out["events"] == out["acked"] == fetch_stats(lockfleet_server.target)["events"]
    alerts = [a.data for a in fetch_alerts(lockfleet_server.target)]
    assert sorted(sorted(a["locks"]) for a in alerts) == sorted(sorted(p["locks"]) for p in out["planted"])
    assert all(a["hosts"] == ["sim-0", "sim-1", "sim-2"] for a in alerts)

    text = lockfleet_cli("simulate", "--hosts", "2", "--rate", "500", "--duration", "0.5", "--cycles", "1",
                         "--target", lockfleet_server.target, "--host-prefix", "demo")
    assert text.returncode == 0, text.stderr
    assert "planted cycle 1:" in text.stdout and "demo-1:" in text.stdout
    bad = lockfleet_cli("simulate", "--hosts", "0", "--target", lockfleet_server.target)
    assert bad.returncode == 2 and "--hosts" in bad.stderr
