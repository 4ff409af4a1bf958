"""The seed scenario: the five-lock cycle of `seed/lkml-bpf-deadlock-report.txt`, cut into the
parts four hosts each took, with the sites (stack frames) the report printed for them.

No host takes the whole cycle:

    boot-0  swapper/0 at boot:         pmus_lock -> &cpuctx_mutex               (#3)
            cpuhp/1 bringing CPU 1 up: cpu_hotplug_lock.rw_sem -> pmus_lock    (#2, writer)
    perf-1  perf_event_open:           tracepoints_mutex -> cpu_hotplug_lock.rw_sem  (#1, a read)
    perf-2  a perf ioctl:              &cpuctx_mutex -> bpf_event_mutex         (#4)
    bpf-3   test_progs/246:            bpf_event_mutex -> tracepoints_mutex     (#0, closes it)

cpu_hotplug_lock.rw_sem is a percpu rwsem: perf-1 takes it as a shared (non-recursive) reader,
mode 1, as the seed's `{++++}` says; boot-0's hotplug path holds it as the writer. Every link is
then `-(EN)->` and the cycle is strong (docs/semantics.md): the deadlock is real.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..events import ACQUIRE, EXCLUSIVE, RELEASE, SHARED

HOSTS = ("boot-0", "perf-1", "perf-2", "bpf-3")
# the cycle in lockdep's order: locks[i] held while locks[i+1] is taken, the last while the first is
CYCLE = ("tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex", "bpf_event_mutex")

# Lock addresses as the report printed them.
INSTANCES = {"tracepoints_mutex": 0x94160D1D, "bpf_event_mutex": 0xD663EF86}

# Stacks from the report, innermost frame first (joined by "\n" in the `site` column).
_SYSCALL = ("do_syscall_64+0x4a/0x180", "entry_SYSCALL_64_after_hwframe+0x49/0xbe")
_IOCTL = ("perf_ioctl+0x2e/0x50", "do_vfs_ioctl+0x8f/0x6a0", "ksys_ioctl+0x70/0x80",
          "__x64_sys_ioctl+0x16/0x20", *_SYSCALL)
_PERF_OPEN = ("perf_trace_event_init+0x11f/0x250", "perf_trace_init+0x6b/0xa0", "perf_tp_event_init+0x25/0x40",
              "perf_try_init_event+0x6b/0x90", "perf_event_alloc+0x9a8/0xc40",
              "__do_sys_perf_event_open+0x1dd/0xd30", *_SYSCALL)
_BPF_RAW_TP = ("bpf_raw_tracepoint_open.isra.34+0xa4/0x130", "__do_sys_bpf+0x94f/0x1a90", *_SYSCALL)
_BOOT = ("perf_event_init+0x1b2/0x1de", "start_kernel+0x2b8/0x42a", "secondary_startup_64+0xa4/0xb0")
_HOTPLUG = ("cpuhp_invoke_callback+0xb3/0x960", "_cpu_up+0xa7/0x140", "do_cpu_up+0xa4/0xc0", "smp_init+0xcd/0xd2",
            "kernel_init_freeable+0x123/0x24f", "kernel_init+0xa/0x110", "ret_from_fork+0x24/0x30")

STACKS: dict[str, tuple[str, ...]] = {
    # -> #4 (bpf_event_mutex): taken under &cpuctx_mutex in a perf ioctl
    "bpf_event_mutex@ioctl": ("perf_event_query_prog_array+0x9b/0x130", "_perf_ioctl+0x3aa/0x830", *_IOCTL),
    "&cpuctx_mutex@ioctl": _IOCTL,
    # -> #3 (&cpuctx_mutex): taken under pmus_lock at boot
    "&cpuctx_mutex@boot": ("perf_event_init_cpu+0x5a/0x90", *_BOOT),
    "pmus_lock@boot": ("perf_event_init_cpu+0x21/0x90", *_BOOT),
    # -> #2 (pmus_lock): taken under cpu_hotplug_lock while bringing a CPU up
    "pmus_lock@hotplug": ("perf_event_init_cpu+0x21/0x90", *_HOTPLUG),
    "&cpuctx_mutex@hotplug": ("perf_event_init_cpu+0x5a/0x90", *_HOTPLUG),
    "cpu_hotplug_lock.rw_sem@hotplug": _HOTPLUG[1:],
    # -> #1 (cpu_hotplug_lock.rw_sem): read-taken under tracepoints_mutex in perf_event_open
    "cpu_hotplug_lock.rw_sem@perf_open": ("static_key_slow_inc+0xe/0x20", "tracepoint_probe_register_prio+0x28c/0x300",
                                          *_PERF_OPEN),
    "tracepoints_mutex@perf_open": ("tracepoint_probe_register_prio+0x2d/0x300", *_PERF_OPEN),
    # -> #0 (tracepoints_mutex): taken under bpf_event_mutex by test_progs
    # (the report's stack starts in __mutex_lock+0x86/0x970; the site is where the lock was taken)
    "tracepoints_mutex@bpf": ("tracepoint_probe_register_prio+0x2d/0x300", "bpf_probe_register+0x40/0x60",
                              *_BPF_RAW_TP),
    "bpf_event_mutex@bpf": ("bpf_probe_register+0x1d/0x60", *_BPF_RAW_TP),
}


@dataclass(frozen=True)
class Step:
    """One row of a scenario task: take or drop `lock` (site key `lock@where`)."""

    op: int
    lock: str
    where: str = ""
    mode: int = EXCLUSIVE


@dataclass(frozen=True)
class Task:
    """A task on one host and what it does, in order."""

    host: str
    name: str                 # as a report shows it: comm/pid
    tid: int
    steps: tuple[Step, ...]
    what: str                 # one line for the demo's output


def _nest(*taken: tuple[str, str, int]) -> tuple[Step, ...]:
    """Take each (lock, where, mode) in order, then drop them in reverse."""
    return (*(Step(ACQUIRE, lock, where, mode) for lock, where, mode in taken),
            *(Step(RELEASE, lock) for lock, _where, _mode in reversed(taken)))


TASKS: tuple[Task, ...] = (
    Task("boot-0", "swapper/0", 0,
         _nest(("pmus_lock", "boot", EXCLUSIVE), ("&cpuctx_mutex", "boot", EXCLUSIVE)),
         "boot: perf_event_init takes pmus_lock -> &cpuctx_mutex"),
    Task("boot-0", "cpuhp/1", 15,
         _nest(("cpu_hotplug_lock.rw_sem", "hotplug", EXCLUSIVE), ("pmus_lock", "hotplug", EXCLUSIVE),
               ("&cpuctx_mutex", "hotplug", EXCLUSIVE)),
         "CPU hotplug: cpu_hotplug_lock.rw_sem (write) -> pmus_lock -> &cpuctx_mutex"),
    Task("perf-1", "perf/1873", 1873,
         _nest(("tracepoints_mutex", "perf_open", EXCLUSIVE), ("cpu_hotplug_lock.rw_sem", "perf_open", SHARED)),
         "perf_event_open: tracepoints_mutex -> cpu_hotplug_lock.rw_sem (read)"),
    Task("perf-2", "bpftool/2216", 2216,
         _nest(("&cpuctx_mutex", "ioctl", EXCLUSIVE), ("bpf_event_mutex", "ioctl", EXCLUSIVE)),
         "perf ioctl (QUERY_BPF): &cpuctx_mutex -> bpf_event_mutex"),
    Task("bpf-3", "test_progs/246", 246,
         _nest(("bpf_event_mutex", "bpf", EXCLUSIVE), ("tracepoints_mutex", "bpf", EXCLUSIVE)),
         "BPF raw tracepoint: bpf_event_mutex -> tracepoints_mutex"),
)


def site(lock: str, where: str) -> str:
    return "\n".join(STACKS.get(f"{lock}@{where}", ()))
