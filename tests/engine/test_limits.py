"""Budgets pace requests smoothly, share a 429 cooldown, and lower their rate for good."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from engine.config import EngineConfig
from engine.limits import Budget, Limits, PollPacer

pytestmark = pytest.mark.anyio


async def _acquire_times(budget: Budget, n: int, workers: int = 8) -> list[float]:
    times: list[float] = []
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await budget.acquire()
            times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return sorted(times)


def _max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def test_budget_admits_no_burst_above_its_rate() -> None:
    # 6000/min = 100/s: in any 0.1 s window at most 10 requests, from the very start.
    budget = Budget("create", 6000)
    times = await _acquire_times(budget, 40)
    assert budget.acquired == 40
    assert _max_in_window(times, 0.1) <= 10
    # ...and it does not crawl either: 40 requests take about 0.4 s.
    assert 0.35 <= times[-1] - times[0] <= 0.6


async def test_burst_is_paid_for_by_a_lower_sustained_rate() -> None:
    budget = Budget("read", 6000, burst=5)
    times = await _acquire_times(budget, 60)
    assert _max_in_window(times, 0.6) <= 60 * 0.6 * 100 / 60 + 1  # never over 100/s + 1


async def test_throttle_makes_every_waiter_wait_for_the_cooldown() -> None:
    budget = Budget("create", 60_000)
    await budget.acquire()
    start = anyio.current_time()
    budget.throttle(0.2)
    assert budget.cooldown_remaining > 0.15
    times = await _acquire_times(budget, 6, workers=6)
    assert all(t - start >= 0.2 for t in times)
    assert budget.throttled == 1
    assert budget.throttled_seconds == pytest.approx(0.2, abs=0.01)


async def test_a_shorter_throttle_never_shortens_the_cooldown() -> None:
    budget = Budget("read", 60_000)
    budget.throttle(0.3)
    budget.throttle(0.05)
    assert budget.cooldown_remaining > 0.25
    assert budget.throttled == 2
    assert budget.throttled_seconds == pytest.approx(0.3, abs=0.01)


async def test_throttle_during_a_wait_requeues_the_waiter() -> None:
    budget = Budget("create", 600)  # one every ~0.1 s
    await budget.acquire()
    times: list[float] = []

    async def waiter() -> None:
        await budget.acquire()
        times.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.01)
        budget.throttle(0.3)  # arrives while the waiter queues in the limiter
    assert times[0] - start >= 0.3


async def test_lower_rate_slows_the_rest_of_the_run() -> None:
    budget = Budget("create", 60_000)
    budget.lower_rate(600)  # one every ~0.1 s
    assert budget.rate_per_min == 600
    times = await _acquire_times(budget, 4, workers=4)
    assert times[-1] - times[0] >= 0.28
    budget.lower_rate(6000)  # never raised again
    assert budget.rate_per_min == 600


def test_limits_are_built_from_the_config() -> None:
    limits = Limits.from_config(EngineConfig(create_rate=120, read_rate=900))
    assert (limits.create.name, limits.create.rate_per_min) == ("create", 120)
    assert (limits.read.name, limits.read.rate_per_min) == ("read", 900)
    # Smooth: the sustained spacing is at least 60/rate seconds.
    assert limits.create.min_interval >= 0.5


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Budget("x", 0)
    with pytest.raises(ValueError, match="burst"):
        Budget("x", 10, burst=0)


def test_poll_interval_grows_with_in_flight_predictions() -> None:
    read = Budget("read", 3000)  # 50/s; 90% for polls = 45/s
    pacer = PollPacer(read, min_interval=0.5, share=0.9)
    assert pacer.interval == 0.5
    with pacer.track():
        assert pacer.in_flight == 1
        assert pacer.interval == 0.5
    assert pacer.in_flight == 0
    with contextlib.ExitStack() as stack:
        for _ in range(450):
            stack.enter_context(pacer.track())
        assert pacer.interval == pytest.approx(10.0)  # 450 / 45 per second
    assert pacer.in_flight == 0


async def test_poll_wait_sleeps_until_the_next_slot() -> None:
    pacer = PollPacer(Budget("read", 60_000), min_interval=0.05)
    since = anyio.current_time()
    await pacer.wait(since)
    assert anyio.current_time() - since >= 0.05
    late = anyio.current_time() - 1.0
    before = anyio.current_time()
    await pacer.wait(late)  # already due: no sleep
    assert anyio.current_time() - before < 0.02
