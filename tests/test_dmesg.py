"""`lockfleet dmesg`: lockdep reports read from kernel logs, fed through the real Engine.

Test data: the seed report (an LKML mail, `seed/lkml-bpf-deadlock-report.txt`) and the real
lockdep reports in `corpus/lockdep-reports/` of the shared folder (../shared, or $LOCKFLEET_SHARED),
each file's first line naming its public source: syzbot console logs kept by google/syzkaller as
`pkg/report/testdata/linux/report/<n>`. Among them: cycles through read locks (rwsem/percpu-rwsem
reads: wireguard, sb_writers, cpu_hotplug_lock), recursive locking, an irq inversion, an
inconsistent lock state, bad unlock balance, caller-id console logs with interleaved lines, a
truncated log, and old (4.9) to new (6.15) kernels' formats. EXPECTED.json there says what each
report holds; it is read, never copied here.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import pytest
from conftest import SHARED_DIR, needs_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockfleet import Engine
from lockfleet.agent.kernel.class_names import DEFAULT_RULES, Normalizer, RulesError, parse_rules
from lockfleet.agent.kernel.dmesg import Log, circular_edges, findings, parse_text, read_log, split_line, to_batch
from lockfleet.cli.kernel_logs import main_dmesg, register_dmesg
from lockfleet.events import split_class

SEED = SHARED_DIR / "seed" / "lkml-bpf-deadlock-report.txt"
CORPUS = SHARED_DIR / "corpus" / "lockdep-reports"

SEED_CYCLE = ["tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex", "bpf_event_mutex"]
NORM = Normalizer()


def expected() -> dict[str, dict]:
    return json.loads((CORPUS / "EXPECTED.json").read_text())["reports"] if CORPUS.is_dir() else {}


def corpus_files() -> list[str]:
    return sorted(expected())


def norm(names: list[str]) -> list[str]:
    return [NORM.printed(n) for n in names]


def is_rotation(got: list[str] | tuple[str, ...], want: list[str]) -> bool:
    got = list(got)
    return len(got) == len(want) and any(got[i:] + got[:i] == want for i in range(len(got)))


def run(text: str, host: str = "h") -> list:
    reports = parse_text(text, "log", host)
    return findings([Log("log", host, "", reports)], NORM)


# ---- the corpus and the seed -----------------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("name", corpus_files())
def test_corpus_report_kind_and_cycle(name: str) -> None:
    exp = expected()[name]
    path = CORPUS / name
    assert path.read_text().startswith("# source: google/syzkaller/pkg/report/testdata/linux/report/")
    log = read_log(str(path))
    assert [r.kind for r in log.reports] == [exp["kind"]]
    report = log.reports[0]
    if exp["kind"] == "circular":
        assert report.cycle() == exp["cycle_full"]
        assert report.acquire.name == exp["trying_to_acquire"] and report.held.name == exp["already_holding"]
        if exp["chain_exists_of"]:
            assert report.chain_exists == exp["chain_exists_of"]
        # every dependency of the cycle, with the stack lockdep printed for it
        edges = circular_edges(report)
        n = len(exp["cycle_full"])
        assert [(e.held.name, e.taken.name) for e in edges] == [
            (exp["cycle_full"][k], exp["cycle_full"][(k + 1) % n]) for k in range(n)]
        assert all(e.frames for e in edges)

    alerts = findings([log], NORM)
    kinds = {"held_returning_to_user": []}.get(exp["kind"], [exp["kind"]])
    assert [a.kind for a in alerts] == kinds
    if not alerts:
        return
    a = alerts[0]
    assert a.hosts == (path.stem,)
    if exp["kind"] == "circular":
        assert is_rotation(a.locks, norm(exp["cycle_full"]))
        assert list(a.locks) == norm(exp["cycle_full"])  # lockdep's #0 first, as the report
        assert a.links[-1].first_taken.task == report.task
    elif exp["kind"] == "recursive":
        assert list(a.locks) == norm(exp["cycle"])
    elif exp["kind"] == "inconsistent_state":
        assert list(a.locks) == norm([exp["lock"]])
        assert a.irq_state == exp["usage_transition"][0].split("-")[1]
        assert [u.usage for u in a.usages] == exp["usage_transition"]
    elif exp["kind"] == "irq_inversion":
        assert list(a.locks) == norm(exp["chain_exists_of"])
        assert (a.locks[0], a.locks[-1]) == (NORM.printed(exp["irq_safe_lock"]), NORM.printed(exp["irq_unsafe_lock"]))
        assert (a.links[-1].held, a.links[-1].taken) == tuple(norm(exp["new_dependency"]))
    elif exp["kind"] == "bad_unlock":
        assert list(a.locks) == norm([exp["lock"]])
    assert a.render()


@needs_shared
def test_seed_gives_the_five_lock_cycle() -> None:
    log = read_log(str(SEED))
    assert [r.kind for r in log.reports] == ["circular"]
    assert log.reports[0].task == "test_progs/246"
    alerts = findings([log])
    assert [(a.kind, list(a.locks)) for a in alerts] == [("circular", SEED_CYCLE)]
    links = alerts[0].links
    # the evidence of each link is the stack under its `-> #k` entry
    assert links[0].first_taken.site.startswith("static_key_slow_inc+0xe/0x20\ntracepoint_probe_register_prio")
    assert links[-1].first_taken.site.startswith("__mutex_lock+0x86/0x970")
    assert links[-1].first_held.site == "bpf_probe_register+0x1d/0x60"
    assert links[-1].first_taken.ts_ns == 13_024_968_000
    assert "-> #4 (bpf_event_mutex)" in alerts[0].render()


@needs_shared
def test_all_reports_in_one_graph() -> None:
    logs = [read_log(str(CORPUS / n)) for n in corpus_files()] + [read_log(str(SEED))]
    alerts = findings(logs)
    want = [e for e in expected().values() if e["kind"] != "held_returning_to_user"]
    assert sorted(a.kind for a in alerts) == sorted([e["kind"] for e in want] + ["circular"])


# ---- the merged graph: cycles no single report shows -----------------------------------------


def circular_text(names: list[str], task: str = "kworker/0:1/42", t0: float = 100.0, usage: str = "+.+.") -> str:
    """A report as print_circular_bug prints it for the cycle names[0] (#0) .. names[-1] (#N)."""
    n = len(names) - 1
    lines = ["=" * 54, "WARNING: possible circular locking dependency detected", "6.1.0-test #1 Not tainted",
             "-" * 54, f"{task} is trying to acquire lock:",
             f"ffff888000001000 ({names[0]}){{{usage}}}-{{3:3}}, at: take+0x10/0x80", "",
             "but task is already holding lock:",
             f"ffff888000002000 ({names[n]}){{{usage}}}-{{3:3}}, at: hold+0x10/0x80", "",
             "which lock already depends on the new lock.", "", "",
             "the existing dependency chain (in reverse order) is:"]
    for k in range(n, -1, -1):
        lines += ["", f"-> #{k} ({names[k]}){{{usage}}}-{{3:3}}:", "       lock_acquire+0x1/0x10",
                  "       __mutex_lock+0x2/0x20", f"       path_{k}+0x3/0x30"]
    lines += ["", "other info that might help us debug this:", ""]
    if n >= 2:
        lines += ["Chain exists of:", f"  {names[0]} --> {names[n - 1]} --> {names[n]}", ""]
    lines += [" Possible unsafe locking scenario:", "", "       CPU0                    CPU1",
              "       ----                    ----", f"  lock({names[n]});", f"{' ' * 31}lock({names[n - 1]});",
              f"{' ' * 31}lock({names[n]});", f"  lock({names[0]});", "", " *** DEADLOCK ***", "",
              f"1 lock held by {task}:", f" #0: ffff888000002000 ({names[n]}){{{usage}}}-{{3:3}}, at: hold+0x10/0x80",
              "", "stack backtrace:", "Call Trace:", " dump_stack_lvl+0x1/0x2"]
    return "".join(f"[{t0 + i / 10000:12.6f}] {line}\n" for i, line in enumerate(lines))


def test_two_reports_make_a_cycle_neither_shows() -> None:
    # report 1: A -> B -> C -> D -> A; report 2: C -> A -> E -> C; together: A -> B -> C -> A
    text = circular_text(["A", "B", "C", "D"]) + "eth0: link up\n" + circular_text(["C", "A", "E"], t0=200)
    alerts = run(text)
    cycles = [list(a.locks) for a in alerts if a.kind == "circular"]
    assert ["A", "B", "C", "D"] in cycles and ["C", "A", "E"] in cycles
    assert any(is_rotation(c, ["A", "B", "C"]) for c in cycles)


def test_reports_in_two_files_and_hosts_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "web-1.log").write_text(circular_text(["&lo->lo_ctl_mutex#2", "B", "C", "D"]))
    (tmp_path / "web-2.log").write_text(circular_text(["C", "&lo->lo_ctl_mutex#3", "E"], t0=5))
    assert main_dmesg([str(tmp_path / "web-1.log"), str(tmp_path / "web-2.log")], json_out=False) == 0
    out = capsys.readouterr().out
    assert "no single report shows this cycle" in out and "web-1.log:" in out and "web-2.log:" in out
    assert "no single host took the whole cycle: it exists only across hosts web-1, web-2" in out
    assert out.rstrip().splitlines()[-1].startswith("lockfleet dmesg: 2 lockdep report(s) in 2 file(s)")


