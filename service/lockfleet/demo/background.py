"""Ordinary lock traffic for a simulated host: tasks taking common kernel locks, always in one
global order (so they raise nothing), with a mix of writers, readers, recursive readers, trylocks,
nesting subclasses, out-of-order releases and timer interrupts taking `&rq->lock` in hard-irq
context. Seeded: the same seed gives the same rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..events import ACQUIRE, EXCLUSIVE, IN_HARDIRQ, IRQS_OFF, RECURSIVE_READ, RELEASE, SHARED, TRY_ACQUIRE


@dataclass(frozen=True)
class BgLock:
    name: str
    subclass: int
    modes: tuple[int, ...]    # modes this lock is taken in
    irq: int                  # the irq column whenever it is taken in process context
    site: str
    trylock: bool = False     # sometimes taken with a trylock


# Outermost first: a task takes an increasing subsequence of this list.
ORDER: tuple[BgLock, ...] = (
    BgLock("rtnl_mutex", 0, (EXCLUSIVE,), 0, "rtnl_lock"),
    BgLock("&mm->mmap_lock", 0, (SHARED, SHARED, EXCLUSIVE), 0, "do_user_addr_fault", trylock=True),
    BgLock("&sb->s_type->i_mutex_key", 0, (EXCLUSIVE, SHARED), 0, "path_openat"),
    BgLock("&sb->s_type->i_mutex_key", 1, (EXCLUSIVE,), 0, "lock_rename"),
    BgLock("&ei->i_data_sem", 0, (SHARED, EXCLUSIVE), 0, "ext4_map_blocks", trylock=True),
    BgLock("rcu_read_lock", 0, (RECURSIVE_READ,), 0, "rcu_lock_acquire"),
    BgLock("tasklist_lock", 0, (RECURSIVE_READ, RECURSIVE_READ, EXCLUSIVE), 0, "do_wait"),
    BgLock("&p->pi_lock", 0, (EXCLUSIVE,), IRQS_OFF, "try_to_wake_up"),
    BgLock("&rq->lock", 0, (EXCLUSIVE,), IRQS_OFF, "__schedule"),
)
RQ_LOCK = ORDER[-1]

TASKS = (("systemd/1", 1), ("kworker/0:1", 23), ("kworker/1:2", 87), ("sshd/812", 812),
         ("postgres/1204", 1204), ("nginx/933", 933))


@dataclass(frozen=True)
class Row:
    tid: int
    task: str
    op: int
    lock: str
    subclass: int = 0
    mode: int = EXCLUSIVE
    irq: int = 0
    site: str = ""
    instance: int = 0


def _session(rng: random.Random, tid: int, task: str) -> list[Row]:
    """One task taking a few locks in order and dropping them, maybe interrupted by the timer."""
    rows: list[Row] = []
    if rng.random() < 0.15:  # the timer interrupt: scheduler_tick takes the runqueue lock
        inst = 0xFFFF88803EC2A000 + 0x40000 * rng.randrange(4)
        rows += [Row(tid, task, ACQUIRE, RQ_LOCK.name, irq=IN_HARDIRQ, site="scheduler_tick", instance=inst),
                 Row(tid, task, RELEASE, RQ_LOCK.name, irq=IN_HARDIRQ, instance=inst)]
    k = rng.randint(1, 4)
    picked = sorted(rng.sample(range(len(ORDER)), k))
    taken: list[Row] = []
    for i in picked:
        lk = ORDER[i]
        op = TRY_ACQUIRE if lk.trylock and rng.random() < 0.2 else ACQUIRE
        inst = 0xFFFF888100000000 + 0x1000 * (i * 8 + rng.randrange(8))
        taken.append(Row(tid, task, op, lk.name, lk.subclass, rng.choice(lk.modes), lk.irq, lk.site, inst))
    rows += taken
    drops = list(reversed(taken))
    if len(drops) >= 2 and drops[0].lock != drops[1].lock and rng.random() < 0.2:
        # releases may come out of order (not between subclasses of one name: a release has none)
        drops[0], drops[1] = drops[1], drops[0]
    rows += [Row(t.tid, task, RELEASE, t.lock, irq=t.irq, instance=t.instance) for t in drops]
    return rows


def background(rng: random.Random, events: int) -> Iterator[list[Row]]:
    """Yield sessions (each a list of rows, each task's sessions in order) until `events` rows.

    Sessions of different tasks do not overlap here; interleaving inside a session is not needed
    for the engine (threads are independent) and keeps each session's rows together.
    """
    n = 0
    while n < events:
        task, tid = TASKS[rng.randrange(len(TASKS))]
        rows = _session(rng, tid, task)
        n += len(rows)
        yield rows
