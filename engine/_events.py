"""Describe what happens to jobs during a run, for host apps, displays and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jobs import Job, ModelRef, OutputFile

__all__ = ["FOUND_AFTER_RESTART", "UNANSWERED", "JobEvent", "JobEventKind"]

# The detail of a REATTACHED event for a prediction an earlier run created but never
# journaled (killed between sending the create and writing its id): found by listing.
FOUND_AFTER_RESTART = "found by listing after a restart"
# The detail of a DEFERRED event for a create that was sent and never answered, and that
# the prediction list did not show before the run stopped: it may exist (and bill). The
# journal keeps it ``creating``; the next run (or ``cancel``) looks for it again.
UNANSWERED = "create sent, answer lost"


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
    CHANGED = "changed"  # the model or input of a journaled explicit id changed (see detail)
    DEFERRED = "deferred"  # not started (or left running) because the run is stopping


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One observable change to one job, carrying the job itself.

    ``key`` is the job's id; ``job`` is the `Job` the run was given (the same object, not
    a copy: do not mutate its ``input``), so ``model`` and ``input`` need no side table.
    ``detail`` is a short human-readable note (never secrets). ``size`` is bytes: of the
    file for DOWNLOADED, of all files for DONE. ``files`` lists the job's verified output
    files on DONE (names relative to the run's ``output_dir``), empty otherwise.
    """

    key: str
    kind: JobEventKind
    prediction_id: str | None = None
    detail: str = ""
    size: int = 0
    job: Job | None = field(default=None, repr=False, compare=False)
    files: tuple[OutputFile, ...] = ()

    @property
    def model(self) -> ModelRef | None:
        """The job's model (None only for an event built without its job)."""
        return self.job.model if self.job is not None else None

    @property
    def input(self) -> dict[str, Any] | None:
        """The job's input, by reference (None only for an event built without its job)."""
        return self.job.input if self.job is not None else None
