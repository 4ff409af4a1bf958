"""render(): findings printed as the kernel's lockdep prints them, plus the fleet's evidence.

Golden tests rebuild alerts from real reports (the seed and the corpus in ../shared) and compare
the rendering with the kernel's own text; the others build small alerts by hand.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SHARED_DIR, needs_shared, require

from lockfleet.events import EXCLUSIVE, RECURSIVE_READ, SHARED
from lockfleet.findings.model import KINDS, Alert, Link, Occurrence, Usage
from lockfleet.findings.render import render

SEED = SHARED_DIR / "seed" / "lkml-bpf-deadlock-report.txt"
CORPUS = SHARED_DIR / "corpus" / "lockdep-reports"

# ---- reading kernel reports ------------------------------------------------------------------

_STAMP = re.compile(r"^\[\s*\d+\.\d+\](\[\s*[TC]\d+\])? ?")
_WAIT_TYPE = re.compile(r"(\{[^}]*\})-\{\d+:\d+\}")  # newer kernels' `{usage}-{2:2}`: not rendered
_LOCK_LINE = re.compile(r"^([0-9a-f]{16}) \((.*)\)\{([^}]*)\}, at: (\S+)$")
_ENTRY = re.compile(r"^-> #(\d+) \((.*)\)\{([^}]*)\}:$")


def console(path: Path) -> list[str]:
    """A console log's lines without timestamps, wait types, and lines other tasks interleaved."""
    lines, caller = [], None
    for raw in path.read_text().splitlines():
        m = _STAMP.match(raw)
        if not m:
            continue
        if m.group(1):
            caller = caller or m.group(1)
            if m.group(1) != caller:
                continue
        lines.append(_WAIT_TYPE.sub(r"\1", raw[m.end():].rstrip()))
    return lines


def between(lines: list[str], first: str, last: str) -> list[str]:
    """lines[i..j] for the first `first` and the next line starting with `last`."""
    i = lines.index(first)
    j = next(k for k in range(i, len(lines)) if lines[k].startswith(last))
    return lines[i : j + 1]


def lock_occ(line: str, **kw) -> Occurrence:
    instance, name, _usage, frame = _LOCK_LINE.match(re.sub(r"^ #\d+: ", "", line)).groups()
    return Occurrence(lock=name, instance=int(instance, 16), site=frame, **kw)


def usage_strings(lines: list[str]) -> dict[str, str]:
    """Each lock's `{usage}` as the report's lock lines print it."""
    found = (_LOCK_LINE.match(re.sub(r"^ #\d+: ", "", line)) for line in lines)
    return {m.group(2): m.group(3) for m in found if m}


def held_list(lines: list[str]) -> tuple[Occurrence, ...]:
    return tuple(lock_occ(line) for line in lines if re.match(r"^ #\d+: [0-9a-f]{16} ", line))


def chain_entries(lines: list[str]) -> dict[int, tuple[str, str, list[str]]]:
    """The `-> #k (name){usage}:` entries of a circular report with their frames."""
    entries: dict[int, tuple[str, str, list[str]]] = {}
    k = None
    for line in lines:
        if m := _ENTRY.match(line):
            k = int(m.group(1))
            entries[k] = (m.group(2), m.group(3), [])
        elif k is not None and line.startswith("       "):
            entries[k][2].append(line.strip())
        else:
            k = None
    return entries


def cycle_alert(entries, hosts, task="t/1", closing_new=None, closing_held=None, held=()) -> Alert:
    """A circular alert whose links carry the stacks of `entries`; link i was taken on hosts[i]."""
    n = max(entries)
    locks = tuple(entries[k][0] for k in range(n + 1))
    links = []
    for i in range(n + 1):
        taken = (i + 1) % (n + 1)
        host = hosts[i % len(hosts)]
        first_taken = Occurrence(lock=locks[taken], site="\n".join(entries[taken][2]), host=host,
                                 task=task, ts_ns=1_551_366_460_000_000_000 + i)
        first_held = Occurrence(lock=locks[i], host=host, task=task)
        if i == n:
            first_taken = closing_new or first_taken
            first_held = closing_held or first_held
        links.append(Link(locks[i], locks[taken], ("EN",), first_held, first_taken, hosts=(host,)))
    return Alert(id="circular-0123456789abcdef", kind="circular", locks=locks, hosts=tuple(sorted(set(hosts))),
                 links=tuple(links), held=tuple(held), usage_strings={e[0]: e[1] for e in entries.values()})