def test_each_report_keeps_its_own_cycle() -> None:
    # report 2's closing dependency D -> A also closes D -> A -> D with report 1's A -> D: the
    # engine shows one cycle per new dependency, and report 2's own cycle is shown as well
    text = circular_text(["A", "D", "F"]) + circular_text(["A", "B", "C", "D"], t0=300)
    cycles = [list(a.locks) for a in run(text)]
    assert any(is_rotation(c, ["A", "D"]) for c in cycles)
    assert ["A", "D", "F"] in cycles and ["A", "B", "C", "D"] in cycles


# ---- line formats ----------------------------------------------------------------------------


def _shape(text: str) -> list:
    """What a log's reports hold, without times, line numbers or hosts."""
    out = []
    for r in parse_text(text):
        out.append((r.kind, r.task, r.acquire, r.held, [(e.k, e.lock, e.frames) for e in r.entries],
                    r.chain_exists, r.scenario, r.held_locks))
    return out


@needs_shared
def test_prefix_variants_parse_the_same() -> None:
    kernel = [line for line in SEED.read_text().splitlines() if re.match(r"^\[ *\d+\.\d+\]", line)]
    stamped = "\n".join(kernel)
    bare = "\n".join(re.sub(r"^\[ *\d+\.\d+\] ", "", line) for line in kernel)
    want = _shape(stamped)
    assert want and want[0][0] == "circular"
    variants = {
        "no prefix": bare,
        "syslog": "\n".join(f"Feb 28 10:07:40 web-1 kernel: {line}" for line in bare.splitlines()),
        "syslog + stamp": "\n".join(f"Feb 28 10:07:40 web-1 kernel: {line}" for line in kernel),
        "iso syslog + stamp": "\n".join(f"2019-02-28T10:07:40.123456+00:00 web-1 kernel: {line}" for line in kernel),
        "dmesg -x": "\n".join(f"kern  :warn  : {line}" for line in kernel),
        "dmesg -T": "\n".join(re.sub(r"^\[ *\d+\.\d+\]", "[Thu Feb 28 10:07:40 2019]", line) for line in kernel),
        "caller id": "\n".join(re.sub(r"^(\[ *\d+\.\d+\])", r"\1[  T246]", line) for line in kernel),
        "<level>": "\n".join(f"<4>{line}" for line in kernel),
        "quoted in a mail": "\n".join(f"> {line}" for line in kernel),
        "CRLF": "\r\n".join(kernel),
    }
    for label, text in variants.items():
        assert _shape(text) == want, label
    # syslog lines of other programs in between are not the kernel's
    mixed = []
    for i, line in enumerate(bare.splitlines()):
        mixed += [f"Feb 28 10:07:40 web-1 kernel: {line}", f"Feb 28 10:07:40 web-1 sshd[{i}]: -> #9 (bogus){{+.+.}}:"]
    assert _shape("\n".join(mixed)) == want
    assert [r.host for r in parse_text(variants["syslog"])] == ["web-1"]


