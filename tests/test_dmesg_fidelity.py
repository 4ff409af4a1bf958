"""`lockfleet dmesg` reads kernel reports back exactly as they were printed.

Each log shape has a report written here in the kernel's format (kernel/locking/lockdep.c's
print_* functions, as the real reports of the shared corpus show them): output of another task
interleaved into a report, usage names outside the irq pairs (`{INITIAL USE} -> {IN-NMI}`),
reports whose header the log lost, two irq reports sharing a lock merged in both orders,
`WARNING: held lock freed!`, truncated reports. Then: a finding read from a log is printed again
from what the log printed, never rebuilt, and a property test merges random subsets of the
corpus reports in random orders and checks that every report's own finding survives.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockfleet.agent.kernel.class_names import Normalizer
from lockfleet.agent.kernel.dmesg import Log, findings, own_finding, parse_text, read_log, split_line
from lockfleet.cli.kernel_logs import main_dmesg

SHARED_DIR = Path(os.environ.get("LOCKFLEET_SHARED") or Path(__file__).resolve().parents[2] / "shared")
CORPUS = SHARED_DIR / "corpus" / "lockdep-reports"
SEED = SHARED_DIR / "seed" / "lkml-bpf-deadlock-report.txt"
# a missing shared folder is a failure under CI, a skip elsewhere
needs_shared = pytest.mark.skipif(not SHARED_DIR.is_dir() and os.environ.get("CI") != "true",
                                  reason=f"no shared folder at {SHARED_DIR}")
NORM = Normalizer()


def stamp(lines: list[str], t0: float = 100.0, caller: str = "") -> str:
    """Console lines as a kernel log holds them: `[   100.000100] text` (and a caller id)."""
    cid = f"[{caller:>6}]" if caller else ""
    return "".join(f"[{t0 + i / 10000:12.6f}]{cid} {line}\n" for i, line in enumerate(lines))


def run(text: str, host: str = "h") -> list:
    return findings([Log("log", host, "", parse_text(text, "log", host))], NORM)


def kernel_part(rendered: str) -> list[str]:
    """The rendered report without lockfleet's own section at the end."""
    lines = rendered.splitlines()
    cut = next(i for i, line in enumerate(lines) if line.startswith("lockfleet: read from"))
    while cut and not lines[cut - 1]:
        cut -= 1
    return lines[:cut]


# ---- 3. another task's output interleaved into a report ----------------------------------------

BAD_UNLOCK_INTERLEAVED = [
    "=====================================",
    "WARNING: bad unlock balance detected!",
    "6.6.0-rc4 #3 Not tainted",
    "-------------------------------------",
    # another CPU's warning, printed between the banner and the report's body (no caller ids)
    "------------[ cut here ]------------",
    "WARNING: CPU: 1 PID: 77 at net/sched/sch_generic.c:525 dev_watchdog+0x5c/0x80",
    "Modules linked in:",
    "CPU: 1 PID: 77 Comm: ksoftirqd/1 Not tainted 6.6.0-rc4 #3",
    "Call Trace:",
    " <IRQ>",
    " dev_watchdog+0x5c/0x80",
    " call_timer_fn+0x1a/0x120",
    " </IRQ>",
    "---[ end trace 0000000000000000 ]---",
    "syz-executor.2/4711 is trying to release lock (&sbi->s_lock) at:",
    "[<ffffffff81a2b3c4>] fat_put_super+0x44/0x90",
    "but there are no more locks to release!",
    "",
    "other info that might help us debug this:",
    "2 locks held by syz-executor.2/4711:",
    " #0: ffff88801d2e00e0 (&type->s_umount_key#27){++++}-{3:3}, at: deactivate_super+0x9f/0xc0",
    " #1: ffff88801d2e1c18 (&sbi->s_lock#2){+.+.}-{3:3}, at: fat_put_super+0x21/0x90",
    "",
    "stack backtrace:",
    "CPU: 0 PID: 4711 Comm: syz-executor.2 Not tainted 6.6.0-rc4 #3",
    "Call Trace:",
    " dump_stack_lvl+0x8f/0xb0",
]


