"""Budgets pace requests smoothly, share a 429 cooldown, and lower their rate for good."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from engine._config import EngineConfig
from engine._limits import Budget, Limits, PollPacer

pytestmark = pytest.mark.anyio


def _max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class FakeClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_budget_admits_no_burst_above_its_rate() -> None:
    # 6000/min = 100/s: in any 0.1 s window at most 10 requests, from the very start.
    clock = FakeClock()
    budget = Budget("create", 6000, clock=clock)
    slots = [budget.reserve() for _ in range(40)]
    assert slots == sorted(slots)
    assert _max_in_window(slots, 0.1) <= 10
    # ...and it does not crawl either: 40 slots span 39 intervals at 98% of the rate.
    assert slots[-1] - slots[0] == pytest.approx(39 * 60 / (6000 * 0.98))


def test_a_waiter_woken_late_costs_the_schedule_nothing() -> None:
    # The event loop wakes each waiter 4 ms late (under half an interval); the n-th slot
    # is still due at n intervals: the budget is used in full, not 4 ms late per request.
    clock = FakeClock()
    budget = Budget("create", 6000, clock=clock)
    slots = []
    for _ in range(100):
        slot = budget.reserve()
        slots.append(slot)
        clock.now = slot + 0.004
    assert slots[-1] == pytest.approx(99 * budget.min_interval)


def test_burst_is_paid_for_by_a_lower_sustained_rate() -> None:
    clock = FakeClock()
    budget = Budget("read", 6000, burst=5, clock=clock)
    slots = [budget.reserve() for _ in range(60)]
    assert slots[:5] == [0.0] * 5
    assert _max_in_window(slots, 0.6) <= 60 * 0.6 * 100 / 60 + 1  # never over 100/s + 1


def test_an_idle_budget_grants_no_credit_beyond_its_burst() -> None:
    clock = FakeClock()
    budget = Budget("create", 600, clock=clock)
    budget.reserve()
    clock.now = 3600.0  # an hour idle
    assert [budget.reserve() - 3600.0 for _ in range(2)] == pytest.approx(
        [0.0, budget.min_interval]
    )


def test_throttle_makes_every_slot_wait_for_the_cooldown() -> None:
    clock = FakeClock()
    budget = Budget("create", 60_000, clock=clock)
    budget.reserve()
    budget.throttle(0.2)
    assert budget.cooldown_remaining == pytest.approx(0.2)
    assert all(budget.reserve() >= 0.2 for _ in range(6))
    assert budget.throttled == 1
    assert budget.throttled_seconds == pytest.approx(0.2)


def test_a_shorter_throttle_never_shortens_the_cooldown() -> None:
    clock = FakeClock()
    budget = Budget("read", 60_000, clock=clock)
    budget.throttle(0.3)
    budget.throttle(0.05)
    assert budget.cooldown_remaining == pytest.approx(0.3)
    assert budget.throttled == 2
    assert budget.throttled_seconds == pytest.approx(0.3)


async def test_acquire_counts_and_paces_real_requests() -> None:
    budget = Budget("create", 60_000)
    for _ in range(5):
        await budget.acquire()
    assert budget.acquired == 5


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


def test_lower_rate_slows_the_rest_of_the_run() -> None:
    clock = FakeClock()
    budget = Budget("create", 60_000, clock=clock)
    budget.lower_rate(600)  # one every ~0.1 s
    assert budget.rate_per_min == 600
    slots = [budget.reserve() for _ in range(4)]
    assert slots[-1] - slots[0] == pytest.approx(3 * 60 / (600 * 0.98))
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
    assert pacer.interval() == 0.5
    with pacer.track():
        assert pacer.in_flight == 1
        assert pacer.interval() == 0.5
    assert pacer.in_flight == 0
    with contextlib.ExitStack() as stack:
        for _ in range(450):
            stack.enter_context(pacer.track())
        assert pacer.interval() == pytest.approx(10.0)  # 450 / 45 per second
    assert pacer.in_flight == 0


def test_older_predictions_are_polled_less_often_within_a_cap() -> None:
    pacer = PollPacer(Budget("read", 3000), min_interval=0.5, age_factor=0.1, max_age_interval=5.0)
    with pacer.track():
        assert pacer.interval(age=1.0) == 0.5  # young: the minimum
        assert pacer.interval(age=20.0) == pytest.approx(2.0)  # 10% of its age
        assert pacer.interval(age=600.0) == 5.0  # never slower than the cap
