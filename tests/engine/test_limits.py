"""Budgets pace requests smoothly, share a 429 cooldown, and lower their rate for good."""

from __future__ import annotations

import asyncio
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


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer whenever nothing is ready.

    aiolimiter and anyio both read ``loop.time()``, so pacing runs at full speed and the
    test reads exact schedule times instead of sleeping.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        return self._virtual

    def _run_once(self) -> None:
        ready = self._ready  # type: ignore[attr-defined]
        timers = [h.when() for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        if not ready and timers:
            # A microsecond at least: aiolimiter re-arms its timer at "now" when float
            # rounding leaves a sliver of a slot to wait for, as a real clock never would.
            self._virtual = max(self._virtual + 1e-6, min(timers))
        super()._run_once()  # type: ignore[misc]


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


async def _admit(budget: Budget, n: int) -> list[float]:
    """Acquire ``n`` slots from concurrent waiters; return the virtual admission times."""
    times: list[float] = []

    async def one() -> None:
        await budget.acquire()
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return sorted(times)


async def test_budget_keeps_every_60s_window_under_its_rate() -> None:
    budget = Budget("create", 600, burst=5)
    start = anyio.current_time()
    times = await _admit(budget, 700)
    assert times[:5] == [start] * 5  # the burst goes at once...
    assert _max_in_window(times, 60.0) <= 600  # ...and no 60 s window exceeds the limit
    # ...yet the budget is used: the sustained rate is within 2% of the limit.
    steady = (len(times) - 6) / (times[-1] - times[5]) * 60
    assert steady >= 0.98 * 600


async def test_a_waiter_woken_late_costs_the_schedule_nothing() -> None:
    # The loop is busy: each admitted request costs 4 ms of blocking work before the next
    # waiter runs (under the 0.1 s interval). A bucket of a few slots keeps that time.
    budget = Budget("create", 600, burst=5)
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def one() -> None:
        await budget.acquire()
        times.append(anyio.current_time())
        loop._virtual += 0.004  # type: ignore[attr-defined]

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(one)
    steady = (len(times) - 6) / (times[-1] - times[5]) * 60
    assert steady >= 0.98 * 600


async def test_an_idle_budget_grants_no_credit_beyond_its_burst() -> None:
    budget = Budget("create", 600, burst=3)
    await _admit(budget, 3)
    await anyio.sleep(3600)  # an hour idle
    start = anyio.current_time()
    times = await _admit(budget, 5)
    assert times[:3] == [start] * 3
    assert times[3] == pytest.approx(start + budget.min_interval)


async def test_throttle_makes_every_waiter_wait_for_the_cooldown() -> None:
    budget = Budget("create", 60_000, burst=10)
    start = anyio.current_time()
    budget.throttle(0.2)
    assert budget.cooldown_remaining == pytest.approx(0.2)
    times = await _admit(budget, 6)
    assert all(t >= start + 0.2 for t in times)
    assert budget.throttled == 1
    assert budget.throttled_seconds == pytest.approx(0.2)
    assert budget.acquired == 6


async def test_a_shorter_throttle_never_shortens_the_cooldown() -> None:
    budget = Budget("read", 60_000)
    budget.throttle(0.3)
    budget.throttle(0.05)
    assert budget.cooldown_remaining == pytest.approx(0.3)
    assert budget.throttled == 2
    assert budget.throttled_seconds == pytest.approx(0.3)


async def test_throttle_during_a_wait_requeues_the_waiter_paced() -> None:
    budget = Budget("create", 600, burst=2)  # one every ~0.1 s after two
    await _admit(budget, 2)
    times: list[float] = []
    start = anyio.current_time()

    async def waiter() -> None:
        await budget.acquire()
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(waiter)
        await anyio.sleep(0.01)
        budget.throttle(1.0)  # arrives while the waiters queue in the limiter
    assert min(times) >= start + 1.0
    # After the cooldown they resume paced: no more than the burst at once.
    assert _max_in_window(sorted(times), budget.min_interval * 0.9) <= 2


async def test_lower_rate_slows_the_rest_of_the_run() -> None:
    budget = Budget("create", 60_000, burst=10)
    budget.lower_rate(6, burst=1)  # the low-credit wording: 6/min with a burst of 1
    assert (budget.rate_per_min, budget.burst) == (6, 1)
    times = await _admit(budget, 4)
    assert times[-1] - times[0] == pytest.approx(3 * budget.min_interval)
    assert budget.min_interval >= 10.0
    budget.lower_rate(6000)  # never raised again
    assert budget.rate_per_min == 6


async def test_a_waiter_queued_before_a_lower_rate_takes_the_new_pace() -> None:
    budget = Budget("create", 600, burst=2)
    await _admit(budget, 2)
    times: list[float] = []

    async def waiter() -> None:
        await budget.acquire()
        times.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(waiter)
        await anyio.sleep(0)
        budget.lower_rate(6, burst=1)
    assert sorted(times)[-1] - sorted(times)[0] >= 2 * 60 / 6 * 0.99


def test_limits_are_built_from_the_config() -> None:
    limits = Limits.from_config(EngineConfig(create_rate=120, read_rate=900))
    assert (limits.create.name, limits.create.rate_per_min) == ("create", 120)
    assert (limits.read.name, limits.read.rate_per_min) == ("read", 900)
    # Smooth: the sustained spacing is at least 60/rate seconds; a small bucket.
    assert limits.create.min_interval >= 0.5
    assert (limits.create.burst, limits.read.burst) == (2, 7)


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
