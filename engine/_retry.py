"""Decide which errors are retried, for which kind of call, as data for stamina.

Idempotent calls (GET, cancel, list, downloads) retry network errors, 5xx and 429. A
create retries only when the request provably was not accepted: a 429, or a connection
that failed before the request left (``TransportError.sent is False``); anything else
might have created a prediction that is billed, so it is never blindly repeated.

For a 429 the wait is not stamina's: the transport has already put the budget into a
shared cooldown of at least ``Retry-After``, and the next attempt's ``acquire()`` waits it
out. Stamina's own backoff stays small on top of that.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import stamina

from engine._errors import (
    IntegrityError,
    RateLimitedError,
    ServerError,
    TransportError,
)

if TYPE_CHECKING:
    from engine._config import EngineConfig

__all__ = [
    "RetryPolicy",
    "is_permanent_failure",
    "retry_create",
    "retry_download",
    "retry_idempotent",
]

# A stamina backoff hook: False (give up), True (retry after backoff) or seconds to wait.
Predicate = Callable[[Exception], bool | float]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one call is retried: attempts in total, overall timeout, backoff bounds."""

    attempts: int = 6
    timeout: float = 300.0
    wait_initial: float = 0.1
    wait_max: float = 5.0

    @classmethod
    def from_config(cls, config: EngineConfig) -> RetryPolicy:
        """Build the per-call policy of a run from its configuration."""
        return cls(attempts=config.call_attempts, timeout=config.call_timeout)

    def retrying(
        self, on: Predicate, counts: Counter[str] | None = None
    ) -> AsyncIterator[stamina.Attempt]:
        """Return stamina's retry context for this policy, retrying when ``on`` says so.

        ``counts`` (if given) counts the errors ``on`` decided to retry, by class name, for
        the run's report.
        """
        if counts is not None:
            decide = on

            def on(exc: Exception) -> bool | float:
                verdict = decide(exc)
                if verdict:
                    counts[type(exc).__name__] += 1
                return verdict

        return stamina.retry_context(
            on=on,
            attempts=self.attempts,
            timeout=self.timeout,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
        )


def retry_idempotent(exc: Exception) -> bool:
    """Return True for errors an idempotent call (GET, cancel, list) may retry."""
    return isinstance(exc, TransportError | ServerError | RateLimitedError)


def retry_create(exc: Exception) -> bool:
    """Return True only when a create provably was not accepted (429, never sent)."""
    if isinstance(exc, RateLimitedError):
        return True
    return isinstance(exc, TransportError) and not exc.sent


def retry_download(exc: Exception) -> bool | float:
    """Return whether a download failure is worth another try (resuming from the part).

    Output hosts have no budget to cool down, so a 429 waits its ``Retry-After`` here.
    """
    if isinstance(exc, RateLimitedError):
        return max(exc.retry_after, 0.001)
    return retry_idempotent(exc) or isinstance(exc, IntegrityError)


# Words Replicate and models use for failures that no retry can fix.
_PERMANENT_MARKERS = (
    "invalid input",
    "input validation",
    "nsfw",
    "safety",
    "content policy",
    "flagged",
    "not permitted",
)


def is_permanent_failure(error: str | None) -> bool:
    """Return True when a failed prediction's error says retrying cannot help."""
    text = (error or "").lower()
    return any(marker in text for marker in _PERMANENT_MARKERS)