def kernel_part(text: str) -> list[str]:
    return text.split("\n\nlockfleet: fleet evidence")[0].splitlines()


# ---- the seed: a five-lock cycle spread over four hosts --------------------------------------

SEED_HOSTS = ["web-2", "web-1", "web-1", "web-3", "web-4"]  # link i's host; the closing link last


@pytest.fixture()
def seed():
    require(SEED.is_file(), f"no seed report at {SEED}")
    lines = console(SEED)
    report = lines[: lines.index("stack backtrace:") - 1]
    entries = chain_entries(report)
    task = report[3].removesuffix(" is trying to acquire lock:")
    # The closing acquisition's site is its whole stack, the one entry #0 shows.
    new = replace(lock_occ(report[4], task=task, host="web-4", ts_ns=1_551_366_460_000_000_000),
                  site="\n".join(entries[0][2]))
    held = lock_occ(report[report.index("but task is already holding lock:") + 1], task=task, host="web-4")
    alert = cycle_alert(entries, SEED_HOSTS, task, new, held, held_list(report))
    return alert, report


@needs_shared
def test_seed_golden(seed):
    alert, report = seed
    assert alert.locks == ("tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex",
                           "bpf_event_mutex")
    out = kernel_part(render(alert))
    # The seed was cut below the banner; the version line names lockfleet instead of the kernel.
    assert out[0] == "=" * 54 and out[1:2] == report[0:1] and out[3:5] == report[2:4]
    assert out[2].startswith("lockfleet ")
    # "at:" shows the first frame of the site, here the acquisition's whole stack.
    assert out[5] == "0000000094160d1d (tracepoints_mutex){+.+.}, at: __mutex_lock+0x86/0x970"
    # From the held lock to the list of held locks, the kernel's text line for line.
    start = report.index("but task is already holding lock:")
    assert out[out.index(report[start]):] == report[start:]


@needs_shared
def test_seed_chain_scenario_and_entries(seed):
    alert, report = seed
    out = render(alert).splitlines()
    i = out.index("Chain exists of:")
    assert out[i + 1] == "  tracepoints_mutex --> &cpuctx_mutex --> bpf_event_mutex"
    dashes = "       ----                    ----"
    table = report[report.index(dashes) + 1 : report.index(dashes) + 5]
    assert table == ["  lock(bpf_event_mutex);", f"{' ' * 31}lock(&cpuctx_mutex);",
                     f"{' ' * 31}lock(bpf_event_mutex);", "  lock(tracepoints_mutex);"]
    assert out[out.index(dashes) + 1 : out.index(dashes) + 5] == table
    heads = [line for line in out if line.startswith("-> #")]
    assert heads == ["-> #4 (bpf_event_mutex){+.+.}:", "-> #3 (&cpuctx_mutex){+.+.}:", "-> #2 (pmus_lock){+.+.}:",
                     "-> #1 (cpu_hotplug_lock.rw_sem){++++}:", "-> #0 (tracepoints_mutex){+.+.}:"]
    k0 = out.index("-> #0 (tracepoints_mutex){+.+.}:")
    assert out[k0 + 1 : k0 + 3] == ["       __mutex_lock+0x86/0x970", "       tracepoint_probe_register_prio+0x2d/0x300"]
    k4 = out.index(heads[0])
    assert out[k4 + 1] == "       perf_event_query_prog_array+0x9b/0x130"


@needs_shared
def test_seed_fleet_section(seed):
    alert, _ = seed
    text = render(alert)
    fleet = text[text.index("\n\nlockfleet: fleet evidence") + 2 :].splitlines()
    assert fleet[0] == "lockfleet: fleet evidence for this finding (circular-0123456789abcdef):"
    assert fleet[1].startswith("  #4 &cpuctx_mutex -> bpf_event_mutex: first taken on web-3 by test_progs/246 at ")
    assert fleet[5] == ("  #0 bpf_event_mutex -> tracepoints_mutex: first taken on web-4 by test_progs/246 at "
                        "2019-02-28T15:07:40.000000000Z, 1 time on 1 host(s): web-4")
    assert fleet[-1] == "  no single host took the whole cycle: it exists only across hosts web-1, web-2, web-3, web-4"


