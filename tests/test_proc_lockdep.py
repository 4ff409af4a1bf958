"""`lockfleet proc-lockdep`: kernel test machines' /proc/lockdep dumps, written here in the kernel's
format (tests/lockdep_dumps.py), merged into one graph; the findings no single machine closed."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockdep_dumps import Machine, background, chains_text, lockdep_text, seed_links, write_machine
from lockfleet.agent.kernel.procdump import parse_chains, parse_lockdep, parse_stats, read_dumps
from lockfleet.agent.kernel.class_names import Normalizer
from lockfleet.agent.kernel.procdump_events import dump_graph, usage_bits
from lockfleet.agent.kernel.procdump_merge import findings, merge

SEED_HOSTS = ("boot", "bpf", "hotplug", "perf")


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def seed_fleet(directory: Path, seed: int = 7, per_machine: int = 300, own_cycle: bool = True) -> list[Path]:
    """The seed's five links split over four machines (pmus_lock -> &cpuctx_mutex learnt at boot
    on two of them), each with `per_machine` other classes; `boot` also holds a cycle of its own,
    which its lockdep reported (a finding one machine closed)."""
    rng = random.Random(seed)
    links, usage = seed_links()
    owners = {0: ["perf"], 1: ["hotplug"], 2: ["boot", "hotplug"], 3: ["perf"], 4: ["bpf"]}
    machines = {h: Machine(h) for h in SEED_HOSTS}
    for i, (held, taken) in enumerate(links):
        for h in owners[i]:
            m = machines[h]
            m.classes.setdefault(held, usage[held])
            m.classes.setdefault(taken, usage[taken])
            m.deps.append((held, taken))
    seed_classes = {n for link in links for n in link}
    for m in machines.values():
        for n in seed_classes:
            m.classes.setdefault(n, usage[n])
    background(rng, list(machines.values()), per_machine, seed_classes)
    if own_cycle:
        machines["boot"].add("local_a_lock", "local_b_lock")
        machines["boot"].add("local_b_lock", "local_a_lock")
    return [write_machine(directory, m, rng, ops=(m.name == "perf")) for m in machines.values()]


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """`lockfleet ARGS...` in this process (lockfleet.cli.main): the subprocess tests cover the
    console script; these only need its output and status."""
    from lockfleet.cli import main

    def run(*args) -> _Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        out, err = capsys.readouterr()
        return _Result(code, out, err)

    return run


def _edges(alert: dict) -> set[tuple[str, str]]:
    return {(link["held"], link["taken"]) for link in alert["links"]}


def test_seed_split_over_four_machines_gives_the_seed_cycle_and_nothing_else(tmp_path, lockfleet_cli, cli):
    dumps = seed_fleet(tmp_path)
    links, _usage = seed_links()
    doc = json.loads(_ok(lockfleet_cli("proc-lockdep", *dumps, "--json")))
    assert len(doc["alerts"]) == 1, [a["locks"] for a in doc["alerts"]]
    a = doc["alerts"][0]
    assert a["kind"] == "circular" and _edges(a) == set(links)
    assert a["hosts"] == list(SEED_HOSTS) and a["closed_by"] is None and a["single_host"] is None
    assert a["note"] == "kinds unknown: reported as if exclusive" and a["kinds_known"] is False
    by_link = {(link["held"], link["taken"]): link["hosts"] for link in a["links"]}
    assert by_link[("pmus_lock", "&cpuctx_mutex")] == ["boot", "hotplug"]
    assert by_link[("bpf_event_mutex", "tracepoints_mutex")] == ["bpf"]
    assert "cpu_hotplug_lock.rw_sem" in a["readers"]          # its usage {++++} shows reads

    text = _ok(lockfleet_cli("proc-lockdep", *dumps))
    assert "WARNING: possible circular locking dependency detected" in text
    assert "(cpu_hotplug_lock.rw_sem){++++}" in text and "(tracepoints_mutex){+.+.}" in text
    assert "lockfleet: no single machine closed this cycle; it rests on boot, bpf, hotplug, perf" in text
    assert "pmus_lock -> &cpuctx_mutex: first taken on boot" in text and "2 host(s): boot, hotplug" in text
    assert "kinds unknown: reported as if exclusive" in text
    assert "local_a_lock" not in text.split("lockfleet proc-lockdep:")[0]
    assert "1 finding(s) no single machine closed; 1 that one machine closed by itself (--all shows them)" in text

    # the cycle boot closed by itself is there with --all (here: the API under it), marked as boot's own
    doc = {"alerts": [f.to_dict() for f in findings(merge(read_dumps([str(p) for p in dumps]), Normalizer()))]}
    assert len(doc["alerts"]) == 2
    own = [x for x in doc["alerts"] if x["closed_by"] is not None]
    assert [(x["closed_by"], sorted(x["locks"])) for x in own] == [("boot", ["local_a_lock", "local_b_lock"])]
    assert json.loads(_ok(cli("proc-lockdep", *dumps, "--json", "--all"))) == doc
    assert "machine boot held all of this finding itself" in _ok(cli("proc-lockdep", *dumps, "--all"))


def test_without_a_machine_that_alone_holds_a_link_nothing_is_found(tmp_path, cli):
    dumps = seed_fleet(tmp_path, own_cycle=False)
    for i, path in enumerate(dumps):
        rest = dumps[:i] + dumps[i + 1:]
        alerts = json.loads(_ok(cli("proc-lockdep", *rest, "--json")))["alerts"]
        if path.stem == "boot":   # its one link is also hotplug's
            assert [a["hosts"] for a in alerts] == [["bpf", "hotplug", "perf"]]
        else:
            assert alerts == [], path.stem
        if path.stem == "bpf":
            assert json.loads(_ok(cli("proc-lockdep", path, "--json")))["alerts"] == []
    # --host names the machines instead of the file stems
    doc = json.loads(_ok(cli("proc-lockdep", *dumps, "--json", *(x for i in range(4) for x in
                                                                          ("--host", f"ci-{i}")))))
    assert doc["alerts"][0]["hosts"] == ["ci-0", "ci-1", "ci-2", "ci-3"]
    proc = cli("proc-lockdep", *dumps, "--host", "only-one")
    assert proc.returncode == 2 and "--host given 1 time(s) for 4 dump(s)" in proc.stderr


def test_names_with_versions_subclasses_spaces_and_parentheses(tmp_path):
    names = ["&type->i_mutex_dir_key#3/1", "(wq_completion)events unbound", "tty: ldisc sem (x)",
             "&(&zone->lock)->rlock", "(work_completion)(&(&dev->work)->timer)"]
    m1 = Machine("m1")
    m1.add(names[0], names[1], "+.+.")
    m1.add(names[1], names[2], "++++")
    m1.add(names[2], names[3], "+...")
    m2 = Machine("m2")
    m2.add(names[3], names[4], "+.+.")
    m2.add(names[4], "&type->i_mutex_dir_key#5/1", "+.+.")   # the same class, another boot's version
    rng = random.Random(1)
    text, _keys = lockdep_text(m1, rng, ops=True)
    d = parse_lockdep(text, "m1")
    assert [c.name for c in d.classes] == names[:4] and not d.problems
    assert [c.usage for c in d.classes] == ["+.+.", "+.+.", "++++", "+..."]
    assert [(d.classes[i].name, t) for i, t, _ in d.deps] == m1.deps
    p1, p2 = write_machine(tmp_path, m1, rng), write_machine(tmp_path, m2, rng)

    merged = merge(read_dumps([str(p1), str(p2)]), Normalizer())
    found = findings(merged)
    assert [f.alert.kind for f in found] == ["circular"]
    cycle = found[0].alert.locks
    assert set(cycle) == {"&type->i_mutex_dir_key/1", "(wq_completion)events unbound", "tty: ldisc sem (x)",
                          "&zone->lock", "(work_completion)(&(&dev->work)->timer)"}
    assert found[0].closed_by is None and found[0].alert.hosts == ("m1", "m2")
    # subclass /1 is the class's subclass, as the engine prints it; without the rules #3 != #5
    assert merge(read_dumps([str(p1), str(p2)]), Normalizer(())).engine.alerts() == []


def test_a_dump_cut_in_the_middle_is_said_and_the_rest_used(tmp_path, cli):
    dumps = seed_fleet(tmp_path, own_cycle=False)
    bpf = next(p for p in dumps if p.stem == "bpf")
    text = bpf.read_text()
    # the seed's classes were registered first: cut far after them, inside a dependency line
    at = text.index(" -> [", int(len(text) * 0.7)) + 12
    bpf.write_text(text[:at])
    cut_line = text[:at].count("\n") + 1
    proc = cli("proc-lockdep", *dumps, "--json")
    doc = json.loads(_ok(proc))
    assert [a["kind"] for a in doc["alerts"]] == ["circular"] and len(doc["alerts"][0]["links"]) == 5
    assert f"{bpf}:{cut_line}: the dump ends in the middle of a line (cut)" in proc.stderr

    # cut on a line boundary inside a class's dependency list
    lines = text.splitlines(keepends=True)
    i = next(i for i in range(len(lines) * 2 // 3, len(lines)) if lines[i].startswith(" -> [")
             and lines[i + 1].startswith(" -> ["))
    bpf.write_text("".join(lines[:i + 1]))
    proc = cli("proc-lockdep", *dumps)
    assert "ends inside the dependencies of" in proc.stderr and "it was cut there" in proc.stderr
    assert "no single machine closed this cycle" in _ok(proc)

    # a line in no known shape inside a block: said with its number; the dependency lines after it
    # in that block are left out too (they may be a damaged class line's), the rest is used
    lines = text.splitlines(keepends=True)
    i = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith(" -> [")
             and lines[i + 1].startswith(" -> ["))
    bpf.write_text("".join(lines[:i + 1]) + "garbage in the middle\n" + "".join(lines[i + 1:]))
    proc = cli("proc-lockdep", *dumps, "--json")
    after = next(k for k in range(i + 1, len(lines)) if not lines[k].startswith(" -> [")) - i - 1
    assert f"{1 + after} line(s) not in /proc/lockdep's format, left out (line {i + 2}, {i + 3}" in proc.stderr
    assert [a["kind"] for a in json.loads(_ok(proc))["alerts"]] == ["circular"]

    # not a dump at all: refused, one line, status 2
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\nworld\n")
    proc = cli("proc-lockdep", bad)
    assert proc.returncode == 2 and "not a /proc/lockdep dump" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = cli("proc-lockdep", tmp_path / "missing.lockdep")
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_lockdep_chains_show_the_dependency_past_a_trylock(tmp_path, cli):
    # m1 held A, trylocked B, took C: lockdep made B -> C (distance 1, printed) and A -> C
    # (distance 2, not printed by /proc/lockdep); m2 took A under C
    m1 = Machine("m1", classes={"A_lock": "+.+.", "B_lock": "+.+.", "C_lock": "+.+.", "D_lock": "+.+."})
    m1.deps = [("B_lock", "C_lock"), ("A_lock", "D_lock")]
    m1.chains = [("0", ["A_lock"]), ("0", ["A_lock", "B_lock", "C_lock"]),
                 ("0", ["A_lock", "D_lock"]), ("0", ["A_lock", "D_lock", "B_lock", "C_lock"])]
    m2 = Machine("m2")
    m2.add("C_lock", "A_lock")
    m2.add("C_lock", "D_lock")
    rng = random.Random(2)
    p1 = write_machine(tmp_path, m1, rng)
    p2 = write_machine(tmp_path, m2, rng)
    assert json.loads(_ok(cli("proc-lockdep", p1, p2, "--json")))["alerts"] == []
    (tmp_path / "m1.lockdep_chains").write_text(chains_text(m1, {n: "ffffffff00000000" for n in m1.classes}))
    doc = json.loads(_ok(cli("proc-lockdep", p1, p2, "--json")))
    got = sorted(tuple(sorted(_edges(a))) for a in doc["alerts"])
    # A -> C from the first chain; D held under A (its own chain exists), so D -> C but not A -> C again
    assert got == sorted([(("A_lock", "C_lock"), ("C_lock", "A_lock")),
                          (("C_lock", "D_lock"), ("D_lock", "C_lock"))])
    d = read_dumps([str(p1)])[0]
    g = dump_graph(d, Normalizer())
    assert g.from_chains == 2 and ("A_lock", "C_lock") in g.deps and ("D_lock", "C_lock") in g.deps
    assert ("B_lock", "A_lock") not in g.deps
    # the chains file given as an argument instead of found beside the dump
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "m1.lockdep_chains").write_bytes((tmp_path / "m1.lockdep_chains").read_bytes())
    (tmp_path / "m1.lockdep_chains").unlink()
    doc2 = json.loads(_ok(cli("proc-lockdep", p1, p2, other / "m1.lockdep_chains", "--json")))
    assert sorted(tuple(sorted(_edges(a))) for a in doc2["alerts"]) == got


def test_stats_say_what_a_dump_misses(tmp_path, cli):
    m = Machine("m1")
    m.add("A_lock", "B_lock")
    write_machine(tmp_path, m, random.Random(3), stats=True, extra_classes=5, debug_locks=0)
    proc = cli("proc-lockdep", tmp_path / "m1.lockdep")
    _ok(proc)
    assert "lockdep_stats counts 7 lock classes, the dump holds 2" in proc.stderr
    assert "debug_locks: 0" in proc.stderr
    stats = parse_stats((tmp_path / "m1.lockdep_stats").read_text())
    assert stats["lock-classes"] == 7 and stats["direct dependencies"] == 2 and stats["debug_locks"] == 0


def test_irq_usage_across_machines(tmp_path):
    """A class used in hardirq on one machine and with hardirqs on on another (inconsistent), and
    a hardirq-safe class on one machine reaching, through another's dependency, a class taken with
    hardirqs on on a third: neither machine saw either finding. A '?' class is its machine's own."""
    m1 = Machine("m1", classes={"irq_lock": "-...", "safe_lock": "-.-.", "own_lock": "?..."})
    m2 = Machine("m2", classes={"irq_lock": "+.+.", "mid_lock": "+.+."})
    m2.add("safe_lock", "mid_lock", "....")
    m3 = Machine("m3", classes={"unsafe_lock": "+.+.", "mid_lock": "...."})
    m3.add("mid_lock", "unsafe_lock")
    rng = random.Random(4)
    paths = [str(write_machine(tmp_path, m, rng)) for m in (m1, m2, m3)]
    found = findings(merge(read_dumps(paths), Normalizer()))
    kinds = {(f.alert.kind, f.alert.locks[0], f.closed_by) for f in found}
    assert ("inconsistent_state", "irq_lock", None) in kinds
    assert ("inconsistent_state", "own_lock", "m1") in kinds
    inv = [f for f in found if f.alert.kind == "irq_inversion"]
    assert inv and all(f.closed_by is None for f in inv)
    assert {f.alert.locks[-1] for f in inv} >= {"unsafe_lock"}


