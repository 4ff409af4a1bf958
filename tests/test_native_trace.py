"""Native programs through the pthread interposer (`lockfleet trace`, native/lockfleet_preload.c):
small C programs (tests/native/*.c) compiled with `cc` at test time, run under the tracer, their
events checked and fed to the engine (or to a real `lockfleet serve`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockfleet import Engine

from conftest import run_lockfleet

NATIVE = Path(__file__).parent / "native"
ACQUIRE, RELEASE, TRY = 0, 1, 2


@pytest.fixture(scope="session")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> the compiled tests/native/NAME.c."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CI") == "true":
            pytest.fail("no C compiler (cc) under CI=true: it is part of the contract's fresh machine")
        pytest.skip("no C compiler (cc) to build the test programs")
    out = tmp_path_factory.mktemp("native")
    built = {}
    for src in sorted(NATIVE.glob("*.c")):
        exe = out / src.stem
        subprocess.run([cc, "-O1", "-pthread", "-o", str(exe), str(src)], check=True, capture_output=True,
                       timeout=120)
        built[src.stem] = exe
    return built


def trace(out: Path, *argv: str | Path, options: tuple[str, ...] = ()) -> tuple[pa.Table, subprocess.CompletedProcess]:
    """`lockfleet trace -o out OPTIONS -- ARGV`: the events it wrote, and the finished command."""
    proc = run_lockfleet("trace", "-o", out, *options, "--", *argv)
    assert out.exists(), proc.stderr
    return pa.ipc.open_stream(str(out)).read_all(), proc


def alerts_of(table: pa.Table, host: str = "h") -> list:
    eng = Engine()
    eng.ingest(table, host=host)
    return eng.alerts()


def rows(table: pa.Table) -> list[tuple]:
    return [(r["tid"], r["op"], r["lock"], r["mode"]) for r in table.to_pylist()]


def test_abba_across_two_threads_is_one_circular_finding_with_both_sites(programs, tmp_path):
    table, proc = trace(tmp_path / "abba.arrow", programs["abba"])
    assert proc.returncode == 0, proc.stderr
    assert "8 lock events from 1 process(es)" in proc.stderr
    assert set(table.column("lock").to_pylist()) == {"lock_a", "lock_b"}
    assert len(set(table.column("tid").to_pylist())) == 2
    alerts = alerts_of(table)
    assert [a.kind for a in alerts] == ["circular"]
    assert sorted(alerts[0].locks) == ["lock_a", "lock_b"]
    text = alerts[0].render()
    # both orders, each at its own call site, named by the program's symbols
    assert "take_ab+0x" in text and "take_ba+0x" in text
    assert "abba/" in text


@pytest.mark.e2e
def test_abba_as_two_processes_on_two_hosts_is_a_cross_host_finding(programs, lockfleet_server):
    for host, order in (("native-1", "ab"), ("native-2", "ba")):
        proc = run_lockfleet("trace", "--target", lockfleet_server.target, "--host", host, "--",
                             programs["abba"], order)
        assert proc.returncode == 0, proc.stderr
        assert "4 events acked" in proc.stderr
    out = run_lockfleet("alerts", "--json", "--target", lockfleet_server.target)
    assert out.returncode == 0, out.stderr
    alerts = json.loads(out.stdout)["alerts"]
    assert len(alerts) == 1
    assert alerts[0]["kind"] == "circular"
    assert sorted(alerts[0]["locks"]) == ["lock_a", "lock_b"]
    assert alerts[0]["hosts"] == ["native-1", "native-2"]


def test_trylock_adds_no_dependency_into_it_and_failures_record_nothing(programs, tmp_path):
    # m0 then a trylock of m1; later m1 then m0: no cycle, a trylock never blocks
    table, proc = trace(tmp_path / "a.arrow", programs["script"], "L0", "T1", "U1", "U0", "L1", "L0", "U0", "U1")
    assert proc.stdout.split() == ["0"] * 8
    assert [r[1:3] for r in rows(table)][:2] == [(ACQUIRE, "m0"), (TRY, "m1")]
    assert alerts_of(table) == []
    # what is taken after a trylock depends on it: m1 (try) -> m2, then m2 -> m1
    table, _ = trace(tmp_path / "b.arrow", programs["script"], "T1", "L2", "U2", "U1", "L2", "L1", "U1", "U2")
    alerts = alerts_of(table)
    assert [(a.kind, sorted(a.locks)) for a in alerts] == [("circular", ["m1", "m2"])]
    # a failed trylock (EBUSY) and a timed-out timedlock (ETIMEDOUT) record nothing
    table, proc = trace(tmp_path / "c.arrow", programs["script"], "L0", "T0", "D0", "U0")
    assert proc.stdout.split() == ["0", "16", "110", "0"]
    assert [r[1:3] for r in rows(table)] == [(ACQUIRE, "m0"), (RELEASE, "m0")]


def test_rwlock_reads_follow_the_read_rules(programs, tmp_path):
    script = programs["script"]
    # glibc's default rwlock lets a reader in while it is read-held: recursive reads (mode 2),
    # and r0 (read) -> m2, m2 -> r0 (read) is no deadlock
    table, _ = trace(tmp_path / "a.arrow", script, "R0", "L2", "U2", "V0", "L2", "R0", "V0", "U2", "Y0", "V0")
    reads = [r for r in rows(table) if r[2] == "r0" and r[1] != RELEASE]
    assert [(op, mode) for _, op, _, mode in reads] == [(ACQUIRE, 2), (ACQUIRE, 2), (TRY, 2)]
    assert alerts_of(table) == []
    # a writer-preferring rwlock queues readers behind a waiting writer: shared reads (mode 1), a cycle
    table, _ = trace(tmp_path / "b.arrow", script, "R2", "L2", "U2", "V2", "L2", "R2", "V2", "U2")
    assert {r[3] for r in rows(table) if r[2] == "r2" and r[1] != RELEASE} == {1}
    assert [sorted(a.locks) for a in alerts_of(table)] == [["m2", "r2"]]
    # a write lock is exclusive: r0 (write) -> m2, m2 -> r0 (read) is a cycle
    table, _ = trace(tmp_path / "c.arrow", script, "W0", "L2", "U2", "V0", "L2", "R0", "V0", "U2")
    assert [sorted(a.locks) for a in alerts_of(table)] == [["m2", "r0"]]


def test_fork_gives_no_false_finding(programs, tmp_path):
    table, proc = trace(tmp_path / "fork.arrow", programs["fork"])
    assert proc.returncode == 0, proc.stderr
    assert "from 2 process(es)" in proc.stderr
    tids = sorted(set(table.column("tid").to_pylist()))
    assert len(tids) == 2
    child = [r for r in rows(table) if r[0] == max(tids)]
    # the child's thread goes on holding what its parent's thread held at the fork (outer, and
    # guard from the atfork prepare handler), and releases them without a bad_unlock
    assert [r[1:3] for r in child[:3]] == [(ACQUIRE, "outer"), (ACQUIRE, "guard"), (RELEASE, "guard")]
    assert alerts_of(table) == []
    # nothing the parent recorded before the fork is recorded again for the child
    parent = [r for r in rows(table) if r[0] == min(tids)]
    assert len(parent) == 4 + 4 + 4          # nest; outer and guard around the fork; nest
    assert len(child) == 3 + 2 + 1 + 4       # held at the fork and guard released; inner; outer; nest


def test_cond_wait_releases_and_retakes_its_mutex_without_false_finding(programs, tmp_path):
    table, proc = trace(tmp_path / "cond.arrow", programs["cond"])
    assert proc.returncode == 0, proc.stderr
    assert alerts_of(table) == []
    sites = [r["site"] or "" for r in table.to_pylist() if r["lock"] == "queue" and r["op"] == ACQUIRE]
    # the consumer waited (the producer sleeps between items): retaken at the wait's call site
    assert sum(1 for s in sites if s.startswith("consumer+")) > 50
    for tid in set(table.column("tid").to_pylist()):
        mine = [r for r in rows(table) if r[0] == tid and r[2] == "queue"]
        assert sum(r[1] == ACQUIRE for r in mine) == sum(r[1] == RELEASE for r in mine)


@pytest.mark.parametrize("how,status", [("exit", 0), ("kill", 128 + 9), ("abort", 128 + 6)])
def test_a_program_that_ends_holding_locks_still_delivers_its_events(programs, tmp_path, how, status):
    table, proc = trace(tmp_path / "e.arrow", programs["exits"], how)
    assert proc.returncode == status, proc.stderr
    assert [r[1:3] for r in rows(table)] == [(ACQUIRE, "lock_a"), (ACQUIRE, "lock_b")]


def test_lock_classes_by_static_symbol_init_site_or_first_site(programs, tmp_path):
    table, _ = trace(tmp_path / "a.arrow", programs["classes"])
    acquired = [r["lock"] for r in table.to_pylist() if r["op"] == ACQUIRE]
    # big_lock; two accounts from one init site (one class); a heap lock with no init (the site of
    # its first lock); the recursive mutex (its own init site), taken twice and recorded once
    assert acquired[0] == "big_lock"
    assert acquired[1] == acquired[2] and acquired[1].startswith("mutex_init@account_new+0x")
    assert acquired[3].startswith("site@main+0x")
    assert acquired[4].startswith("mutex_init@main+0x")
    assert len(acquired) == 5 and table.num_rows == 10
    table, _ = trace(tmp_path / "b.arrow", programs["classes"], options=("--class", "site"))
    names = {r["lock"] for r in table.to_pylist()}
    assert all(n.startswith("site@main+0x") for n in names) and len(names) == 5


@st.composite
def scripts(draw):
    """A single-threaded script that never blocks: a plain lock only of what is free, a write
    lock only of an rwlock this thread does not hold; try, timed and clock operations on anything (they
    fail, or time out after 1 ms, on what it holds); unlocks only of what it holds. The state is
    followed from what each operation does on glibc in one thread."""
    held_m: set[int] = set()
    held_r: dict[int, list[str]] = {0: [], 1: [], 2: []}
    ops = []
    for _ in range(draw(st.integers(1, 30))):
        choices = [f"{c}{k}" for c in "TDC" for k in range(4)] + [f"{c}{k}" for c in "YZEFGH" for k in range(3)]
        choices += [f"L{k}" for k in range(4) if k not in held_m]
        choices += [f"U{k}" for k in sorted(held_m)]
        choices += [f"R{k}" for k in range(3)]
        choices += [f"W{k}" for k in range(3) if not held_r[k]]
        choices += [f"V{k}" for k in range(3) if held_r[k]]
        c = draw(st.sampled_from(choices))
        ops.append(c)
        kind, k = c[0], int(c[1])
        if kind in "LTDC" and k not in held_m:
            held_m.add(k)
        elif kind == "U":
            held_m.discard(k)
        elif kind in "RYEG" and "w" not in held_r[k]:
            held_r[k].append("r")
        elif kind in "WZFH" and not held_r[k]:
            held_r[k].append("w")
        elif kind == "V":
            held_r[k].pop()
    return ops


def _oracle(ops: list[str], codes: list[int]) -> list[tuple[int, str, int]]:
    """The events the interposer must record: one per successful operation, none per failure;
    reads of r2 (writer-preferring) are shared reads, the others recursive reads."""
    out = []
    for op, rc in zip(ops, codes):
        if rc != 0:
            continue
        kind, k = op[0], int(op[1])
        if kind in "LTDCU":
            out.append(({"L": ACQUIRE, "T": TRY, "D": ACQUIRE, "C": ACQUIRE, "U": RELEASE}[kind], f"m{k}", 0))
        else:
            read_mode = 1 if k == 2 else 2
            op = {"R": ACQUIRE, "W": ACQUIRE, "Y": TRY, "Z": TRY, "E": ACQUIRE, "F": ACQUIRE, "G": ACQUIRE,
                  "H": ACQUIRE, "V": RELEASE}[kind]
            out.append((op, f"r{k}", read_mode if kind in "RYEG" else 0))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=scripts())
def test_the_interposer_records_exactly_the_successful_operations(programs, ops):
    from lockfleet.agent.native.preload import TraceBuffer

    buf = TraceBuffer(rings=4, ring_events=1024)
    try:
        proc = subprocess.run([str(programs["script"]), *ops], env={**os.environ, **buf.env()},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        batches = list(buf.drain())
    finally:
        buf.close()
    codes = [int(x) for x in proc.stdout.split()]
    got = [(r["op"], r["lock"], r["mode"]) for b in batches for r in b.to_pylist()]
    assert got == _oracle(ops, codes)


def test_trace_usage_errors(programs, tmp_path, unused_target):
    not_elf = tmp_path / "not-a-program"
    not_elf.write_text("plain text\n")
    not_elf.chmod(0o755)
    cases = [
        (["trace", "-o", str(tmp_path / "y.arrows"), "--", str(not_elf)], "cannot run it"),
        (["trace"], "give the program"),
        (["trace", "--", str(tmp_path / "missing")], "no such program"),
        (["trace", "--token", "x" * 20, "--", str(programs["abba"])], "need --target"),
        (["trace", "--ring-events", "1000", "--", str(programs["abba"])], "power of two"),
        (["trace", "--target", unused_target, "-o", str(tmp_path / "x.arrow"), "--", str(programs["abba"])],
         "not both"),
        (["trace", "-o", str(tmp_path / "no" / "dir" / "x.arrow"), "--", str(programs["abba"])], "x.arrow"),
    ]
    for args, message in cases:
        proc = run_lockfleet(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)


def test_trace_fails_with_1_when_the_service_never_answers(programs, unused_target):
    proc = run_lockfleet("trace", "--target", unused_target, "--retry-for", "0.5", "--close-timeout", "5", "--",
                         programs["abba"])
    assert proc.returncode == 1
    assert "not delivered" in proc.stderr


@pytest.mark.e2e
def test_trace_with_tokens_and_an_event_file_pushed_later(programs, serve_factory, tmp_path):
    ingest, query = "ingest-token-0123456789abcdef", "query-token-0123456789abcdef"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ingest {ingest}\nquery {query}\n")
    server = serve_factory("--token-file", tokens)
    # a wrong token: the program still runs to its end, the command says the events were not delivered
    proc = run_lockfleet("trace", "--target", server.target, "--token", "wrong-token-0123456789abcdef", "--",
                         programs["abba"], "ab")
    assert proc.returncode == 1 and "not delivered" in proc.stderr, proc.stderr
    proc = run_lockfleet("trace", "--target", server.target, "--host", "web-1", "--token", ingest, "--",
                         programs["abba"], "ab")
    assert proc.returncode == 0, proc.stderr
    # the other order into a file with its host, pushed afterwards like any event file
    events = tmp_path / "ba.arrows"
    table, proc = trace(events, programs["abba"], "ba", options=("--host", "web-2"))
    assert set(table.column("host").to_pylist()) == {"web-2"}
    proc = run_lockfleet("push", events, "--host", "web-2", "--target", server.target, "--token", ingest)
    assert proc.returncode == 0, proc.stderr
    out = run_lockfleet("alerts", "--json", "--target", server.target, "--token", query)
    alerts = json.loads(out.stdout)["alerts"]
    assert [(a["kind"], a["hosts"]) for a in alerts] == [("circular", ["web-1", "web-2"])]