# ---- the corpus: every real report of each kind ----------------------------------------------


def corpus(name: str) -> list[str]:
    path = CORPUS / name
    require(path.is_file(), f"no corpus report {path}")
    return console(path)


@needs_shared
@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("circular_*.txt")) if CORPUS.is_dir() else [])
def test_corpus_circular(name):
    lines = corpus(name)
    entries = chain_entries(lines)
    alert = cycle_alert(entries, ["h1"])
    assert alert.render() == render(alert)
    out = render(alert).splitlines()
    # The chain entries, "Chain exists of:" and the CPU0/CPU1 table, as the kernel printed them.
    first, last = "the existing dependency chain (in reverse order) is:", " *** DEADLOCK ***"
    assert between(out, first, last) == between(lines, first, last)
    assert out[1] == "WARNING: possible circular locking dependency detected"
    assert "  every link was taken on host h1 alone" in out


@needs_shared
def test_corpus_recursive():
    lines = corpus("recursive_rtnl_mutex.txt")
    report = lines[: lines.index("stack backtrace:") - 1]
    task = report[4].removesuffix(" is trying to acquire lock:")
    held = held_list(report)
    alert = Alert(id="recursive-1", kind="recursive", locks=("rtnl_mutex",), hosts=("h1",),
                  trigger=lock_occ(report[5], task=task, host="h1"), held=held,
                  usage_strings=usage_strings(report))
    out = kernel_part(render(alert))
    assert out[:2] == report[:2] and out[3] == report[3]
    assert out[4:] == report[4:]


@needs_shared
def test_corpus_inconsistent_state():
    lines = corpus("inconsistent_state_folio_wait_table.txt")
    report = lines[: lines.index("stack backtrace:") - 1]
    stamp = report.index(next(x for x in report if x.startswith("irq event stamp:")))
    report = report[:stamp] + report[stamp + 5 :]  # the irq event stamp is not rendered
    task = report[5].split(" [")[0]
    lock = "&folio_wait_table[i]"
    this = lock_occ(report[6], task=task, host="h1")
    registered = [x.strip() for x in report[8 : report.index("other info that might help us debug this:") - 1]]
    alert = Alert(id="inconsistent_state-1", kind="inconsistent_state", locks=(lock,), hosts=("h1",),
                  trigger=this, held=held_list(report), irq_state="HARDIRQ",
                  usages=(Usage(lock, "IN-HARDIRQ-W", Occurrence(lock, site="\n".join(registered), irq=1)),
                          Usage(lock, "HARDIRQ-ON-W", this)),
                  usage_strings=usage_strings(report))
    out = kernel_part(render(alert))
    assert out[:2] == report[:2] and out[3] == report[3]
    assert out[4:] == report[4:]