def test_usage_characters_read_back():
    assert usage_bits("....") == frozenset()
    assert usage_bits("+.+.") == {"HARDIRQ-ON-W", "SOFTIRQ-ON-W"}
    assert usage_bits("-.?.") == {"IN-HARDIRQ-W", "IN-SOFTIRQ-W", "SOFTIRQ-ON-W"}
    assert usage_bits("++++") == {"HARDIRQ-ON-W", "HARDIRQ-ON-R", "SOFTIRQ-ON-W", "SOFTIRQ-ON-R"}
    assert usage_bits(".-.-..") == {"IN-HARDIRQ-R", "IN-SOFTIRQ-R"}          # reclaim_fs kernels: 6 chars
    chains, problems = parse_chains("(buggered) all lock chains:\nirq_context: hardirq|softirq\n[ff] a\n[ee] b c\n\n"
                                    "irq_context: 0\n[ff] a\n")
    assert [(c.irq_context, c.names) for c in chains] == [("hardirq|softirq", ("a", "b c"))]
    assert problems and "cut" in problems[0]


_NAME_CHARS = st.sampled_from(list("abcxyz_&->().:#/ 0123456789[]"))
_NAMES = st.text(_NAME_CHARS, min_size=1, max_size=24).map(str.strip).filter(
    lambda s: s and not s.startswith(("-", "[")) and "\n" not in s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(_NAMES, min_size=2, max_size=8, unique=True), data=st.data())