def test_split_line_prefixes() -> None:
    ln = split_line(1, "[ 2718.379077][ T3699] ======")
    assert (ln.text, ln.ts_ns, ln.stream) == ("======", 2718_379_077_000, "\0T3699")
    ln = split_line(2, "Jan  1 00:00:00 host kernel: [   13.007000] WARNING: x")
    assert (ln.text, ln.ts_ns, ln.host) == ("WARNING: x", 13_007_000_000, "host")
    assert split_line(3, "Jan  1 00:00:00 host systemd[1]: Started x.") is None
    assert split_line(4, "[  492.198014][T24950] x").stream == "\0T24950"
    assert split_line(5, "[  414.832172][    C1] usb").stream == "\0C1"


@needs_shared
def test_interleaved_lines_of_other_callers_are_set_apart() -> None:
    # two caller-id logs interleaved line by line: each report still reads whole
    a = (CORPUS / "circular_3lock_wireguard_workqueue.txt").read_text().splitlines()[1:]
    b = (CORPUS / "inconsistent_state_folio_wait_table.txt").read_text().splitlines()[1:]
    mixed = [line for pair in zip(a, b) for line in pair] + a[len(b):] + b[len(a):]
    kinds = sorted(a.kind for a in run("\n".join(mixed)))
    assert kinds == ["circular", "inconsistent_state"]