@needs_shared
def test_corpus_irq_inversion():
    lines = corpus("irq_safe_unsafe_input_event.txt")
    # The kernel split one line in two with a pr_cont that lost its caller id.
    i = lines.index("the dependencies between the lock to be acquired")
    lines[i : i + 2] = [lines[i] + lines[i + 1]]
    report = lines[: lines.index("stack backtrace:") - 1]
    safe, middle, unsafe = "&dev->event_lock", "&client->buffer_lock", "&new->fa_lock"
    task = report[4].split(" [")[0]

    def trace(after: str, start: int = 0) -> str:
        k = report.index(after, start) + 1
        frames = []
        while report[k].startswith("  ") and not report[k].strip().startswith("..."):
            frames.append(report[k].strip())
            k += 1
        return "\n".join(frames)

    new = lock_occ(report[5], task=task, host="h2", irq=4)
    prev = lock_occ(report[report.index("and this task is already holding:") + 1], task=task, host="h2")
    backwards = report.index("the dependencies between HARDIRQ-irq-safe lock and the holding lock:")
    to_middle = Occurrence(middle, site=trace("  ... acquired at:", backwards), host="h1", ts_ns=1)
    to_unsafe = Occurrence(unsafe, site=trace(" ... acquired at:", backwards), mode=RECURSIVE_READ, host="h2",
                           ts_ns=2)
    links = (Link(safe, middle, ("EN",), Occurrence(safe), to_middle, hosts=("h1",)),
             Link(middle, unsafe, ("ER",), prev, to_unsafe, hosts=("h2",)))
    unsafe_at = report.index("... which became HARDIRQ-irq-unsafe at:") + 1  # its trace follows a "..."
    alert = Alert(
        id="irq_inversion-1", kind="irq_inversion", locks=(safe, middle, unsafe), hosts=("h1", "h2"),
        links=links, trigger=new, held=held_list(report), irq_state="HARDIRQ",
        usages=(Usage(safe, "IN-HARDIRQ-W", Occurrence(safe, site=trace("... which became HARDIRQ-irq-safe at:"), irq=1)),
                Usage(unsafe, "HARDIRQ-ON-R", Occurrence(unsafe, site=trace("...", unsafe_at)))),
        usage_strings=usage_strings(report),
    )
    out = kernel_part(render(alert))
    assert out[1] == "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"
    assert out[0] == report[0] and out[3] == report[3]
    # Up to the dependency sections, the kernel's text line for line.
    assert out[4:backwards] == report[4:backwards]
    # The sections show a subset of what the kernel shows (no INITIAL USE, no class keys), in order.
    rest = iter(report[backwards:])
    assert all(line in rest for line in out[backwards:])
    assert "  no single host took the whole path: it exists only across hosts h1, h2" in render(alert).splitlines()


@needs_shared
def test_corpus_bad_unlock():
    lines = corpus("bad_unlock_balance_mrt_lock.txt")
    task = lines[4].split(" is trying")[0]
    site = lines[5].split("] ", 1)[1]  # an old kernel's "[<address>] frame"
    alert = Alert(id="bad_unlock-1", kind="bad_unlock", locks=("mrt_lock",), hosts=("h1",),
                  trigger=Occurrence("mrt_lock", site=site, task=task, host="h1"))
    out = kernel_part(render(alert))
    # This old kernel's banner was "[ BUG: bad unlock balance detected! ]"; the lines after it hold.
    assert out[1] == "WARNING: bad unlock balance detected!"
    assert out[4:9] == lines[4:5] + [site] + lines[6:9]
    assert out[9] == f"no locks held by {task}."


# ---- by hand ---------------------------------------------------------------------------------


def occ(lock, site="f+0x1/0x10", mode=EXCLUSIVE, host="h1", task="t/1", **kw):
    return Occurrence(lock=lock, site=site, mode=mode, host=host, task=task, **kw)


def cycle(names, modes=None, host="h1", **kw) -> Alert:
    """A cycle over `names` (names[0] is #0); `modes` gives each link's (held, taken) modes."""
    n = len(names)
    links = []
    for i in range(n):
        held_mode, taken_mode = (modes or {}).get(i, (EXCLUSIVE, EXCLUSIVE))
        taken = names[(i + 1) % n]
        links.append(Link(names[i], taken, ("EN",), occ(names[i], mode=held_mode, host=host),
                          occ(taken, site=f"take_{i}+0x1/0x10\ncaller_{i}+0x2/0x20", mode=taken_mode, host=host),
                          hosts=(host,)))
    return Alert(id="c-1", kind="circular", locks=tuple(names), hosts=(host,), links=tuple(links), **kw)


def scenario(text: str) -> list[str]:
    lines = text.splitlines()
    i = lines.index("       ----                    ----")
    return lines[i + 1 : lines.index(" *** DEADLOCK ***") - 1]


def test_two_lock_cycle():
    text = render(cycle(["A", "B"]))
    assert "Chain exists of:" not in text
    cpu1 = " " * 31
    assert scenario(text) == ["  lock(B);", f"{cpu1}lock(A);", f"{cpu1}lock(B);", "  lock(A);"]
    lines = text.splitlines()
    assert [x for x in lines if x.startswith("-> #")] == ["-> #1 (B){....}:", "-> #0 (A){....}:"]
    # #1 is B taken under A (link 0), #0 is A taken under B (the closing link).
    assert lines[lines.index("-> #1 (B){....}:") + 1] == "       take_0+0x1/0x10"
    assert lines[lines.index("-> #0 (A){....}:") + 2] == "       caller_1+0x2/0x20"
    assert "1 lock held by t/1:" in lines and " #0: 0000000000000000 (B){....}, at: f+0x1/0x10" in lines