def test_interleaved_warning_between_banner_and_release_line() -> None:
    """Another task's `cut here` warning (with its `Call Trace:`) printed between the banner and
    `is trying to release lock` once ended the report before its body: counted, no finding."""
    (a,) = run(stamp(BAD_UNLOCK_INTERLEAVED))
    assert (a.kind, a.locks) == ("bad_unlock", ("&sbi->s_lock",))
    assert a.trigger.task == "syz-executor.2/4711" and a.trigger.site == "fat_put_super+0x44/0x90"
    text = a.render()
    assert "[<ffffffff81a2b3c4>] fat_put_super+0x44/0x90" in text
    # the other task's lines are not the report's and are not printed as if they were
    assert "dev_watchdog" not in text and "cut here" not in text and "Modules linked in" not in text
    assert " #1: ffff88801d2e1c18 (&sbi->s_lock#2){+.+.}-{3:3}, at: fat_put_super+0x21/0x90" in text


# ---- 4. usage names outside the irq pairs ------------------------------------------------------

NMI_REPORT = [
    "================================",
    "WARNING: inconsistent lock state",
    "6.8.0-rc3 #1 Not tainted",
    "--------------------------------",
    "inconsistent {INITIAL USE} -> {IN-NMI} usage.",
    "perf_fuzzer/2203 [HC1[1]:SC0[0]:HE0:SE1] takes:",
    "ffff88807e63a018 (&cpuctx_lock){....}-{2:2}, at: perf_event_nmi_handler+0x1a/0x40",
    "{INITIAL USE} state was registered at:",
    "  lock_acquire+0x1b1/0x530",
    "  _raw_spin_lock+0x2e/0x40",
    "  perf_ctx_lock+0x12/0x30",
    "  perf_event_task_tick+0x80/0x200",
    "irq event stamp: 4242",
    "hardirqs last  enabled at (4241): [<ffffffff8123a4c1>] _raw_spin_unlock_irqrestore+0x2a/0x50",
    "hardirqs last disabled at (4242): [<ffffffff8123b001>] exc_nmi+0x10/0x30",
    "softirqs last  enabled at (0): [<ffffffff81100aa0>] copy_process+0x1a0/0x3000",
    "softirqs last disabled at (0): [<0000000000000000>] 0x0",
    "",
    "other info that might help us debug this:",
    " Possible unsafe locking scenario:",
    "",
    "       CPU0",
    "       ----",
    "  lock(&cpuctx_lock);",
    "  <Interrupt>",
    "    lock(&cpuctx_lock);",
    "",
    " *** DEADLOCK ***",
    "",
    "no locks held by perf_fuzzer/2203.",
    "",
    "stack backtrace:",
]


@pytest.mark.parametrize("transition,state", [("{INITIAL USE} -> {IN-NMI}", "NMI"),
                                              ("{INITIAL READ USE} -> {IN-NMI}", "NMI"),
                                              ("{HARDIRQ-ON-R} -> {IN-HARDIRQ-W}", "HARDIRQ")])
def test_usage_names_outside_the_irq_pairs(transition: str, state: str) -> None:
    lines = [line.replace("{INITIAL USE} -> {IN-NMI}", transition) for line in NMI_REPORT]
    (a,) = run(stamp(lines))
    assert (a.kind, a.locks, a.irq_state) == ("inconsistent_state", ("&cpuctx_lock",), state)
    text = a.render()
    assert f"inconsistent {transition} usage." in text
    assert "perf_fuzzer/2203 [HC1[1]:SC0[0]:HE0:SE1] takes:" in text
    assert "no locks held by perf_fuzzer/2203." in text
    assert "hardirqs last disabled at (4242): [<ffffffff8123b001>] exc_nmi+0x10/0x30" in text


# ---- 5. reports whose header the log lost ------------------------------------------------------