@needs_shared
def test_two_reports_in_one_file_and_truncation() -> None:
    text = (CORPUS / "circular_2lock_loop_bd_mutex.txt").read_text() + (CORPUS / "recursive_rtnl_mutex.txt").read_text()
    assert [r.kind for r in parse_text(text)] == ["circular", "recursive"]
    # a report cut after its `-> #2` entry: the dependencies it holds, nothing else
    lines = (CORPUS / "circular_6lock_perf_cpu_hotplug_rwsem.txt").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if "-> #1 (" in line)
    (r,) = parse_text("\n".join(lines[:cut]))
    assert {(e.held.name, e.taken.name) for e in circular_edges(r)} == {
        ("tracepoints_mutex", "cpu_hotplug_lock.rw_sem"), ("cpu_hotplug_lock.rw_sem", "pmus_lock"),
        ("pmus_lock", "&cpuctx_mutex"), ("&cpuctx_mutex", "&event->child_mutex")}


@needs_shared
def test_modes_from_the_report() -> None:
    (r,) = read_log(str(CORPUS / "circular_3lock_wireguard_workqueue.txt")).reports
    modes = {(e.held.name, e.taken.name): (e.held_mode, e.taken_mode) for e in circular_edges(r)}
    assert modes[("(work_completion)(&peer->transmit_handshake_work)", "&wg->static_identity.lock")] == (0, 1)
    (r,) = read_log(str(CORPUS / "circular_4lock_console_lock_pipe_mutex_subclass.txt")).reports
    modes = {(e.held.name, e.taken.name): (e.held_mode, e.taken_mode) for e in circular_edges(r)}
    assert modes[("(completion)&req.done", "sb_writers")] == (0, 1)  # {.+.+}: percpu rwsem read
    assert modes[("sb_writers", "&pipe->mutex/1")] == (1, 0)
    batch = to_batch([r])
    assert set(zip(batch.column("lock").to_pylist(), batch.column("subclass").to_pylist())) >= {("&pipe->mutex", 1)}
    # an `rlock` in the table and an rwlock read in the stack: a recursive read, which a strong
    # cycle may hold (-(ER)-> followed by -(EN)->)
    text = circular_text(["A", "B"]).replace("  lock(A);", "  rlock(A);").replace("       path_0+0x3/0x30",
                                                                                  "       _raw_read_lock+0x1/0x2")
    (r,) = parse_text(text)
    assert [(e.held_mode, e.taken_mode) for e in circular_edges(r)] == [(0, 0), (0, 2)]
    assert [a.kind for a in run(text)] == ["circular"]