def test_parse_reads_back_what_the_kernel_format_printed(names, data):
    """Whatever the names (spaces, parentheses, colons, brackets, #, /), a dump in the kernel's
    format reads back to the same classes, usage characters and dependencies."""
    usage = {n: data.draw(st.sampled_from(["....", "+.+.", "-.-.", "?.?.", "++++", "+-+-"])) for n in names}
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=20, unique=True))
    m = Machine("x", classes=usage, deps=pairs)
    text, _ = lockdep_text(m, random.Random(0), ops=data.draw(st.booleans()))
    d = parse_lockdep(text, "x")
    assert not d.problems and not d.cut
    assert {c.name: c.usage for c in d.classes} == usage
    assert sorted((d.classes[i].name, t) for i, t, _ in d.deps) == sorted(pairs)


def _has_cycle(edges: set[tuple[str, str]]) -> bool:
    """The oracle: a depth-first search for a back edge, over the plain union of the graphs."""
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
    state: dict[str, int] = {}                 # 1 on the current path, 2 done

    def visit(n: str) -> bool:
        state[n] = 1
        for x in succ.get(n, ()):
            if state.get(x) == 1 or (x not in state and visit(x)):
                return True
        state[n] = 2
        return False

    return any(n not in state and visit(n) for n in list(succ))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_merged_findings_against_a_union_graph_oracle(data):
    """Machines whose own graphs are acyclic (each one's lockdep saw no cycle): a finding is
    reported iff the union of their graphs has a cycle, every finding's cycle is a cycle of the
    union that no single machine holds whole, and the hosts it names hold its links."""
    n_classes = data.draw(st.integers(3, 9))
    names = [f"c{i}" for i in range(n_classes)]
    machines = []
    for k in range(data.draw(st.integers(2, 4))):
        order = data.draw(st.permutations(names))          # each machine acyclic: edges follow its order
        rank = {n: i for i, n in enumerate(order)}
        pairs = data.draw(st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=12))
        m = Machine(f"h{k}", classes={n: "+.+." for n in names})
        m.deps = sorted({(a, b) if rank[a] < rank[b] else (b, a) for a, b in pairs if a != b})
        machines.append(m)
    dumps = [parse_lockdep(lockdep_text(m, random.Random(0))[0], m.name, m.name) for m in machines]
    found = findings(merge(dumps, Normalizer()))
    union = {p for m in machines for p in m.deps}
    assert bool(found) == _has_cycle(union)
    held = {m.name: set(m.deps) for m in machines}
    for f in found:
        edges = {(link.held, link.taken) for link in f.alert.links}
        assert f.alert.kind == "circular" and f.closed_by is None
        assert edges <= union and _has_cycle(edges)
        assert not any(edges <= held[h] for h in held)
        for link in f.alert.links:
            assert set(link.hosts) == {h for h in held if (link.held, link.taken) in held[h]}


