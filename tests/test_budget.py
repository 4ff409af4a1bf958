"""The gateway's memory budget (bytes held by batches in flight) on its own: it never lends more
than its capacity, waits for room instead, gives up when told why, and wakes waiters on release."""

from __future__ import annotations

import random
import threading
import time

import pytest

from lockfleet.server.gateway import Budget


def never() -> str:
    return ""


def test_acquire_within_capacity_and_release():
    b = Budget(100)
    assert b.acquire(60, never) == "" and b.used == 60
    assert b.acquire(40, never) == "" and b.used == 100 and b.peak == 100
    b.release(60)
    b.release(40)
    assert b.used == 0 and b.peak == 100 and b.waits == 0


def test_a_share_larger_than_the_capacity_takes_all_of_it():
    b = Budget(100)
    assert b.acquire(10_000, never) == "" and b.used == 100 and b.peak == 100
    b.release(10_000)
    assert b.used == 0


def test_waits_for_room_then_goes_on_when_released():
    b = Budget(100)
    b.acquire(80, never)
    got = threading.Event()

    def taker() -> None:
        b.acquire(30, never)
        got.set()

    t = threading.Thread(target=taker)
    t.start()
    assert not got.wait(0.3)            # 80 + 30 > 100: it waits
    assert b.used == 80 and b.waits == 1
    b.release(80)
    assert got.wait(5)                  # woken by the release
    t.join(5)
    assert b.used == 30 and b.peak == 80


def test_gives_up_with_the_reason_and_takes_nothing():
    b = Budget(10)
    b.acquire(10, never)
    asked = []

    def closing() -> str:
        asked.append(1)
        return "shutting down" if len(asked) >= 2 else ""

    assert b.acquire(5, closing) == "shutting down"
    assert b.used == 10 and len(asked) == 2


def test_never_over_capacity_under_contention():
    b = Budget(1000)
    over = []
    rnd = random.Random(7)
    sizes = [[rnd.randint(1, 400) for _ in range(200)] for _ in range(8)]

    def worker(mine: list[int]) -> None:
        for n in mine:
            b.acquire(n, never)
            if b.used > b.capacity:
                over.append(b.used)
            time.sleep(0)
            b.release(n)

    threads = [threading.Thread(target=worker, args=(s,)) for s in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not over and b.used == 0
    assert b.peak <= 1000 and b.waits > 0       # the contention was real: some waited


def test_refuses_a_zero_capacity():
    with pytest.raises(ValueError, match="at least 1"):
        Budget(0)
