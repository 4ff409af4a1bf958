"""The irq rule for read locks as a command-line option: `lockfleet analyze --irq-rule`, and a
snapshot that keeps the rule it was taken under (docs/semantics.md)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from conftest import run_lockfleet
from eventgen import Stream, events

from lockfleet import Engine


def read_recursion3() -> Stream:
    """lib/locking-selftest.c irq_read_recursion3 (wlock): irqs off WL(B) WL(A); RL(A) irqs on;
    RL(B) in hardirq. Since 5.10 lockdep reports it (B's read IN usage counts, the path leaving B
    held exclusive; A's read ON usage counts, the path ending in a write)."""
    s = Stream()
    t = [s.thread() for _ in range(3)]
    with t[0].irqs_disabled():
        t[0].write_lock("B").lock("A").unlock("A").unlock("B")
    t[1].read_lock("A").unlock("A")
    with t[2].hardirq():
        t[2].read_lock("B").unlock("B")
    return s


def test_analyze_irq_rule_option(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_batches([events(read_recursion3().rows, host_column=False)]), path)
    found = {}
    for rule in ("5.10", "pre-5.10"):
        proc = run_lockfleet("analyze", path, "--json", "--alerts-only", "--irq-rule", rule)
        assert proc.returncode == 0, proc.stderr
        found[rule] = [(a["kind"], a["locks"]) for a in json.loads(proc.stdout)["alerts"]]
    assert found == {"5.10": [("irq_inversion", ["B", "A"])], "pre-5.10": []}
    proc = run_lockfleet("analyze", path, "--irq-rule", "4.19")
    assert proc.returncode == 2 and "--irq-rule" in proc.stderr


def test_snapshot_keeps_its_irq_rule() -> None:
    rows = read_recursion3().rows
    for rule, want in (("5.10", 1), ("pre-5.10", 0)):
        eng = Engine(irq_rule=rule)
        eng.ingest(events(rows[:4], host_column=False), host="h")    # B -> A, then nothing more
        again = Engine.restore(eng.snapshot())
        assert again.irq_rule == rule
        again.ingest(events(rows[4:], host_column=False), host="h")  # the usages that complete it
        assert len([a for a in again.alerts() if a.kind == "irq_inversion"]) == want