def test_push_sends_each_dump_as_its_hosts_events(tmp_path, lockfleet_cli, cli, serve_factory):
    tokens = tmp_path / "tokens"
    ingest, query = "ingest-0123456789abcdef0123", "query-0123456789abcdef01234"
    tokens.write_text(f"ingest {ingest}\nquery {query}\n")
    tokens.chmod(0o600)
    server = serve_factory("--token-file", tokens)
    dumps = seed_fleet(tmp_path, per_machine=120)
    t = ("--target", server.target)
    out = _ok(lockfleet_cli("proc-lockdep", *dumps, "--push", *t, "--token", ingest))
    assert out.count("pushed ") == 4 and "for host bpf" in out
    proc = cli("proc-lockdep", *dumps, "--push", *t, "--token", query)
    assert proc.returncode == 1 and "token" in proc.stderr.lower()
    alerts = json.loads(_ok(cli("alerts", "--json", *t, "--token", query)))["alerts"]
    links, _ = seed_links()
    seed = [a for a in alerts if _edges(a) == set(links)]
    assert len(seed) == 1 and seed[0]["hosts"] == list(SEED_HOSTS)
    own = [a for a in alerts if set(a["locks"]) == {"local_a_lock", "local_b_lock"}]
    assert len(own) == 1 and own[0]["hosts"] == ["boot"]
    stats = json.loads(_ok(cli("stats", "--json", *t, "--token", query)))
    # again: the same streams, acknowledged as duplicates, nothing applied twice
    doc = json.loads(_ok(cli("proc-lockdep", *dumps, "--push", "--json", *t, "--token", ingest)))
    assert all(p["duplicates"] == p["batches"] > 0 for p in doc["pushed"])
    assert json.loads(_ok(cli("stats", "--json", *t, "--token", query)))["events"] == stats["events"]