def test_irq_inversion_of_print_irq_inversion_bug() -> None:
    # print_irq_inversion_bug as a 5.9 kernel printed it (syzbot, quoted in the stable patch
    # "fcntl: Fix potential deadlock in send_sig{io, urg}()", upstream 8d1ddb5e7937), and a 2.6.36
    # one (quoted on LKML in "oom: fix locking for oom_adj and oom_score_adj")
    new = """[...] WARNING: possible irq lock inversion dependency detected
[...] 5.9.0-rc2-syzkaller #0 Not tainted
[...] --------------------------------------------------------
[...] syz-executor.1/10214 just changed the state of lock:
[...] ffff88811f506338 (&f->f_owner.lock){.+..}-{2:2}, at: send_sigurg+0x1d/0x200
[...] but this lock was taken by another, HARDIRQ-safe lock in the past:
[...]  (&dev->event_lock){-...}-{2:2}
[...]
[...]
[...] and interrupts could create inverse lock ordering between them.
[...]
[...]
[...] other info that might help us debug this:
[...] Chain exists of:
[...]   &dev->event_lock --> &new->fa_lock --> &f->f_owner.lock
[...]
"""
    (a,) = run(new)
    assert (a.kind, a.locks, a.irq_state) == ("irq_inversion", ("&dev->event_lock", "&new->fa_lock", "&f->f_owner.lock"),
                                             "HARDIRQ")
    old = """> [   78.185341] [ INFO: possible irq lock inversion dependency detected ]
> [   78.185341] 2.6.36-rc2-mm1 #6
> [   78.185341] ---------------------------------------------------------
> [   78.185341] kworker/0:1/0 just changed the state of lock:
> [   78.185341]  (&(&sighand->siglock)->rlock){-.....}, at: [<ffffffff81042d83>] lock_task_sighand+0x9a/0xda
> [   78.185341] but this lock took another, HARDIRQ-unsafe lock in the past:
> [   78.185341]  (&(&p->alloc_lock)->rlock){+.+...}
> [   78.185341]
> [   78.185341] and interrupts could create inverse lock ordering between them.
"""
    (a,) = run(old)
    assert (a.kind, a.locks) == ("irq_inversion", ("&sighand->siglock", "&p->alloc_lock"))


def test_softirq_inconsistent_state_and_bad_unlock_new_banner() -> None:
    text = """WARNING: inconsistent lock state
6.1.0 #1 Not tainted
--------------------------------
inconsistent {SOFTIRQ-ON-W} -> {IN-SOFTIRQ-W} usage.
swapper/0/0 [HC0[0]:SC1[1]:HE1:SE0] takes:
ffff888000001000 (&x->lock){+.?.}-{2:2}, at: handler+0x1/0x2
{SOFTIRQ-ON-W} state was registered at:
  lock_acquire+0x1/0x2
  process_path+0x1/0x2
=====================================
WARNING: bad unlock balance detected!
6.1.0 #1 Not tainted
-------------------------------------
kworker/1:1/77 is trying to release lock (&y->mutex) at:
[<ffffffff81000000>] bad_path+0x1/0x2
but there are no more locks to release!

other info that might help us debug this:
no locks held by kworker/1:1/77.
"""
    alerts = run(text)
    assert [(a.kind, a.locks, a.irq_state) for a in alerts] == [
        ("inconsistent_state", ("&x->lock",), "SOFTIRQ"), ("bad_unlock", ("&y->mutex",), "")]
    assert alerts[1].trigger.site == "bad_path+0x1/0x2"


# ---- never crashing --------------------------------------------------------------------------


def _pipeline(text: str) -> None:
    reports = parse_text(text, "fuzz")
    batch = to_batch(reports, NORM, "fuzz")
    Engine().ingest(batch, host="fuzz")
    for r in reports:
        circular_edges(r)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    _pipeline(text)


