"""Wait for one prediction to end: poll it, or let the list sweep report it, within the timeout.

Split from `engine._worker` (issue 11): the wait step of a job's life.
"""

from __future__ import annotations

import contextlib
import math
import time

import anyio

from engine._logs import get_logger
from engine._prediction import Prediction
from engine._sweep import Watch
from engine._worker_context import WorkerContext

__all__ = ["poll", "wait_for_news"]

log = get_logger("engine.worker")


async def poll(
    ctx: WorkerContext, prediction_id: str, created: Prediction | None
) -> Prediction | None:
    """Ask for the prediction until terminal, or wait for the list sweep to see it end.

    While the sweep covers the prediction (many in flight) this worker sends nothing:
    it wakes when the sweep delivers the terminal prediction, or asks for one GET
    (the list lacked the output, or has missed the prediction for too long). ``created``
    is the create's answer, the first poll: a fast model may already be done.
    """
    started = time.monotonic()
    timeout = ctx.config.job_timeout
    watching = (
        ctx.sweeper.watch(prediction_id)
        if ctx.sweeper is not None
        else contextlib.nullcontext(None)
    )
    with ctx.pacer.track(), watching as watch:
        while True:
            known, created = created, None
            listed = watch.take() if watch is not None else None
            prediction: Prediction | None
            if known is not None and known.id == prediction_id:
                prediction = known
            elif listed is not None:
                prediction = listed
            elif watch is None or watch.needs_get():
                prediction = await ctx.gateway.get(prediction_id)
            else:
                prediction = None  # woken for nothing new (a change of the run's state)
            if prediction is not None:
                if watch is not None:
                    watch.saw(prediction)
                if prediction.status.terminal:
                    ctx.in_flight.pop(prediction_id, None)
                    ctx.stats.prediction_seconds.append(time.monotonic() - started)
                    return prediction
            if ctx.control.leave_running:
                return None
            age = time.monotonic() - started
            if timeout is not None and age > timeout:
                log.warning("job.timeout", prediction_id=prediction_id, timeout=timeout)
                canceled = await ctx.gateway.cancel(prediction_id)
                ctx.in_flight.pop(prediction_id, None)
                return canceled
            await wait_for_news(ctx, watch, age)


async def wait_for_news(ctx: WorkerContext, watch: Watch | None, age: float) -> None:
    """Sleep out the poll interval, or until the sweep (or the run's state) has news."""
    timeout = ctx.config.job_timeout
    if watch is None:
        with anyio.move_on_after(ctx.pacer.interval(age)):
            await ctx.control.wait_changed()
        return
    if watch.covered and watch.created is not None:  # a sweep window holds it
        wait = math.inf if timeout is None else timeout - age + ctx.pacer.min_interval
    else:
        wait = ctx.pacer.interval(age)
    with anyio.move_on_after(wait):
        await watch.wait()
