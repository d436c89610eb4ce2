"""Run a batch: one task group owns the producer, the workers and every resource.

Backpressure comes before spawning: a fixed pool of ``concurrency`` workers reads jobs from
a memory stream of the same size, so memory is O(in flight), never O(manifest).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import anyio
import structlog
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine._config import REPORT_NAME, EngineConfig
from engine._control import RunControl, Spending
from engine._download import Downloader
from engine._errors import EngineError
from engine._events import JobEvent, JobEventKind
from engine._gateway import Gateway
from engine._http import async_library_known
from engine._journal import JobState, Journal, JournalRecord, load_journal
from engine._limits import Limits, PollPacer
from engine._parts import is_stored
from engine._report import RunSummary, write_report
from engine._retry import RetryPolicy
from engine._stats import RunStats
from engine._worker import WorkerContext, run_job
from jobs import Job, JobStatus

__all__ = ["JobSource", "RunHandle", "open_run", "run_jobs"]

log = structlog.get_logger("engine.runner")

JobSource = Iterable[Job] | Callable[[], Iterable[Job]]
EventHook = Callable[[JobEvent], Awaitable[None] | None]

_RESUMABLE = frozenset({JobStatus.CREATING, JobStatus.RUNNING, JobStatus.SUCCEEDED})
_GAVE_UP = frozenset({JobStatus.FAILED, JobStatus.CANCELED})  # skipped without --retry-failed
# Per-file and per-skip lines would flood the log of a resumed million-job run; the
# report and the progress line count them.
_QUIET_EVENTS = frozenset(
    {
        JobEventKind.CREATING,
        JobEventKind.DOWNLOADED,
        JobEventKind.SUCCEEDED,
        JobEventKind.SKIPPED,
    }
)
# Steps at debug, outcomes at info: one line per finished job. The journal keeps every
# prediction id durably; the done, failed and deferred lines name theirs.
_DEBUG_EVENTS = frozenset({JobEventKind.CREATED})


async def run_jobs(
    jobs: JobSource,
    config: EngineConfig,
    *,
    control: RunControl | None = None,
    on_event: EventHook | None = None,
) -> RunSummary:
    """Run ``jobs`` to completion (or until stopped) and return what happened.

    ``jobs`` is an iterable of `Job` or a callable returning one; a callable (or a
    re-iterable such as a list) lets predictions journaled by an earlier run go first, so
    their outputs are fetched before Replicate deletes them. Resumes from the journal at
    ``config.journal_path``; writes ``report.json`` next to the outputs.
    Never calls ``asyncio.run``: it runs in the caller's event loop.
    """
    with async_library_known():
        return await _run(jobs, config, control=control, on_event=on_event)


async def _run(
    jobs: JobSource,
    config: EngineConfig,
    *,
    control: RunControl | None,
    on_event: EventHook | None,
) -> RunSummary:
    control = control or RunControl()
    stats = RunStats()
    spending = Spending(
        control,
        max_predictions=config.max_predictions,
        max_predict_seconds=config.max_predict_seconds,
    )
    replay = await anyio.to_thread.run_sync(load_journal, config.journal_path)
    states = replay.jobs
    limits = Limits.from_config(config)
    policy = RetryPolicy.from_config(config)
    api = replace(config.api, cancel_after=config.job_timeout) if config.job_timeout else config.api

    async def emit(event: JobEvent) -> None:
        stats.record(event)
        if event.kind not in _QUIET_EVENTS:
            emit_log = log.debug if event.kind in _DEBUG_EVENTS else log.info
            emit_log(
                f"job.{event.kind}",
                job=event.key,
                prediction_id=event.prediction_id,
                detail=event.detail or None,
            )
        if on_event is not None:
            result = on_event(event)
            # isawaitable's ABC check on None would cost a resume more than its own skipping.
            if result is not None and inspect.isawaitable(result):
                await result

    async with (
        Journal(config.journal_path, flush_interval=config.journal_flush_interval) as journal,
        Gateway(api, limits, policy) as gateway,
        Downloader(config.api, chunk_size=config.download_chunk_size, retry=policy) as downloader,
    ):
        ctx = WorkerContext(
            config=config,
            gateway=gateway,
            downloader=downloader,
            journal=journal,
            pacer=PollPacer(limits.read, min_interval=config.poll_interval),
            control=control,
            stats=stats,
            emit=emit,
            spending=spending,
        )
        send, receive = anyio.create_memory_object_stream[tuple[Job, JobState | None]](
            config.concurrency
        )
        async with anyio.create_task_group() as outer:
            workers_scope = CancelScope()
            outer.start_soon(_produce, jobs, states, config, ctx, send)
            outer.start_soon(_cancel_workers_on_request, control, workers_scope)
            outer.start_soon(_cut_after_grace, control, workers_scope, config.shutdown_grace)
            if config.deadline is not None:
                outer.start_soon(_drain_at_deadline, control, config.deadline)
            with workers_scope:
                async with anyio.create_task_group() as workers, receive:
                    for _ in range(config.concurrency):
                        workers.start_soon(_work, receive.clone(), ctx)
            outer.cancel_scope.cancel()  # the producer is done; the watchers have no work left
        if control.cancel_requested and ctx.in_flight:
            await _cancel_in_flight(ctx)
        stats.retries.update(gateway.retries)
        stats.retries.update(downloader.retries)

    # The replayed states of a long journal are the biggest thing alive: free them before
    # the summary and the report add their own peak.
    del replay, states
    summary = stats.summary(
        predict_seconds=spending.predict_seconds,
        throttled_429=limits.create.throttled + limits.read.throttled,
        throttled_seconds=limits.create.throttled_seconds + limits.read.throttled_seconds,
        interrupted=control.interrupted,
        stopped_reason=control.stop_reason,
    )
    write_report(summary, config.output_dir / REPORT_NAME)
    # The ids of failed jobs are in report.json; one log line holds only their count.
    numbers = summary.to_json()
    numbers["failed_keys"] = len(summary.failed_keys)
    log.info("run.finished", **numbers)
    return summary


async def _produce(
    jobs: JobSource,
    states: Mapping[str, JobState],
    config: EngineConfig,
    ctx: WorkerContext,
    send: MemoryObjectSendStream[tuple[Job, JobState | None]],
) -> None:
    """Feed jobs to the workers: resumable ones first, finished ones skipped."""
    async with send:
        for job in _ordered(jobs, states):
            if ctx.control.stop_creating:
                return  # the rest stays pending in the journal's eyes: the next run does it
            if config.only and job.key not in config.only:
                continue
            ctx.stats.total += 1
            state = states.get(job.key)
            skipped = None if state is None else _skipped(state, config)
            if skipped is not None:
                await ctx.emit(skipped)
                continue
            try:
                await send.send((job, state))
            except anyio.BrokenResourceError:
                return  # every worker is gone: the error that ended them tells the story


def _ordered(jobs: JobSource, states: Mapping[str, JobState]) -> Iterator[Job]:
    """Yield journaled in-flight jobs first when ``jobs`` can be read twice."""
    factory: Callable[[], Iterable[Job]] | None
    if callable(jobs):
        factory = jobs
    elif iter(jobs) is not jobs:  # a list or other re-iterable collection
        factory = lambda: jobs  # noqa: E731
    else:
        factory = None
    if factory is None:
        yield from jobs  # type: ignore[misc]
        return
    resumable = {k for k, s in states.items() if s.status in _RESUMABLE}
    if resumable:
        for job in factory():
            if job.key in resumable:
                yield job
    for job in factory():
        if job.key not in resumable:
            yield job


def _skipped(state: JobState, config: EngineConfig) -> JobEvent | None:
    """Return the SKIPPED event when the journal says there is nothing to do, else None."""
    # Plain, not async: a resume decides this for a million jobs before its first create.
    # The replay's key, not the manifest's equal copy: the report keeps skipped failed keys.
    status = state.status
    if status is JobStatus.DONE and all(
        is_stored(config.output_dir / f.name, f.size) for f in state.files
    ):
        return JobEvent(state.key, JobEventKind.SKIPPED, state.prediction_id, "done")
    if status in _GAVE_UP and not config.retry_failed:
        return JobEvent(state.key, JobEventKind.SKIPPED, state.prediction_id, "failed")
    return None


async def _work(
    receive: MemoryObjectReceiveStream[tuple[Job, JobState | None]], ctx: WorkerContext
) -> None:
    async with receive:
        async for job, state in receive:
            await run_job(job, state, ctx)


async def _cancel_workers_on_request(control: RunControl, scope: CancelScope) -> None:
    await control.wait_cancel()
    scope.cancel()


async def _cut_after_grace(control: RunControl, scope: CancelScope, grace: float) -> None:
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


async def _drain_at_deadline(control: RunControl, seconds: float) -> None:
    await anyio.sleep(seconds)
    control.drain("deadline reached")


async def _cancel_in_flight(ctx: WorkerContext) -> None:
    """Cancel every prediction still running on Replicate so nothing keeps billing."""
    pending = dict(ctx.in_flight)
    log.warning("run.canceling", predictions=len(pending))

    async def cancel_one(prediction_id: str, key: str) -> None:
        try:
            await ctx.gateway.cancel(prediction_id)
        except EngineError as exc:
            log.warning("run.cancel_failed", prediction_id=prediction_id, error=str(exc))
            return
        record = JournalRecord.canceled(key, prediction_id=prediction_id, why="interrupt")
        await ctx.journal.append(record, durable=True)
        ctx.in_flight.pop(prediction_id, None)
        await ctx.emit(JobEvent(key, JobEventKind.CANCELED, prediction_id, "interrupt"))

    with anyio.CancelScope(shield=True), anyio.move_on_after(ctx.config.shutdown_grace):
        # Bounded too: a server that does not answer the cancels must not hold the exit.
        async with anyio.create_task_group() as tg:
            for prediction_id, key in pending.items():
                tg.start_soon(cancel_one, prediction_id, key)


@dataclass(slots=True)
class RunHandle:
    """A run in progress: iterate ``events``; ``summary`` is set once the run ends."""

    control: RunControl
    events: MemoryObjectReceiveStream[JobEvent]
    summary: RunSummary | None = field(default=None)


@asynccontextmanager
async def open_run(
    jobs: JobSource, config: EngineConfig, *, buffer: int = 1024
) -> AsyncIterator[RunHandle]:
    """Start a run in the background of the caller's task; yield a handle to watch it.

    ::

        async with open_run(jobs, config) as run:
            async for event in run.events:
                ...
        print(run.summary)

    Leaving the block before the run ends interrupts it (no new creates, running
    predictions journaled for the next run) and waits for it to stop.
    """
    control = RunControl()
    send, receive = anyio.create_memory_object_stream[JobEvent](buffer)
    handle = RunHandle(control=control, events=receive)

    async def forward(event: JobEvent) -> None:
        # The host may stop listening; the run itself goes on to a clean stop.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await send.send(event)

    async def drive() -> None:
        async with send:
            handle.summary = await run_jobs(jobs, config, control=control, on_event=forward)

    async with anyio.create_task_group() as tg:
        tg.start_soon(drive)
        try:
            yield handle
        finally:
            if handle.summary is None:
                control.interrupt("host left the run")
            receive.close()