_LINES = st.sampled_from(["", "-> #1 (", "-> #0 (x){+.+.}:", "(a){", "  lock(", "rlock(a);", "#0: (x){....}, at: ",
                          "[   1.0] ", "[T1]", "Chain exists of:", "  a --> b", "... acquired at:", "-> (x){-.-.} {",
                          "but task is already holding lock:", "is trying to acquire lock:", "f+0x1/0x2",
                          "WARNING: possible circular locking dependency detected", "stack backtrace:"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_LINES, st.text(max_size=40)).map(str), max_size=60))
def test_report_shaped_noise_never_raises(lines: list[str]) -> None:
    _pipeline("\n".join(lines))


def _corpus_texts() -> list[str]:
    paths = [CORPUS / n for n in corpus_files()] + ([SEED] if SEED.exists() else [])
    return [p.read_text() for p in paths]


@needs_shared
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_reports_never_raise(data: st.DataObject) -> None:
    texts = _corpus_texts()
    lines = data.draw(st.sampled_from(texts)).splitlines()
    other = data.draw(st.sampled_from(texts)).splitlines()
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    for op in data.draw(st.lists(st.sampled_from(["delete", "truncate", "interleave", "duplicate", "garble",
                                                  "swap", "splice"]), max_size=6)):
        if not lines:
            break
        i = rnd.randrange(len(lines))
        if op == "delete":
            del lines[i:i + rnd.randint(1, 5)]
        elif op == "truncate":
            lines = lines[:i] + ([lines[i][:rnd.randrange(len(lines[i]) + 1)]] if rnd.random() < 0.5 else [])
        elif op == "interleave":
            lines = [x for pair in zip(lines, other) for x in pair] + lines[len(other):]
        elif op == "duplicate":
            lines[i:i] = lines[i:i + rnd.randint(1, 20)]
        elif op == "garble":
            s = lines[i]
            j = rnd.randrange(len(s) + 1)
            lines[i] = s[:j] + data.draw(st.text(max_size=8)) + s[j + 1:]
        elif op == "swap":
            j = rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "splice":
            lines[i:i] = other[rnd.randrange(len(other) or 1):][:rnd.randint(1, 30)]
    _pipeline("\n".join(lines))


@needs_shared
@settings(max_examples=100, deadline=None)
@given(st.data())
def test_cut_or_holed_reports_keep_only_true_dependencies(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from([n for n in corpus_files() if expected()[n]["kind"] == "circular"]))
    lines = (CORPUS / name).read_text().splitlines()
    full = {(e.held.name, e.taken.name) for r in parse_text("\n".join(lines)) for e in circular_edges(r)}
    cut = data.draw(st.integers(0, len(lines)))
    hole = data.draw(st.integers(0, len(lines)))
    for text in ("\n".join(lines[:cut]), "\n".join(lines[:hole] + lines[hole + 1:])):
        got = {(e.held.name, e.taken.name) for r in parse_text(text) for e in circular_edges(r)}
        assert got <= full


# ---- names -----------------------------------------------------------------------------------


def test_name_normalisation() -> None:
    assert split_class("&pipe->mutex/1") == ("&pipe->mutex", 1)
    assert split_class("a/b") == ("a/b", 0)
    assert split_class("a/0") == ("a/0", 0)     # lockdep prints no `/0`: such a name is the lock's own
    assert NORM("&lo->lo_ctl_mutex#2") == ("&lo->lo_ctl_mutex", 0)
    assert NORM("&type->s_umount_key#46/1") == ("&type->s_umount_key", 1)
    assert NORM.printed("&q->q_usage_counter(io)#55") == "&q->q_usage_counter(io)"
    assert NORM.printed("&(&zone->lock)->rlock") == "&zone->lock"
    assert NORM.printed("(wq_completion)wg-kex-wireguard1") == "(wq_completion)wg-kex-wireguard1"
    raw = Normalizer.from_options(defaults=False)
    assert raw.printed("&lo->lo_ctl_mutex#2") == "&lo->lo_ctl_mutex#2"
    rules = parse_rules("# workqueues of numbered devices\n^\\(wq_completion\\)(\\D+)\\d+$\t(wq_completion)\\1\n")
    assert Normalizer([*DEFAULT_RULES, *rules]).printed("(wq_completion)wg-kex-wireguard1#3") == \
        "(wq_completion)wg-kex-wireguard"
    with pytest.raises(RulesError, match=r"rules:1: expected"):
        parse_rules("no tab here")
    with pytest.raises(RulesError, match=r"rules:2:"):
        parse_rules("a\tb\n(unclosed\tx")


