"""Steer a running batch: stop creating, wait for, cancel or leave what is in flight.

A run stops in one of these ways, and workers treat them differently:

- *drain* (deadline, budget reached, or the first Ctrl-C or SIGTERM): no new creates;
  running predictions are waited for and downloaded. A signal's drain still makes the
  run *interrupted* (exit code 130).
- *cancel* (the second Ctrl-C, or the first with ``--cancel-on-exit``): everything still
  running on Replicate is canceled (and journaled canceled) so nothing keeps billing.
- *leave* (the third Ctrl-C, or a host leaving `open_run`): stop waiting at once; running
  predictions stay journaled, for the next run or the ``cancel`` command.

`RunControl.escalate` is the signal ladder: each Ctrl-C takes the next `StopStage`.
`Spending` holds the run's spending budgets (``--max-predictions``,
``--max-predict-seconds``) and drains the run when one is used up.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

import anyio

from engine._pricing import Usage, model_label

if TYPE_CHECKING:
    from engine._prediction import Prediction
    from jobs import Job

__all__ = ["RunControl", "Spending", "StopStage"]


class StopStage(StrEnum):
    """The steps of the signal ladder, in order: each Ctrl-C or SIGTERM takes the next."""

    DRAINING = "draining"  # no new creates; running predictions and downloads finish
    CANCELING = "canceling"  # running predictions are canceled on Replicate
    LEAVING = "leaving"  # exit now; what still runs stays journaled


class RunControl:
    """Shared stop signals for one run. Create it inside the event loop that runs it.

    ``interrupted``: a signal or the host stopped the run (exit code 130).
    ``leave_running``: stop waiting for running predictions (they stay journaled).
    ``cancel_requested``: cancel running predictions on Replicate before the run ends.
    """

    def __init__(self) -> None:
        self._changed = anyio.Event()
        self.stop_reason: str | None = None
        self.interrupted = False
        self.leave_running = False
        self.limit_reached = False  # a budget or the deadline drained the run
        self.no_credit = False  # a create was refused for insufficient credit (402)
        self.cancel_requested = False
        self.stage: StopStage | None = None  # how far the signal ladder went
        self._stop_workers = anyio.Event()

    @property
    def stop_creating(self) -> bool:
        """Return True once no new prediction may be created."""
        return self.stop_reason is not None

    def drain(self, reason: str, *, limit: bool = False, interrupted: bool = False) -> None:
        """Stop creating; finish what is running.

        ``limit``: a budget or the deadline; ``interrupted``: a signal (first Ctrl-C).
        """
        if self.stop_reason is None:
            self.stop_reason = reason
            self.limit_reached = limit
        self.interrupted = self.interrupted or interrupted
        self._wake()

    def interrupt(self, reason: str = "interrupted") -> None:
        """Stop creating and stop waiting: running predictions stay journaled (host left)."""
        self.leave_running = True
        self.drain(reason, interrupted=True)

    def cancel(self, reason: str = "canceled") -> None:
        """Stop the workers and cancel every in-flight prediction on Replicate."""
        self.cancel_requested = True
        self.interrupt(reason)
        self._stop_workers.set()

    def leave(self, reason: str = "interrupted") -> None:
        """Stop the workers now (downloads too), canceling nothing: all stays journaled."""
        self.cancel_requested = False  # a cancel under way stops: it was taking too long
        self.stage = StopStage.LEAVING
        self.interrupt(reason)
        self._stop_workers.set()

    def escalate(self, reason: str, *, cancel_first: bool = False) -> StopStage:
        """Take the next stage of the signal ladder (a Ctrl-C or SIGTERM) and return it.

        Drain, then cancel, then leave; ``cancel_first`` (``--cancel-on-exit``) starts at
        cancel.
        """
        if self.stage is None and not cancel_first:
            self.stage = StopStage.DRAINING
            self.drain(reason, interrupted=True)
            return StopStage.DRAINING
        if self.stage in (None, StopStage.DRAINING):
            self.stage = StopStage.CANCELING
            self.cancel(reason)
            return StopStage.CANCELING
        self.leave(reason)
        return StopStage.LEAVING

    async def wait_changed(self) -> None:
        """Return at the next change of state (used to cut poll sleeps short)."""
        await self._changed.wait()

    async def wait_stop_workers(self) -> None:
        """Return once the workers must stop (a cancel, or leaving at once)."""
        await self._stop_workers.wait()

    async def wait_leave(self) -> None:
        """Return once the run must end at once, even in the middle of its cancels."""
        while self.stage is not StopStage.LEAVING:
            await self.wait_changed()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


class Spending:
    """The run's spending budgets; reaching one drains ``control`` (no new creates)."""

    def __init__(
        self,
        control: RunControl,
        *,
        max_predictions: int | None = None,
        max_predict_seconds: float | None = None,
        max_spend: float | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.control = control
        self.max_spend = max_spend
        self.usage = usage if usage is not None else Usage()
        self.max_predictions = max_predictions
        self.max_predict_seconds = max_predict_seconds
        self.creates_reserved = 0
        self.predict_seconds = 0.0  # billed time so far, failed and canceled ones included

    def reserve_create(self) -> bool:
        """Take one prediction from the ``--max-predictions`` budget, if any is left."""
        limit = self.max_predictions
        if limit is not None and self.creates_reserved >= limit:
            self.control.drain("max-predictions reached", limit=True)
            return False
        self.creates_reserved += 1
        return True

    def add_predict_time(self, seconds: float | None) -> None:
        """Count predict time (failed and canceled ones cost too) against the budget."""
        if seconds is None:
            return
        self.predict_seconds += seconds
        limit = self.max_predict_seconds
        if limit is not None and self.predict_seconds >= limit:
            self.control.drain("max-predict-seconds reached", limit=True)

    def add_usage(self, job: Job, prediction: Prediction) -> None:
        """Count what ``prediction`` is billed for; stop creating at ``max_spend``."""
        self.usage.record(model_label(job.model), prediction, deployment=job.model.deployment)
        if self.max_spend is not None and self.usage.spent >= self.max_spend:
            self.control.drain("max-spend reached", limit=True)
