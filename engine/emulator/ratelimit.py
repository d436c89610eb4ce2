"""Throttle API calls with token buckets, answering as Replicate does when over the limit."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "LOW_CREDIT_BURST",
    "LOW_CREDIT_RATE",
    "TokenBucket",
    "retry_after_seconds",
    "throttle_detail",
]

LOW_CREDIT_RATE = 6.0
LOW_CREDIT_BURST = 1


@dataclass(slots=True)
class TokenBucket:
    """A bucket of ``burst`` tokens refilled at ``rate_per_min``; time comes from the caller."""

    rate_per_min: float
    burst: int
    tokens: float = -1.0
    updated: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens, self.updated = float(self.burst), now
        rate = self.rate_per_min / 60.0
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * rate)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token; return 0.0 when admitted, else seconds until one is available."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        rate = self.rate_per_min / 60.0
        return (1.0 - self.tokens) / rate if rate > 0 else math.inf

    def remaining(self) -> int:
        """Return the whole tokens left (the ``ratelimit-remaining`` header)."""
        return max(0, int(self.tokens))

    def reconfigure(self, rate_per_min: float, burst: int) -> None:
        """Change the rate and burst, keeping the tokens already earned (capped)."""
        self.rate_per_min, self.burst = rate_per_min, burst
        self.tokens = min(self.tokens, float(burst))


def retry_after_seconds(wait: float) -> int:
    """Return an integer ``Retry-After`` (ceil, at least 1), as the client only parses ints."""
    return max(1, math.ceil(wait)) if math.isfinite(wait) else 60


def throttle_detail(retry_after: int, *, low_credit: bool) -> str:
    """Return the 429 ``detail`` text in Replicate's words."""
    if low_credit:
        return (
            "Request was throttled. Your rate limit for creating predictions is reduced to "
            f"{int(LOW_CREDIT_RATE)} requests per minute with a burst of {LOW_CREDIT_BURST} "
            "requests while you have less than $5.0 in credit. "
            f"Your rate limit resets in ~{retry_after}s."
        )
    return f"Request was throttled. Your rate limit resets in ~{retry_after}s."