HEADLESS_IRQ = [
    # print_bad_irq_dependency cut before `other info`: the scenario and the dependency blocks remain
    "other info that might help us debug this:",
    "",
    "Chain exists of:",
    "  &dev->event_lock --> &client->buffer_lock --> &new->fa_lock",
    "",
    " Possible interrupt unsafe locking scenario:",
    "",
    "       CPU0                    CPU1",
    "       ----                    ----",
    "  lock(&new->fa_lock);",
    "                               local_irq_disable();",
    "                               lock(&dev->event_lock);",
    "                               lock(&client->buffer_lock);",
    "  <Interrupt>",
    "    lock(&dev->event_lock);",
    "",
    " *** DEADLOCK ***",
    "",
    "2 locks held by evtest/811:",
    " #0: ffff888144e34230 (&dev->event_lock){-.-.}-{2:2}, at: input_inject_event+0xa6/0x310",
    " #1: ffff88806a4a6028 (&client->buffer_lock){....}-{2:2}, at: evdev_pass_values+0xf6/0x970",
    "",
    "the dependencies between HARDIRQ-irq-safe lock and the holding lock:",
    "-> (&dev->event_lock){-.-.}-{2:2} {",
    "   IN-HARDIRQ-W at:",
    "                    lock_acquire+0x29d/0x740",
    "                    _raw_spin_lock_irqsave+0x39/0x50",
    "                    input_event+0x7b/0xb0",
    "   INITIAL USE at:",
    "                   lock_acquire+0x29d/0x740",
    "                   input_inject_event+0xa6/0x310",
    " }",
    " ... key      at: [<ffffffff8fa50fa0>] __key.8+0x0/0x40",
    "-> (&client->buffer_lock){....}-{2:2} {",
    "   INITIAL USE at:",
    "                   lock_acquire+0x29d/0x740",
    "                   evdev_pass_values+0xf6/0x970",
    " }",
    " ... key      at: [<ffffffff8fa51420>] __key.4+0x0/0x40",
    " ... acquired at:",
    "   _raw_spin_lock+0x2a/0x40",
    "   evdev_pass_values+0xf6/0x970",
    "",
    "",
    "the dependencies between the lock to be acquired",
    " and HARDIRQ-irq-unsafe lock:",
    "-> (&new->fa_lock){.?.+}-{2:2} {",
    "   HARDIRQ-ON-R at:",
    "                    lock_acquire+0x29d/0x740",
    "                    _raw_read_lock+0x5b/0x70",
    "                    kill_fasync+0x14b/0x460",
    " }",
    " ... key      at: [<ffffffff8ef8d980>] __key.0+0x0/0x40",
    " ... acquired at:",
    "   _raw_read_lock+0x5b/0x70",
    "   kill_fasync+0x14b/0x460",
    "",
    "",
    "stack backtrace:",
]

HEADLESS_CIRCULAR = [
    # print_circular_bug cut before its chain: the entries, the scenario and the held locks remain
    "-> #1 (&mm->mmap_lock){++++}-{3:3}:",
    "       lock_acquire+0x1d2/0x4d0",
    "       down_read+0x9c/0x470",
    "       do_user_addr_fault+0x2a5/0x7f0",
    "",
    "-> #0 (&ctx->uring_lock){+.+.}-{3:3}:",
    "       lock_acquire+0x1d2/0x4d0",
    "       __mutex_lock+0x134/0xb60",
    "       io_uring_mmap+0x68/0x170",
    "",
    "other info that might help us debug this:",
    "",
    " Possible unsafe locking scenario:",
    "",
    "       CPU0                    CPU1",
    "       ----                    ----",
    "  rlock(&mm->mmap_lock);",
    "                               lock(&ctx->uring_lock);",
    "                               lock(&mm->mmap_lock);",
    "  lock(&ctx->uring_lock);",
    "",
    " *** DEADLOCK ***",
    "",
    "1 lock held by syz-executor/5120:",
    " #0: ffff88802a1c0a98 (&mm->mmap_lock){++++}-{3:3}, at: vm_mmap_pgoff+0x16e/0x3a0",
    "",
    "stack backtrace:",
]


def test_headless_irq_report_rebuilt_from_its_blocks() -> None:
    """print_bad_irq_dependency with its header lost: the dependency blocks name the safe lock,
    the held one, the unsafe one; the finding is rebuilt from them, and printed with its missing
    sections said unknown, no task or site invented for them."""
    text = stamp(["eth0: link becomes ready"]) + stamp(HEADLESS_IRQ, t0=200)
    (a,) = run(text)
    assert (a.kind, a.irq_state) == ("irq_inversion", "HARDIRQ")
    assert a.locks == ("&dev->event_lock", "&client->buffer_lock", "&new->fa_lock")
    rendered = kernel_part(a.render())
    assert rendered[0] == "<unknown: the report's banner and headline was not printed>"
    assert "<unknown: the task line and the lock it names was not printed>" in rendered
    assert "<unknown: the irq-safe lock and where it became irq-safe was not printed>" in rendered
    assert not any("is trying to acquire" in line for line in rendered)
    assert "  &dev->event_lock --> &client->buffer_lock --> &new->fa_lock" in rendered
    assert a.printed.incomplete.startswith("the log does not hold the report's banner and headline")