def test_three_lock_chain_line():
    text = render(cycle(["A", "B", "C"]))
    lines = text.splitlines()
    assert lines[lines.index("Chain exists of:") + 1] == "  A --> B --> C"
    assert scenario(text) == ["  lock(C);", f"{' ' * 31}lock(B);", f"{' ' * 31}lock(C);", "  lock(A);"]


def test_read_modes_print_rlock():
    # Closing link C -> A: C held for read, A taken as a recursive reader.
    text = render(cycle(["A", "B", "C"], modes={2: (SHARED, RECURSIVE_READ)}))
    assert scenario(text) == ["  rlock(C);", f"{' ' * 31}lock(B);", f"{' ' * 31}lock(C);", "  rlock(A);"]


def test_subclass_names():
    text = render(cycle(["&pipe->mutex/1", "sb_writers", "&pipe->mutex"], usage_strings={"sb_writers": ".+.+"}))
    lines = text.splitlines()
    assert "-> #0 (&pipe->mutex/1){....}:" in lines and "-> #1 (sb_writers){.+.+}:" in lines
    assert "  &pipe->mutex/1 --> sb_writers --> &pipe->mutex" in lines
    assert "  lock(&pipe->mutex/1);" in lines


def test_single_host_and_fleet_lines():
    text = render(cycle(["A", "B"], host="web-1"))
    assert "  every link was taken on host web-1 alone" in text
    assert "  #1 A -> B: first taken on web-1 by t/1 at 1970-01-01T00:00:00.000000000Z, 1 time on 1 host(s): web-1" in text


def test_lock_line_details():
    a = cycle(["A", "B"])
    closing = a.links[-1]
    new = Occurrence("A", instance=0xDEADBEEF, site="", task="")
    a = Alert(id="c", kind="circular", locks=a.locks, hosts=a.hosts, links=(a.links[0], Link(
        "B", "A", ("EN",), closing.first_held, new, hosts=("h1",))))
    lines = render(a).splitlines()
    assert lines[4] == "<unknown> is trying to acquire lock:"
    assert lines[5] == "00000000deadbeef (A){....}, at: <unknown>"
    assert lines[lines.index("-> #0 (A){....}:") + 1] == "       <unknown>"


def test_recursive():
    held = (occ("X", instance=1), occ("Y", instance=2))
    a = Alert(id="r", kind="recursive", locks=("X",), hosts=("h1",), trigger=occ("X", instance=1, site="g+0x2/0x20"),
              held=held)
    lines = render(a).splitlines()
    assert lines[1] == "WARNING: possible recursive locking detected"
    assert lines[4:6] == ["t/1 is trying to acquire lock:", "0000000000000001 (X){....}, at: g+0x2/0x20"]
    assert lines[lines.index("but task is already holding lock:") + 1] == "0000000000000001 (X){....}, at: f+0x1/0x10"
    i = lines.index(" Possible unsafe locking scenario:")
    assert lines[i + 2 : i + 6] == ["       CPU0", "       ----", "  lock(X);", "  lock(X);"]
    assert " *** DEADLOCK ***" in lines and " May be due to missing lock nesting notation" in lines
    assert "2 locks held by t/1:" in lines


def test_bad_unlock():
    a = Alert(id="b", kind="bad_unlock", locks=("L",), hosts=("h1", "h2"), count=3,
              trigger=occ("L", site="rel+0x1/0x2\nouter+0x3/0x4"), held=(occ("M"),))
    lines = render(a).splitlines()
    assert lines[1] == "WARNING: bad unlock balance detected!" and lines[0] == "=" * 37
    assert lines[4:8] == ["t/1 is trying to release lock (L) at:", "rel+0x1/0x2", "outer+0x3/0x4",
                          "but there are no more locks to release!"]
    assert "1 lock held by t/1:" in lines
    assert "  3 times on 2 host(s): h1, h2" in lines


