"""Name every Redis key in one place: a prefix per run, a prefix per account."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from engine._config import Secret

__all__ = ["GROUP", "RunKeys", "account_prefix"]

GROUP = "workers"  # the one consumer group of a run's stream
_ROOT = "engine"


def account_prefix(token: Secret) -> str:
    """Return the key prefix of one account's budgets: a hash of its token, never the token."""
    digest = hashlib.sha256(b"replicate-batch-engine:" + token.reveal().encode()).hexdigest()
    return f"{_ROOT}:acct:{digest[:24]}"


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The keys of one named run."""

    run: str

    @property
    def prefix(self) -> str:
        """Return the prefix every key of this run starts with (the Lua scripts add to it)."""
        return f"{_ROOT}:run:{self.run}"

    @property
    def stream(self) -> str:
        """Return the stream of jobs to do (one entry per hand-out)."""
        return f"{self.prefix}:stream"

    @property
    def jobs(self) -> str:
        """Return the hash of every job enqueued: key -> the job as JSON."""
        return f"{self.prefix}:jobs"

    @property
    def meta(self) -> str:
        """Return the hash of run-wide counters and the control word."""
        return f"{self.prefix}:meta"

    @property
    def workers(self) -> str:
        """Return the set of worker ids that ever joined."""
        return f"{self.prefix}:workers"

    def state(self, key: str) -> str:
        """Return the hash of one job's fenced state."""
        return f"{self.prefix}:job:{key}"

    def records(self, key: str) -> str:
        """Return the list of one job's journal lines."""
        return f"{self.prefix}:rec:{key}"

    def lease(self, worker: str) -> str:
        """Return the key whose life is a worker's lease."""
        return f"{self.prefix}:lease:{worker}"