def test_headless_circular_report_rebuilt_from_its_entries() -> None:
    (a,) = run(stamp(HEADLESS_CIRCULAR))
    assert (a.kind, a.locks) == ("circular", ("&ctx->uring_lock", "&mm->mmap_lock"))
    assert a.links[-1].first_taken.task == ""      # the log named no task for it: none invented
    rendered = kernel_part(a.render())
    assert rendered[:3] == ["<unknown: the report's banner and headline was not printed>",
                            "<unknown: the task line and the lock it names was not printed>",
                            "<unknown: the lock the task already holds was not printed>"]
    assert "-> #1 (&mm->mmap_lock){++++}-{3:3}:" in rendered


# ---- 6. merging keeps every report's own finding -----------------------------------------------


def irq_report(safe: str, held: str, new: str, unsafe: str, task: str, state: str = "HARDIRQ") -> list[str]:
    """print_bad_irq_dependency: `held -> new` connects the irq-safe `safe` (~> held) to the
    irq-unsafe `unsafe` (new ~>)."""
    u = {"HARDIRQ": ("{-...}", "{+...}"), "SOFTIRQ": ("{..-.}", "{..+.}")}[state]
    lines = ["=====================================================",
             f"WARNING: {state}-safe -> {state}-unsafe lock order detected",
             "6.1.0-test #1 Not tainted", "-----------------------------------------------------",
             f"{task} [HC0[0]:SC0[0]:HE0:SE1] is trying to acquire:",
             f"ffff888000001000 ({new}){u[1]}-{{2:2}}, at: take_new+0x10/0x80", "",
             "and this task is already holding:",
             f"ffff888000002000 ({held}){u[0]}-{{2:2}}, at: take_held+0x10/0x80",
             "which would create a new lock dependency:", f" ({held}){u[0]}-{{2:2}} -> ({new}){u[1]}-{{2:2}}", "",
             f"but this new dependency connects a {state}-irq-safe lock:", f" ({safe}){u[0]}-{{2:2}}", "",
             f"... which became {state}-irq-safe at:", "  lock_acquire+0x1/0x10", "  irq_handler+0x2/0x20", "",
             f"to a {state}-irq-unsafe lock:", f" ({unsafe}){u[1]}-{{2:2}}", "",
             f"... which became {state}-irq-unsafe at:", "...", "  lock_acquire+0x1/0x10", "  process_path+0x3/0x30",
             "", "other info that might help us debug this:", "",
             " Possible interrupt unsafe locking scenario:", "", "       CPU0                    CPU1",
             "       ----                    ----", f"  lock({unsafe});", f"{' ' * 31}local_irq_disable();",
             f"{' ' * 31}lock({safe});", f"{' ' * 31}lock({held if held != safe else new});", "  <Interrupt>",
             f"    lock({safe});", "", " *** DEADLOCK ***", "",
             f"1 lock held by {task}:", f" #0: ffff888000002000 ({held}){u[0]}-{{2:2}}, at: take_held+0x10/0x80", "",
             f"the dependencies between {state}-irq-safe lock and the holding lock:",
             f"-> ({held}){u[0]}-{{2:2}} {{", f"   IN-{state}-W at:", "                    irq_handler+0x2/0x20",
             " }", " ... key      at: [<ffffffff8fa50fa0>] __key.1+0x0/0x40", "", "",
             "the dependencies between the lock to be acquired", f" and {state}-irq-unsafe lock:",
             f"-> ({new}){u[1]}-{{2:2}} {{", f"   {state}-ON-W at:", "                    process_path+0x3/0x30",
             " }", " ... key      at: [<ffffffff8fa51420>] __key.2+0x0/0x40", " ... acquired at:",
             "   take_new+0x10/0x80", "", "", "stack backtrace:"]
    return lines


