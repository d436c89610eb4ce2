"""Pace requests to Replicate: create/read budgets, a shared 429 cooldown, poll scheduling.

Replicate limits creates (600/min) and every other call (3000/min) separately, so a run
has two `Budget` objects (`Limits`). Each paces with an `aiolimiter.AsyncLimiter` whose
bucket holds ``burst`` requests (half a second's worth by default, well under the burst
Replicate allows) and drains at the sustained rate. A bucket of one lost every late
wake-up of a busy loop (the level was empty again before the next waiter ran); a bucket
of a few requests keeps that time, because the level drains while the waiter is late.

This module keeps only what aiolimiter lacks, as a thin layer over it:

* the shared 429 cooldown: every waiter on the budget waits until ``Retry-After`` (a
  floor) has passed, and a waiter admitted during a cooldown queues again after it;
* the low-credit downgrade: a new, slower limiter for the rest of the run;
* the headroom: the sustained rate leaves room for the burst, so that any 60 s window,
  wherever it starts, holds at most the stated limit.

`PollPacer` spreads the polling of in-flight predictions over the read budget, so the
poll interval grows with the number in flight instead of exceeding the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from engine._config import EngineConfig

__all__ = ["Budget", "Limits", "PollPacer", "default_burst"]

# The sustained rate aims a hair under what is left after the burst, so that the burst
# plus 60 s of sustained admissions stays under the limit even with rounding.
_HEADROOM = 0.99


_MAX_BURST = 8


def default_burst(rate_per_min: float) -> int:
    """Return the bucket size for a rate: half a second's worth, at least 2, at most 8.

    Two or more absorb a waiter woken late. The cap keeps a burst under what a
    rate-limited server may allow whatever the rate: Replicate states no burst for
    creates, and the emulator's benchmarks and tests allow 10 to 20 (at a scaled
    6,000/min, half a second's worth was 50 and drew 429s).
    """
    return max(2, min(_MAX_BURST, int(rate_per_min / 120)))


class Budget:
    """Admit requests at no more than ``rate_per_min``, with a shared 429 cooldown.

    ``burst`` requests may go back to back; the sustained rate is lowered by as much so
    that any 60 s window holds at most ``rate_per_min``. ``clock`` returns seconds in the
    event loop's time (tests run on a loop with virtual time).
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
        self._cooldown_until = float("-inf")
        self.acquired = 0
        self.throttled = 0
        self.throttled_seconds = 0.0

    def _set_rate(self, rate_per_min: float, burst: int) -> None:
        self.rate_per_min = rate_per_min
        # A burst above half the rate would leave too little for the sustained rate.
        self.burst = max(1, min(burst, int(rate_per_min / 2)))
        sustained = max(rate_per_min - self.burst, rate_per_min / 2) * _HEADROOM  # per minute
        self._interval = 60.0 / sustained
        # A bucket of `burst` that drains `burst` slots every `burst` intervals.
        self._limiter = AsyncLimiter(self.burst, self.burst * self._interval)

    @property
    def min_interval(self) -> float:
        """Return the sustained spacing between two requests, in seconds."""
        return self._interval

    @property
    def cooldown_remaining(self) -> float:
        """Return how long every waiter still has to wait because of a 429."""
        return max(0.0, self._cooldown_until - self._clock())

    async def acquire(self) -> None:
        """Wait until one request may be sent (after any cooldown, within the rate)."""
        while True:
            wait = self.cooldown_remaining
            if wait > 0:
                await anyio.sleep(wait)
                continue
            limiter = self._limiter
            await limiter.acquire()
            # A throttle while we queued (or a lower rate): queue again behind it, so
            # requests resume paced instead of as one herd.
            if self.cooldown_remaining <= 0 and limiter is self._limiter:
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
            create=Budget("create", config.create_rate, burst=default_burst(config.create_rate)),
            read=Budget("read", config.read_rate, burst=default_burst(config.read_rate)),
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
