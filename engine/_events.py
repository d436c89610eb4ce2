"""Describe what happens to jobs during a run, for host apps, displays and the report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["JobEvent", "JobEventKind"]


class JobEventKind(StrEnum):
    """The moments of a job's life a host app can observe."""

    SKIPPED = "skipped"  # already done (files verified) or failed without --retry-failed
    CREATING = "creating"  # a create is being sent; its answer is awaited
    CREATED = "created"  # a prediction was created and its id journaled
    REATTACHED = "reattached"  # a journaled prediction was picked up again after a restart
    SUCCEEDED = "succeeded"  # the prediction succeeded; downloads start
    DOWNLOADED = "downloaded"  # one output file is on disk, verified
    DONE = "done"  # every output is on disk
    RETRYING = "retrying"  # the attempt failed transiently; a new prediction follows
    FAILED = "failed"  # the job ended without its outputs
    CANCELED = "canceled"  # we canceled its prediction (deadline, interrupt)
    DEFERRED = "deferred"  # not started (or left running) because the run is stopping


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One observable change; ``detail`` is a short human-readable note (never secrets)."""

    key: str
    kind: JobEventKind
    prediction_id: str | None = None
    detail: str = ""
    size: int = 0  # bytes, for DOWNLOADED