def test_two_irq_reports_sharing_a_lock_keep_their_findings_in_both_orders(tmp_path: Path) -> None:
    """Report 1: `A -> B` joins hardirq-safe A to hardirq-unsafe B; report 2: `B -> A` joins
    hardirq-safe B to hardirq-unsafe A. Merged, the graph has the cycle A <-> B, which no
    report shows: it comes in addition, and each report keeps its own finding, whatever the
    order of the files."""
    (tmp_path / "web-1.log").write_text(stamp(irq_report("A", "A", "B", "B", "kworker/0:1/42")))
    (tmp_path / "web-2.log").write_text(stamp(irq_report("B", "B", "A", "A", "kworker/1:2/77"), t0=300))
    results = []
    for names in (["web-1.log", "web-2.log"], ["web-2.log", "web-1.log"]):
        logs = [read_log(str(tmp_path / n)) for n in names]
        got = findings(logs, NORM)
        own = {(a.kind, a.locks, a.hosts) for a in got if a.printed is not None}
        assert own == {("irq_inversion", ("A", "B"), ("web-1",)), ("irq_inversion", ("B", "A"), ("web-2",))}
        cross = {(a.kind, frozenset(a.locks)) for a in got if a.printed is None}
        assert ("circular", frozenset({"A", "B"})) in cross
        results.append({a.id for a in got if a.printed is not None})
    assert results[0] == results[1]


# ---- 7. held lock freed ------------------------------------------------------------------------

HELD_LOCK_FREED = [
    "=========================",
    "WARNING: held lock freed!",
    "6.5.0-rc2-syzkaller #0 Not tainted",
    "-------------------------",
    "kworker/u4:3/61 is freeing memory ffff88802b1e4000-ffff88802b1e47ff, with a lock still held there!",
    "ffff88802b1e4418 (&nbd->config_lock){+.+.}-{3:3}, at: nbd_config_put+0x3a/0x4d0",
    "3 locks held by kworker/u4:3/61:",
    " #0: ffff888012466938 ((wq_completion)nbd0-recv){+.+.}-{0:0}, at: process_one_work+0x8e4/0x1610",
    " #1: ffffc900015bfdb0 ((work_completion)(&args->work)){+.+.}-{0:0}, at: process_one_work+0x918/0x1610",
    " #2: ffff88802b1e4418 (&nbd->config_lock){+.+.}-{3:3}, at: nbd_config_put+0x3a/0x4d0",
    "",
    "stack backtrace:",
    "CPU: 0 PID: 61 Comm: kworker/u4:3 Not tainted 6.5.0-rc2-syzkaller #0",
]


@pytest.mark.parametrize("banner", ["WARNING: held lock freed!", "[ BUG: held lock freed! ]"])
def test_held_lock_freed(banner: str) -> None:
    lines = [line.replace("WARNING: held lock freed!", banner) for line in HELD_LOCK_FREED]
    (a,) = run(stamp(lines, caller="T61"))
    assert (a.kind, a.locks) == ("held_lock_freed", ("&nbd->config_lock",))
    assert a.trigger.task == "kworker/u4:3/61" and a.trigger.site == "nbd_config_put+0x3a/0x4d0"
    assert [o.lock for o in a.held] == ["(wq_completion)nbd0-recv", "(work_completion)(&args->work)",
                                        "&nbd->config_lock"]
    assert kernel_part(a.render()) == lines[:lines.index("stack backtrace:") - 1]
    assert a.to_dict()["kind"] == "held_lock_freed"


# ---- 8. truncated reports are said, on stderr and in --json ------------------------------------


def circular_lines(names: list[str], task: str = "kworker/0:1/42") -> list[str]:
    n = len(names) - 1
    lines = ["=" * 54, "WARNING: possible circular locking dependency detected", "6.1.0-test #1 Not tainted",
             "-" * 54, f"{task} is trying to acquire lock:",
             f"ffff888000001000 ({names[0]}){{+.+.}}-{{3:3}}, at: take+0x10/0x80", "",
             "but task is already holding lock:",
             f"ffff888000002000 ({names[n]}){{+.+.}}-{{3:3}}, at: hold+0x10/0x80", "",
             "which lock already depends on the new lock.", "", "",
             "the existing dependency chain (in reverse order) is:"]
    for k in range(n, -1, -1):
        lines += ["", f"-> #{k} ({names[k]}){{+.+.}}-{{3:3}}:", "       lock_acquire+0x1/0x10",
                  "       __mutex_lock+0x2/0x20", f"       path_{k}+0x3/0x30"]
    lines += ["", "other info that might help us debug this:", ""]
    if n >= 2:
        lines += ["Chain exists of:", f"  {names[0]} --> {names[n - 1]} --> {names[n]}", ""]
    lines += [" Possible unsafe locking scenario:", "", "       CPU0                    CPU1",
              "       ----                    ----", f"  lock({names[n]});", f"{' ' * 31}lock({names[n - 1]});",
              f"{' ' * 31}lock({names[n]});", f"  lock({names[0]});", "", " *** DEADLOCK ***", "",
              f"1 lock held by {task}:", f" #0: ffff888000002000 ({names[n]}){{+.+.}}-{{3:3}}, at: hold+0x10/0x80",
              "", "stack backtrace:"]
    return lines