def test_rules_that_merge_two_classes_of_a_dependency_drop_it() -> None:
    # `A#2 -> A#3` is no dependency once both are `A` (and no recursive locking); what is left,
    # A#3 -> B and B -> A#2, is the cycle A -> B -> A
    (a,) = run(circular_text(["A#2", "A#3", "B"]))
    assert a.kind == "circular" and is_rotation(a.locks, ["A", "B"])


# ---- the command -----------------------------------------------------------------------------


@needs_shared
def test_main_dmesg_json_on_the_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_dmesg([str(SEED)], json_out=True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(a["kind"], a["locks"]) for a in doc["alerts"]] == [("circular", SEED_CYCLE)]
    assert doc["alerts"][0]["hosts"] == ["lkml-bpf-deadlock-report"]


def test_main_dmesg_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_dmesg([str(tmp_path / "missing.log")], json_out=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.log: no such file" in err
    assert main_dmesg([str(tmp_path)], json_out=True) == 2
    assert len(capsys.readouterr().err.splitlines()) == 1
    (tmp_path / "rules").write_text("(bad\tx\n")
    (tmp_path / "empty.log").write_text("nothing to see\n")
    assert main_dmesg([str(tmp_path / "empty.log")], json_out=False, rules=str(tmp_path / "rules")) == 2
    assert "rules:1:" in capsys.readouterr().err
    assert main_dmesg([str(tmp_path / "empty.log")], json_out=True) == 0
    assert json.loads(capsys.readouterr().out) == {"alerts": [], "incomplete": []}


def test_argparse_registration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="lockfleet")
    register_dmesg(parser.add_subparsers(dest="command"))
    log = tmp_path / "box.log"
    log.write_text(circular_text(["X#1", "Y"]))
    args = parser.parse_args(["dmesg", str(log), "--json", "--host", "db-7", "--no-normalize"])
    assert args.func(args) == 0
    (a,) = json.loads(capsys.readouterr().out)["alerts"]
    assert (a["locks"], a["hosts"]) == (["X#1", "Y"], ["db-7"])
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["dmesg", str(log), "--push", "--target", "nonsense"])
    assert exc.value.code == 2


@pytest.mark.e2e
@needs_shared
def test_push_to_a_service(lockfleet_server, capsys: pytest.CaptureFixture[str]) -> None:
    from lockfleet.agent import fetch_alerts

    assert main_dmesg([str(SEED)], json_out=True, push_target=lockfleet_server.target, host="lab-3") == 0
    (pushed,) = json.loads(capsys.readouterr().out)["pushed"]
    assert pushed["events"] == 20 and pushed["host"] == "lab-3" and pushed["duplicates"] == 0
    alerts = fetch_alerts(lockfleet_server.target)
    assert [(a.data["kind"], a.data["locks"], a.data["hosts"]) for a in alerts] == [("circular", SEED_CYCLE, ["lab-3"])]
    # the same log again is the same stream: nothing applied twice
    assert main_dmesg([str(SEED)], json_out=True, push_target=lockfleet_server.target, host="lab-3") == 0
    assert json.loads(capsys.readouterr().out)["pushed"][0]["duplicates"] == 1


def test_push_to_nothing_fails_with_1(tmp_path: Path, unused_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "box.log"
    log.write_text(circular_text(["X", "Y"]))
    assert main_dmesg([str(log)], json_out=False, push_target=unused_target) == 1
    err = capsys.readouterr().err
    assert err.startswith("lockfleet dmesg: cannot reach lockfleet at") and err.count("\n") == 1
