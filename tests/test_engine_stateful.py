"""Hypothesis stateful test of the engine as the service uses it: random interleavings of ingest
(batches of random lock events from several hosts), snapshot, restart (restore the newest snapshot
and replay the batches after it, as the service replays its log), and suppress/unsuppress (the
durable suppressions file, reloaded at each restart). After every step the restarted engine must
equal one that was never restarted (same findings: ids, kinds, locks, hosts; same dependencies
with their kinds), whose dependencies equal the oracle's (tests/oracle.py, docs/semantics.md
restated); the findings a person sees are exactly those not suppressed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lockfleet import Engine
from lockfleet.publishing.suppress import Blessed, Suppressions, effective
from oracle import OracleEngine

LOCKS = ["A", "B", "C", "D"]
row = st.tuples(st.integers(1, 3), st.sampled_from([0, 0, 0, 1, 1, 2]), st.sampled_from(LOCKS),
                st.sampled_from([0, 0, 1, 2]))
batches = st.tuples(st.sampled_from(["h1", "h2", "h3"]), st.lists(row, min_size=1, max_size=12))


def table(rows: list[tuple[int, int, str, int]]) -> pa.Table:
    return pa.table({"ts_ns": pa.array(range(len(rows)), pa.int64()),
                     "tid": pa.array([r[0] for r in rows], pa.int64()),
                     "op": pa.array([r[1] for r in rows], pa.uint8()),
                     "lock": pa.array([r[2] for r in rows], pa.utf8()),
                     "mode": pa.array([r[3] for r in rows], pa.uint8())})


def findings(eng: Engine) -> dict[str, tuple]:
    return {a.id: (a.kind, tuple(a.locks), tuple(a.hosts)) for a in eng.alerts()}


def deps(pairs) -> dict[tuple[str, str], tuple[str, ...]]:  # noqa: ANN001
    return {(a, b): tuple(sorted(k)) for a, b, k in pairs}


class EngineLife(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="lockfleet-stateful-")
        self.sup_path = Path(self.dir.name) / "suppressions.json"
        self.suppressions = Suppressions(self.sup_path).load()
        self.engine = Engine()          # snapshotted and restarted
        self.reference = Engine()       # never restarted
        self.oracle = OracleEngine()
        self.log: list[tuple[str, pa.Table]] = []     # every batch applied, in order
        self.snapshots: list[tuple[int, bytes]] = []  # (batches applied when taken, bytes)
        self.suppressed: set[str] = set()

    def teardown(self) -> None:
        self.dir.cleanup()

    @rule(b=batches)
    def ingest(self, b) -> None:  # noqa: ANN001
        host, rows = b
        t = table(rows)
        self.engine.ingest(t, host=host)
        self.reference.ingest(t, host=host)
        self.oracle.ingest(t.to_batches()[0], host=host)
        self.log.append((host, t))

    @rule()
    def snapshot(self) -> None:
        self.snapshots.append((len(self.log), self.engine.snapshot()))

    @rule()
    def restart(self) -> None:
        """What `lockfleet serve` does at start: the newest snapshot, then the log after it."""
        applied, blob = self.snapshots[-1] if self.snapshots else (0, b"")
        self.engine = Engine.restore(blob) if blob else Engine()
        for host, t in self.log[applied:]:
            self.engine.ingest(t, host=host)
        self.suppressions = Suppressions(self.sup_path).load()

    @precondition(lambda self: bool(self.reference.alerts()))
    @rule(data=st.data())
    def suppress(self, data) -> None:  # noqa: ANN001
        fid = data.draw(st.sampled_from(sorted(findings(self.reference))))
        self.suppressions.add(fid, "reviewed", "stateful")
        self.suppressed.add(fid)

    @precondition(lambda self: bool(self.suppressed))
    @rule(data=st.data())
    def unsuppress(self, data) -> None:  # noqa: ANN001
        fid = data.draw(st.sampled_from(sorted(self.suppressed)))
        self.suppressions.remove(fid)
        self.suppressed.discard(fid)

    @invariant()
    def same_as_never_restarted(self) -> None:
        if not hasattr(self, "engine"):
            return
        assert findings(self.engine) == findings(self.reference)
        assert deps(self.engine.edges()) == deps(self.reference.edges())
        assert self.engine.stats()["events"] == self.reference.stats()["events"]

    @invariant()
    def dependencies_are_the_oracles(self) -> None:
        if not hasattr(self, "engine"):
            return
        want = {pair: tuple(sorted(k)) for pair, k in self.oracle.orc.edges().items()}
        assert deps(self.engine.edges()) == want

    @invariant()
    def shown_findings_are_the_unsuppressed(self) -> None:
        if not hasattr(self, "engine"):
            return
        shown = {a.id for a in self.engine.alerts() if effective(a, self.suppressions, Blessed()) is None}
        assert shown == set(findings(self.reference)) - self.suppressed


EngineLife.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None, database=None,
                                        suppress_health_check=[HealthCheck.too_slow])
test_engine_life = EngineLife.TestCase