def test_truncated_report_without_finding_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = circular_lines(["A", "B", "C", "D"])
    cut = whole[:whole.index("-> #2 (C){+.+.}-{3:3}:") + 3] + ["Lost 41 message(s)!"]
    log = tmp_path / "cut.log"
    log.write_text(stamp(cut) + stamp(circular_lines(["X", "Y"]), t0=400))
    assert main_dmesg([str(log)], json_out=False) == 0
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith(f"lockfleet dmesg: {log}:2: incomplete circular report: ")
    assert "the dependency chain is cut: entries #2, #3 of #0..#3" in line and line.endswith("no finding from it")
    assert "1 incomplete report(s)" in out.splitlines()[-1]
    assert main_dmesg([str(log)], json_out=True) == 0
    doc = json.loads(capsys.readouterr().out)
    (inc,) = doc["incomplete"]
    assert (inc["file"], inc["line"], inc["kind"], inc["finding"]) == (str(log), 2, "circular", None)
    assert "the list of locks held" in inc["reason"]
    assert [a["locks"] for a in doc["alerts"]] == [["X", "Y"]]


def test_truncated_report_with_finding_is_printed_as_truncated() -> None:
    """A recursive report cut inside its held-locks list: the finding stands (the header names
    the lock), printed as far as the log holds it and said to be incomplete, never completed."""
    lines = ["============================================", "WARNING: possible recursive locking detected",
             "6.1.0-test #1 Not tainted", "--------------------------------------------",
             "ip/3301 is trying to acquire lock:", "ffffffff8d0a5f48 (rtnl_mutex){+.+.}-{3:3}, at: dev_ioctl+0x1c/0x80", "",
             "but task is already holding lock:", "ffffffff8d0a5f48 (rtnl_mutex){+.+.}-{3:3}, at: rtnl_lock+0x17/0x20", "",
             "other info that might help us debug this:", " Possible unsafe locking scenario:", "",
             "       CPU0", "       ----", "  lock(rtnl_mutex);", "  lock(rtnl_mutex);", "", " *** DEADLOCK ***", "",
             " May be due to missing lock nesting notation", "", "3 locks held by ip/3301:",
             " #0: ffffffff8d0a5f48 (rtnl_mutex){+.+.}-{3:3}, at: rtnl_lock+0x17/0x20"]
    (a,) = run(stamp(lines))
    assert (a.kind, a.locks) == ("recursive", ("rtnl_mutex",))
    rendered = kernel_part(a.render())
    assert rendered[:-2] == lines
    assert rendered[-1] == "<incomplete report: the held-locks list names 3 lock(s) but shows 1>"


# ---- 9. printed again from what the kernel printed ---------------------------------------------


def log_lines(path: Path) -> list[str]:
    return [ln.raw for no, raw in enumerate(path.read_text().splitlines(), 1) if (ln := split_line(no, raw))]


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.txt")) + ["seed"])
def test_corpus_reports_are_printed_as_the_kernel_printed_them(name: str) -> None:
    path = SEED if name == "seed" else CORPUS / name
    log = read_log(str(path))
    printed = log_lines(path)
    for r in log.reports:
        a = own_finding(r, NORM)
        if r.kind == "held_returning_to_user":
            assert a is None
            continue
        assert a is not None and a.count == 1
        rendered = kernel_part(a.render())
        # nothing the kernel did not print (the lines are the log's own, in its order) ...
        assert is_subsequence([x for x in rendered if not x.startswith("<")], printed)
        # ... and what it printed: the `at:` site of every lock line, the held-locks list, the irq
        # flags, the usage strings with their wait types
        for line in printed[printed.index(rendered[1]):]:
            text = line.strip()
            if text == "stack backtrace:":
                break
            if re.search(r", at: |\[HC\d\[\d\]:SC\d\[\d\]:HE\d:SE\d\]|^#\d+: | locks? held by |\}-\{\d:\d\}", text):
                assert line in rendered, line
        if r.kind == "irq_inversion":
            assert rendered[1] == r.headline or rendered[1].endswith(r.headline)
        assert not any(x.startswith("<") for x in rendered), "a whole report said to be incomplete"


