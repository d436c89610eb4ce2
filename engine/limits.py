"""Pace requests to Replicate: create/read budgets, a shared 429 cooldown, poll scheduling.

Replicate limits creates (600/min) and every other call (3000/min) separately, so a run
has two `Budget` objects (`Limits`). A budget is smooth: it never admits a burst above its
rate, because `aiolimiter.AsyncLimiter(600, 60)` would admit 600 requests at once. A 429
answer sets a cooldown shared by every waiter on that budget (``Retry-After`` is a floor);
a low-credit answer lowers the rate for the rest of the run.

`PollPacer` spreads the polling of all in-flight predictions over the read budget, so the
poll interval grows with the number in flight instead of exceeding the budget.

Budgets use `aiolimiter`, which needs asyncio: run the engine on anyio's asyncio backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from aiolimiter import AsyncLimiter

if TYPE_CHECKING:
    from engine.config import EngineConfig

__all__ = ["Budget", "Limits", "PollPacer"]

# Aim a hair under the stated limit so that any 60 s window, wherever it starts, stays
# at or below the limit despite timer jitter (a leaky bucket admits its burst on top).
_HEADROOM = 0.98


class Budget:
    """Admit requests at no more than ``rate_per_min``, smoothly, with a shared cooldown.

    ``burst`` is how many requests may go back to back before pacing starts; the
    sustained rate is lowered by the same amount so that any 60 s window holds at most
    ``rate_per_min`` requests.
    """

    def __init__(self, name: str, rate_per_min: float, *, burst: int = 1) -> None:
        if rate_per_min <= 0:
            raise ValueError(f"budget {name!r}: rate must be positive, got {rate_per_min}")
        if burst < 1:
            raise ValueError(f"budget {name!r}: burst must be at least 1, got {burst}")
        self.name = name
        self.burst = burst
        self.rate_per_min = rate_per_min
        self._limiter = self._make_limiter(rate_per_min, burst)
        self._cooldown_until = 0.0
        self.acquired = 0
        self.throttled = 0
        self.throttled_seconds = 0.0

    @staticmethod
    def _make_limiter(rate_per_min: float, burst: int) -> AsyncLimiter:
        # A bucket of size `burst` draining at r/s admits at most burst + r*60 per minute,
        # so drain at (rate - burst + 1), never below a fraction of the rate.
        sustained = max(rate_per_min - (burst - 1), rate_per_min / 2) * _HEADROOM
        period = 60.0 * burst / sustained
        return AsyncLimiter(burst, period)

    @property
    def min_interval(self) -> float:
        """Return the sustained spacing between two requests, in seconds."""
        return self._limiter.time_period / self._limiter.max_rate

    @property
    def cooldown_remaining(self) -> float:
        """Return how long every waiter still has to wait because of a 429."""
        return max(0.0, self._cooldown_until - anyio.current_time())

    async def acquire(self) -> None:
        """Wait until one request may be sent (after any cooldown, within the rate)."""
        while True:
            remaining = self.cooldown_remaining
            if remaining > 0:
                await anyio.sleep(remaining)
            limiter = self._limiter
            await limiter.acquire()
            # A throttle or a rate change while we queued: queue again, so requests
            # resume paced after the cooldown instead of as one herd.
            if limiter is self._limiter and self.cooldown_remaining <= 0:
                self.acquired += 1
                return

    def throttle(self, retry_after: float) -> None:
        """Make every waiter on this budget wait until ``now + retry_after``."""
        now = anyio.current_time()
        until = now + max(0.0, retry_after)
        self.throttled += 1
        if until > self._cooldown_until:
            self.throttled_seconds += until - max(now, self._cooldown_until)
            self._cooldown_until = until

    def lower_rate(self, rate_per_min: float, *, burst: int = 1) -> None:
        """Lower the rate for the rest of the run (the low-credit throttle); never raise it."""
        if rate_per_min <= 0 or rate_per_min >= self.rate_per_min:
            return
        self.rate_per_min = rate_per_min
        self.burst = burst
        self._limiter = self._make_limiter(rate_per_min, burst)

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
    """Share the read budget among in-flight predictions.

    interval = max(min_interval, in_flight / (share * reads per second)); ``share`` leaves
    room for the other reads (a create's follow-up GETs, cancels, lists, downloads' API
    calls).
    """

    def __init__(self, read: Budget, *, min_interval: float = 0.5, share: float = 0.9) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.read = read
        self.min_interval = min_interval
        self.share = share
        self.in_flight = 0

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one prediction as in flight while the block runs."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @property
    def interval(self) -> float:
        """Return the poll interval of one prediction, given how many are in flight."""
        reads_per_second = self.share * self.read.rate_per_min / 60.0
        return max(self.min_interval, max(1, self.in_flight) / reads_per_second)

    async def wait(self, since: float) -> None:
        """Sleep until ``since`` (an `anyio.current_time` of the last poll) + interval."""
        delay = since + self.interval - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