def test_help_tells_the_options(cli):
    text = _ok(cli("proc-lockdep", "--help"))
    for opt in ("--json", "--host", "--push", "--target", "--token", "--tls-ca", "--all", "lockdep_chains"):
        assert opt in text
    assert cli("proc-lockdep").returncode == 2


@pytest.mark.parametrize("layout", ["dir", "file"])
def test_a_directory_copy_of_proc(tmp_path, cli, layout):
    """`cp /proc/lockdep* web-1/`: the directory is the host; lockdep_stats beside `lockdep` is read."""
    m = Machine("x")
    m.add("A_lock", "B_lock")
    d = tmp_path / "web-1"
    d.mkdir()
    text, _ = lockdep_text(m, random.Random(5))
    (d / "lockdep").write_text(text)
    (d / "lockdep_stats").write_text(" lock-classes:                            9 [max: 8192]\n")
    proc = cli("proc-lockdep", d if layout == "dir" else d / "lockdep")
    assert "1 dump(s) of 1 machine(s)" in _ok(proc)
    assert "lockdep_stats counts 9 lock classes, the dump holds 2" in proc.stderr and "web-1" not in proc.stderr.split(":")[0]
    dumps = read_dumps([str(d)])
    assert dumps[0].host == "web-1"


def _stats(cli, target: str) -> dict:
    return json.loads(_ok(cli("stats", "--json", "--target", target)))