# ---- the property: every report's own finding survives any merge -------------------------------


def _corpus_logs() -> list[Log]:
    paths = sorted(CORPUS.glob("*.txt")) + [SEED] if CORPUS.is_dir() else []
    return [read_log(str(p)) for p in paths]


_LOGS: list[Log] = []


@needs_shared
@settings(max_examples=int(os.environ.get("LOCKFLEET_PROPERTY_EXAMPLES") or 30) // 2 or 1, deadline=None,
          database=None, derandomize=os.environ.get("HYPOTHESIS_PROFILE") != "thorough",
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_reports_own_finding_survives_any_merge(data: st.DataObject) -> None:
    if not _LOGS:
        _LOGS.extend(_corpus_logs())
    picked = data.draw(st.lists(st.sampled_from(range(len(_LOGS))), min_size=1, max_size=len(_LOGS), unique=True))
    order = data.draw(st.permutations(picked))
    logs = [_LOGS[i] for i in order]
    merged = {a.id: a for a in findings(logs, NORM)}
    for log in logs:
        for r in log.reports:
            alone = own_finding(r, NORM)
            if alone is None:
                continue
            got = merged.get(alone.id)
            assert got is not None, f"{r.path}:{r.line}: its own {alone.kind} finding {alone.locks} was lost"
            assert (got.kind, got.locks, got.irq_state) == (alone.kind, alone.locks, alone.irq_state)
            assert f"{r.path}:{r.line}" in got.printed.sources
            assert got.printed.sections == alone.printed.sections or len(got.printed.sources) > 1


def test_other_warnings_with_an_other_info_block_are_not_reports(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    """lockdep_rcu_suspicious prints `other info that might help us debug this:` and a held-locks
    list too; it is no lock-order report, headless or not, and nothing is said about it."""
    rcu = ["=============================", "WARNING: suspicious RCU usage", "6.1.0-test #1 Not tainted",
           "-----------------------------", "net/core/dev.c:1234 suspicious rcu_dereference_check() usage!", "",
           "other info that might help us debug this:", "", "", "rcu_scheduler_active = 2, debug_locks = 1",
           "1 lock held by syz-executor/99:",
           " #0: ffffffff8d0a5f48 (rtnl_mutex){+.+.}-{3:3}, at: rtnl_lock+0x17/0x20", "", "stack backtrace:"]
    log = tmp_path / "rcu.log"
    log.write_text(stamp(rcu))
    assert parse_text(log.read_text()) == []
    assert main_dmesg([str(log)], json_out=False) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.strip() == "lockfleet dmesg: 0 lockdep report(s) in 1 file(s); 0 finding(s)"


def test_headless_recursive_report_rebuilt_from_its_scenario() -> None:
    """print_deadlock_bug cut before `other info`: the scenario's two `lock(X);` name the lock."""
    lines = ["other info that might help us debug this:", " Possible unsafe locking scenario:", "",
             "       CPU0", "       ----", "  lock(&dev->mutex);", "  lock(&dev->mutex);", "", " *** DEADLOCK ***", "",
             " May be due to missing lock nesting notation", "",
             "1 lock held by kworker/0:2/1234:",
             " #0: ffff888021c2a190 (&dev->mutex){+.+.}-{3:3}, at: device_lock+0x1a/0x30", "", "stack backtrace:"]
    (a,) = run(stamp(lines))
    assert (a.kind, a.locks) == ("recursive", ("&dev->mutex",))
    rendered = kernel_part(a.render())
    assert rendered[:3] == ["<unknown: the report's banner and headline was not printed>",
                            "<unknown: the task line and the lock it names was not printed>",
                            "<unknown: the lock the task already holds was not printed>"]
    assert rendered[3:-2] == lines[:-2]
