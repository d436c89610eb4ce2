"""Stop a run: cancel workers on request, cut them after the grace, cancel what still bills.

Split from `engine._runner` (issue 11): the watchers a run starts beside its workers, and
the shielded cancel of every prediction still running when the run is interrupted.
"""

from __future__ import annotations

import anyio
from anyio import CancelScope

from engine._control import RunControl
from engine._errors import EngineError
from engine._events import JobEvent, JobEventKind
from engine._journal import JournalRecord
from engine._logs import get_logger
from engine._worker import WorkerContext
from jobs import Job

__all__ = ["cancel_in_flight", "cancel_workers_on_request", "cut_after_grace", "drain_at_deadline"]

log = get_logger("engine.runner")


async def cancel_workers_on_request(control: RunControl, scope: CancelScope) -> None:
    await control.wait_stop_workers()
    scope.cancel()


async def cut_after_grace(control: RunControl, scope: CancelScope, grace: float) -> None:
    """Bound an interrupted run: what still runs ``grace`` seconds after the signal stops.

    A create whose answer is awaited is journaled ``creating`` (the next run looks for it
    before paying again); a download keeps its part; a prediction stays journaled as
    running. Nothing is lost by stopping, and a hung call cannot hold the exit.
    """
    while not control.interrupted:
        await control.wait_changed()
    await anyio.sleep(grace)
    log.warning("run.grace_expired", grace_seconds=grace)
    scope.cancel()


async def drain_at_deadline(control: RunControl, seconds: float) -> None:
    await anyio.sleep(seconds)
    control.drain("deadline reached", limit=True)


async def cancel_in_flight(ctx: WorkerContext) -> None:
    """Cancel every prediction still running on Replicate so nothing keeps billing."""
    pending = dict(ctx.in_flight)
    log.warning("run.canceling", predictions=len(pending))

    async def cancel_one(prediction_id: str, job: Job) -> None:
        try:
            await ctx.gateway.cancel(prediction_id)
        except EngineError as exc:
            log.warning("run.cancel_failed", prediction_id=prediction_id, error=str(exc))
            return
        record = JournalRecord.canceled(job.key, prediction_id=prediction_id, why="interrupt")
        await ctx.journal.append(record, durable=True)
        ctx.in_flight.pop(prediction_id, None)
        await ctx.emit(
            JobEvent(job.key, JobEventKind.CANCELED, prediction_id, "interrupt", job=job)
        )

    async def leave_at_once(scope: CancelScope) -> None:
        await ctx.control.wait_leave()  # the next Ctrl-C: the cancels took too long
        log.warning("run.cancel_abandoned", predictions=len(ctx.in_flight))
        scope.cancel()

    # Shielded from the host's cancellation (nothing may keep billing), but not from the
    # user's next Ctrl-C: what is not canceled by then stays journaled, and is named.
    with anyio.CancelScope(shield=True), anyio.move_on_after(ctx.config.shutdown_grace):
        async with anyio.create_task_group() as tg:
            tg.start_soon(leave_at_once, tg.cancel_scope)
            async with anyio.create_task_group() as cancels:
                for prediction_id, job in pending.items():
                    cancels.start_soon(cancel_one, prediction_id, job)
            tg.cancel_scope.cancel()