def _wait(cond, what: str, timeout: float = 60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_procfs_agent_ships_only_what_is_new_since_its_last_dump(tmp_path, lockfleet_cli, lockfleet_server):
    """`python -m lockfleet.agent.kernel.procfs_agent` against a real service, reading a /proc copy that a
    'kernel' (the test) grows between rounds: the first round sends the dump whole, the next ones
    only the new dependencies (4 events each) and usage bits; a restart with --state sends nothing
    it already sent."""
    import signal
    import subprocess
    import sys

    proc_dir = tmp_path / "proc"
    proc_dir.mkdir()
    m = Machine("kernel")
    for i in range(30):
        m.add(f"early_{i}_lock", f"early_{i + 1}_lock", "+.+.")
    rng = random.Random(9)

    def publish() -> None:
        text, _ = lockdep_text(m, rng)
        tmp = proc_dir / "lockdep.tmp"
        tmp.write_text(text)
        tmp.replace(proc_dir / "lockdep")

    publish()
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "lockfleet.agent.kernel.procfs_agent", "--target", lockfleet_server.target, "--host", "ci-7",
           "--proc", str(proc_dir), "--every", "300ms", "--state", str(state)]
    log = tmp_path / "procfs.log"
    with open(log, "wb") as err:
        agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        first = _wait(lambda: (s := _stats(lockfleet_cli, lockfleet_server.target))["edges"] == 30 and s, "round 1")
        # 31 classes x 2 usage bits (HARDIRQ-ON-W, SOFTIRQ-ON-W) x 2 rows + 30 dependencies x 4 rows
        assert first["events"] == 31 * 2 * 2 + 30 * 4
        m.add("early_30_lock", "late_lock", "+.+.")
        m.add("late_lock", "early_0_lock", "+.+.")            # closes a cycle through the whole chain
        publish()
        s = _wait(lambda: (s := _stats(lockfleet_cli, lockfleet_server.target))["edges"] == 32 and s, "round 2")
        time.sleep(1.0)                                       # more rounds: nothing new to send
        s = _stats(lockfleet_cli, lockfleet_server.target)
        assert s["events"] == first["events"] + 2 * 4 + 2 * 2  # two dependencies, late_lock's two usage bits
        from lockfleet.agent import fetch_alerts

        alerts = fetch_alerts(lockfleet_server.target)
        assert [(a.data["kind"], a.data["hosts"], len(a.data["locks"])) for a in alerts] == [("circular", ["ci-7"], 32)]
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert "shipped 30 new dependencies, 62 new usage bits" in text and "shipped 2 new dependencies" in text
    assert "shipped 0 new dependencies, 0 new usage bits" in text
    # restarted with its state: nothing sent again
    once = subprocess.run([*cmd, "--once"], capture_output=True, text=True, timeout=60)
    assert once.returncode == 0 and "shipped 0 new dependencies, 0 new usage bits" in once.stderr, once.stderr
    assert _stats(lockfleet_cli, lockfleet_server.target)["events"] == s["events"]
    bad = subprocess.run([*cmd[:-4], "--proc", str(tmp_path / "nothing"), "--once"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def test_a_machine_own_cycle_with_a_witness_across_machines(tmp_path, cli):
    """m1 closed A -> B -> A itself (its lockdep reported B -> A); m2's A -> C, C -> B close, with
    m1's B -> A, a cycle no machine holds: a witness of m1's finding, said with it."""
    m1 = Machine("m1")
    m1.add("A_lock", "B_lock")
    m1.add("B_lock", "A_lock")
    m2 = Machine("m2")
    m2.add("A_lock", "C_lock")
    m2.add("C_lock", "B_lock")
    rng = random.Random(6)
    paths = [write_machine(tmp_path, m, rng) for m in (m1, m2)]
    found = findings(merge(read_dumps([str(p) for p in paths]), Normalizer()))
    assert [(f.closed_by, f.cross_witnesses) for f in found] == [("m1", 1)]
    text = _ok(cli("proc-lockdep", *paths))
    assert "1 that one machine closed by itself, 1 of them with witness cycles across machines" in text
