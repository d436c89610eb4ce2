"""Steer a running batch: stop creating, leave or cancel what is in flight.

A run stops in one of three ways, and workers treat them differently:

- *drain* (deadline, budget reached): no new creates; running predictions are waited
  for and downloaded.
- *interrupt* (first Ctrl-C or SIGTERM): no new creates; running predictions are left
  running on Replicate (journaled, re-attached by the next run); downloads in progress
  and predictions that already succeeded finish.
- *cancel* (second Ctrl-C, or ``--cancel-on-exit``): everything still running on
  Replicate is canceled so nothing keeps billing.

`Spending` holds the run's spending budgets (``--max-predictions``,
``--max-predict-seconds``) and drains the run when one is used up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from engine._pricing import Usage, model_label

if TYPE_CHECKING:
    from engine._prediction import Prediction
    from jobs import Job

__all__ = ["RunControl", "Spending"]


class RunControl:
    """Shared stop signals for one run. Create it inside the event loop that runs it."""

    def __init__(self) -> None:
        self._changed = anyio.Event()
        self.stop_reason: str | None = None
        self.interrupted = False
        self.cancel_requested = False
        self._cancel_event = anyio.Event()

    @property
    def stop_creating(self) -> bool:
        """Return True once no new prediction may be created."""
        return self.stop_reason is not None

    def drain(self, reason: str) -> None:
        """Stop creating; finish what is running (deadline, budget)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake()

    def interrupt(self, reason: str = "interrupted") -> None:
        """Stop creating and stop waiting for running predictions (first Ctrl-C)."""
        self.interrupted = True
        self.drain(reason)

    def cancel(self, reason: str = "canceled") -> None:
        """Interrupt and cancel every in-flight prediction on Replicate (second Ctrl-C)."""
        self.cancel_requested = True
        self.interrupt(reason)
        self._cancel_event.set()

    async def wait_changed(self) -> None:
        """Return at the next change of state (used to cut poll sleeps short)."""
        await self._changed.wait()

    async def wait_cancel(self) -> None:
        """Return once a cancel was requested."""
        await self._cancel_event.wait()

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
            self.control.drain("max-predictions reached")
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
            self.control.drain("max-predict-seconds reached")

    def add_usage(self, job: Job, prediction: Prediction) -> None:
        """Count what ``prediction`` is billed for; stop creating at ``max_spend``."""
        self.usage.record(model_label(job.model), prediction, deployment=job.model.deployment)
        if self.max_spend is not None and self.usage.spent >= self.max_spend:
            self.control.drain("max-spend reached")
