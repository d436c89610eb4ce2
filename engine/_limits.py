"""Pace requests to Replicate: create/read budgets, a shared 429 cooldown, poll scheduling.

Replicate limits creates (600/min) and every other call (3000/min) separately, so a run
has two `Budget` objects (`Limits`). A budget is smooth: it never admits a burst above its
rate. A 429 answer sets a cooldown shared by every waiter on that budget (``Retry-After``
is a floor); a low-credit answer lowers the rate for the rest of the run.

A budget hands out *slots* on a schedule (the generic cell rate algorithm): the n-th
request is due one interval after the (n-1)-th was due, not after it was actually sent.
A waiter woken a little late therefore costs the schedule nothing: the next slot is
already due. A leaky bucket evaluated at wake-up time (aiolimiter at a burst of 1) loses
every such delay. Only a few missed slots are made up, so a starved loop never catches
up with one large burst.

`PollPacer` spreads the polling of all in-flight predictions over the read budget, so the
poll interval grows with the number in flight instead of exceeding the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from engine._config import EngineConfig

__all__ = ["Budget", "Limits", "PollPacer"]

# Aim a hair under the stated limit so that any 60 s window, wherever it starts, stays
# at or below the limit despite a waiter woken late and the burst on top.
_HEADROOM = 0.98
# How many slots a waiter woken late may make up for (see `Budget.reserve`).
_CATCH_UP = 2


class Budget:
    """Admit requests at no more than ``rate_per_min``, smoothly, with a shared cooldown.

    ``burst`` is how many requests may go back to back before pacing starts; the
    sustained rate is lowered by the same amount so that any 60 s window holds at most
    ``rate_per_min`` requests. ``clock`` returns seconds (tests pass a fake one and call
    `reserve` directly).
    """

    def __init__(
        self,
        name: str,
        rate_per_min: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"budget {name!r}: rate must be positive, got {rate_per_min}")
        if burst < 1:
            raise ValueError(f"budget {name!r}: burst must be at least 1, got {burst}")
        self.name = name
        self._clock = clock
        self._set_rate(rate_per_min, burst)
        self._due = float("-inf")  # when the next slot is due, before the burst allowance
        self._cooldown_until = float("-inf")
        self._turn = anyio.Lock()
        self.acquired = 0
        self.throttled = 0
        self.throttled_seconds = 0.0

    def _set_rate(self, rate_per_min: float, burst: int) -> None:
        self.rate_per_min = rate_per_min
        self.burst = burst
        # `burst` back to back plus the sustained rate must fit in any 60 s window.
        sustained = max(rate_per_min - (burst - 1), rate_per_min / 2) * _HEADROOM
        self._interval = 60.0 / sustained
        self._tolerance = (burst - 1) * self._interval

    @property
    def min_interval(self) -> float:
        """Return the sustained spacing between two requests, in seconds."""
        return self._interval

    @property
    def cooldown_remaining(self) -> float:
        """Return how long every waiter still has to wait because of a 429."""
        return max(0.0, self._cooldown_until - self._clock())

    def reserve(self) -> float:
        """Take the next slot and return the clock time at which it may be used."""
        now = self._clock()
        # Slots missed by more than a few intervals are gone: a starved loop that caught
        # up on all of them at once would send a burst the server may answer with 429.
        self._due = max(self._due, now - _CATCH_UP * self._interval)
        start = max(now, self._due - self._tolerance, self._cooldown_until)
        self._due = max(self._due, start) + self._interval
        return start

    async def acquire(self) -> None:
        """Wait until one request may be sent (after any cooldown, within the rate)."""
        # One waiter at a time takes its slot and sleeps until it: slots taken in advance
        # by many waiters would all come due together after a stall of the event loop,
        # and go out as one burst.
        async with self._turn:
            while True:
                start = self.reserve()
                delay = start - self._clock()
                if delay > 0:
                    await anyio.sleep(delay)
                # A throttle while we slept: take a new slot after the cooldown, so
                # requests resume paced instead of as one herd.
                if self.cooldown_remaining <= 0:
                    self.acquired += 1
                    return

    def throttle(self, retry_after: float) -> None:
        """Make every waiter on this budget wait until ``now + retry_after``."""
        now = self._clock()
        until = now + max(0.0, retry_after)
        self.throttled += 1
        if until > self._cooldown_until:
            self.throttled_seconds += until - max(now, self._cooldown_until)
            self._cooldown_until = until

    def lower_rate(self, rate_per_min: float, *, burst: int = 1) -> None:
        """Lower the rate for the rest of the run (the low-credit throttle); never raise it."""
        if rate_per_min <= 0 or rate_per_min >= self.rate_per_min:
            return
        self._set_rate(rate_per_min, burst)

    def __repr__(self) -> str:
        return (
            f"Budget({self.name!r}, {self.rate_per_min:g}/min, burst={self.burst}, "
            f"acquired={self.acquired}, throttled={self.throttled})"
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """The two request budgets of one run: creates, and every other API call."""

    create: Budget
    read: Budget

    @classmethod
    def from_config(cls, config: EngineConfig) -> Limits:
        """Build fresh budgets for one run (call inside the run, never at import)."""
        return cls(
            create=Budget("create", config.create_rate),
            read=Budget("read", config.read_rate),
        )


class PollPacer:
    """Share the read budget among in-flight predictions, and poll old ones less often.

    The interval of one prediction is the largest of ``min_interval``; its share of the
    budget, ``in_flight / (share * reads per second)`` (``share`` leaves room for the other
    reads: cancels, lists, schema lookups); and ``age_factor`` times how long it has run,
    capped at ``max_age_interval``. The last term notices a completion within about 10% of
    the prediction's run time while a 60 s video costs 15 polls, not 120, which leaves the
    budget (and the CPU) to the predictions that need it.
    """

    def __init__(
        self,
        read: Budget,
        *,
        min_interval: float = 0.5,
        share: float = 0.9,
        age_factor: float = 0.1,
        max_age_interval: float = 5.0,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.read = read
        self.min_interval = min_interval
        self.share = share
        self.age_factor = age_factor
        self.max_age_interval = max_age_interval
        self.in_flight = 0

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one prediction as in flight while the block runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def interval(self, age: float = 0.0) -> float:
        """Return when to poll a prediction ``age`` seconds old again, in seconds."""
        reads_per_second = self.share * self.read.rate_per_min / 60.0
        by_budget = max(1, self.in_flight) / reads_per_second
        by_age = min(age * self.age_factor, self.max_age_interval)
        return max(self.min_interval, by_budget, by_age)