def test_inconsistent_state():
    first = occ("L", site="irq_handler+0x1/0x2", irq=1)
    later = occ("L", site="process+0x1/0x2", irq=0)
    a = Alert(id="i", kind="inconsistent_state", locks=("L",), hosts=("h1",), trigger=later, irq_state="SOFTIRQ",
              usages=(Usage("L", "IN-SOFTIRQ-W", first), Usage("L", "SOFTIRQ-ON-W", later)))
    lines = render(a).splitlines()
    assert lines[1] == "WARNING: inconsistent lock state"
    assert lines[4:7] == ["inconsistent {IN-SOFTIRQ-W} -> {SOFTIRQ-ON-W} usage.",
                          "t/1 [HC0[0]:SC0[0]:HE1:SE1] takes:", "0000000000000000 (L){....}, at: process+0x1/0x2"]
    assert lines[7:9] == ["{IN-SOFTIRQ-W} state was registered at:", "  irq_handler+0x1/0x2"]
    i = lines.index(" Possible unsafe locking scenario:")
    assert lines[i + 2 : i + 7] == ["       CPU0", "       ----", "  lock(L);", "  <Interrupt>", "    lock(L);"]
    assert " *** DEADLOCK ***" in lines


@pytest.mark.parametrize("path,middle", [(["S", "U"], "U"), (["S", "M", "U"], "M")])
def test_irq_inversion(path, middle):
    links = tuple(Link(h, t, ("EN",), occ(h), occ(t, site=f"take_{t}+0x1/0x2", ts_ns=i), hosts=("h1",))
                  for i, (h, t) in enumerate(zip(path, path[1:])))
    a = Alert(id="q", kind="irq_inversion", locks=tuple(path), hosts=("h1",), links=links, irq_state="HARDIRQ",
              usages=(Usage("S", "IN-HARDIRQ-W", occ("S", irq=1)), Usage("U", "HARDIRQ-ON-W", occ("U"))))
    text = render(a)
    lines = text.splitlines()
    assert lines[0] == "=" * 53 and lines[1] == "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"
    assert ("Chain exists of:" in lines) == (middle != "U")
    cpu1 = " " * 31
    assert lines[lines.index("       ----                    ----") + 1 : lines.index(" *** DEADLOCK ***") - 1] == [
        "  lock(U);", f"{cpu1}local_irq_disable();", f"{cpu1}lock(S);", f"{cpu1}lock({middle});",
        "  <Interrupt>", "    lock(S);"]
    assert " Possible interrupt unsafe locking scenario:" in lines
    assert "the dependencies between HARDIRQ-irq-safe lock and the holding lock:" in lines
    assert "the dependencies between the lock to be acquired and HARDIRQ-irq-unsafe lock:" in lines
    assert "-> (U){....} {" in lines and "   HARDIRQ-ON-W at:" in lines


def test_time_is_utc_with_nanoseconds():
    a = cycle(["A", "B"])
    link = a.links[0]
    stamped = Link(link.held, link.taken, link.kinds, link.first_held,
                   Occurrence("B", host="h1", task="t/1", ts_ns=1_700_000_000_123_456_789), count=2, hosts=("h1", "h2"))
    text = render(Alert(id="c", kind="circular", locks=a.locks, hosts=("h1", "h2"), links=(stamped, a.links[1])))
    assert "at 2023-11-14T22:13:20.123456789Z, 2 times on 2 host(s): h1, h2" in text


@pytest.mark.parametrize("kind", [*KINDS, "something_new"])
def test_minimal_alerts_never_raise(kind):
    bare = Occurrence(lock="")
    empty_link = Link("", "", (), bare, bare)
    for alert in (
        Alert(id="", kind=kind, locks=(), hosts=()),
        Alert(id="x", kind=kind, locks=("A",), hosts=()),
        Alert(id="x", kind=kind, locks=("A", "B", "C"), hosts=("h",), links=(empty_link,)),
        Alert(id="x", kind=kind, locks=(), hosts=(), links=(empty_link, empty_link), trigger=bare,
              usages=(Usage("", "", bare),)),
    ):
        text = render(alert)
        assert text.endswith("\n") and "lockfleet: fleet evidence for this finding" in text
