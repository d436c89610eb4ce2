"""Run a batch: one task group owns the producer, the workers and every resource.

Backpressure comes before spawning: a slot (one of ``concurrency``) is taken before a job
is read from the producer's memory stream, and only then is the job's task started. So
tasks exist only for jobs in hand, never more than ``concurrency`` of them (a huge
``--concurrency`` on six jobs starts six), and memory is O(in flight), never O(manifest).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from functools import partial

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine._changed import has_changed, keep_aside
from engine._config import EngineConfig
from engine._control import RunControl, Spending
from engine._download import Downloader
from engine._errors import EngineError, StorageError, one_error
from engine._events import JobEvent, JobEventKind
from engine._gateway import Gateway
from engine._http import async_library_known
from engine._journal import JobState, Journal, JournalLock, JournalRecord, load_journal
from engine._limits import Limits, PollPacer
from engine._logs import get_logger
from engine._parts import is_stored
from engine._report import RunSummary, store_report
from engine._retry import RetryPolicy
from engine._stats import RunStats
from engine._stopping import (
    cancel_in_flight,
    cancel_workers_on_request,
    cut_after_grace,
    drain_at_deadline,
)
from engine._storage import check_output_folder
from engine._sweep import Sweeper
from engine._worker import WorkerContext, run_job
from jobs import ENGINE_FILES, Job, JobStatus

__all__ = ["JobSource", "run_jobs", "run_jobs_counted"]

log = get_logger("engine.runner")

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
        JobEventKind.CHANGED,
    }
)  # CHANGED: `_changed` logs its own warning, with the files kept aside
# Steps at debug, outcomes at info: one line per finished job. The journal keeps every
# prediction id durably; the done, failed and deferred lines name theirs.
_DEBUG_EVENTS = frozenset({JobEventKind.CREATED})
# A job that ended without its outputs: logged once, here, with its reason.
_WARNING_EVENTS = frozenset({JobEventKind.FAILED, JobEventKind.DEFERRED})
# A stop's ordinary outcomes ("not downloaded": a full disk, said once as the run's error).
_QUIET_DEFERRALS = frozenset({"not started", "left running", "not downloaded"})


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

    A job's failure is in the summary; what stops the whole run is raised as one
    `EngineError` (never an exception group): `AuthenticationError` (token refused,
    401/403), `ConfigError` (e.g. a CA bundle that cannot be loaded), `StorageError`
    (an output folder or journal that cannot be written, a full disk).
    """
    return await run_jobs_counted(
        jobs, config, stats=RunStats(), control=control, on_event=on_event
    )


async def run_jobs_counted(
    jobs: JobSource,
    config: EngineConfig,
    *,
    stats: RunStats,
    control: RunControl | None = None,
    on_event: EventHook | None = None,
) -> RunSummary:
    """Run as `run_jobs` does, folding into ``stats``: a display that reads it live sees
    the bytes of each download as they arrive, not only when its file is done."""
    with async_library_known():
        try:
            return await _run(jobs, config, stats=stats, control=control, on_event=on_event)
        except BaseException as exc:
            # Task groups wrap errors in groups; a host and a person want the error.
            error = one_error(exc)
            if isinstance(error, EngineError):
                # One line, no traceback: the message says it all (our own error).
                log.error(  # noqa: TRY400
                    "run.failed", error=str(error), error_class=type(error).__name__
                )
            if error is exc:
                raise
            raise error from error.__cause__


async def _run(
    jobs: JobSource,
    config: EngineConfig,
    *,
    stats: RunStats,
    control: RunControl | None,
    on_event: EventHook | None,
) -> RunSummary:
    # Before any create: a prediction whose outputs cannot be kept is money thrown away.
    await anyio.to_thread.run_sync(check_output_folder, config.output_dir)
    # Locked before the replay: a run that replayed while another was still appending
    # would create again what the other created after the replay.
    lock = JournalLock(config.journal_path)
    await anyio.to_thread.run_sync(lock.acquire)
    try:
        return await _run_locked(jobs, config, stats=stats, control=control, on_event=on_event)
    finally:
        lock.release()


async def _run_locked(
    jobs: JobSource,
    config: EngineConfig,
    *,
    stats: RunStats,
    control: RunControl | None,
    on_event: EventHook | None,
) -> RunSummary:
    control = control or RunControl()
    spending = Spending(
        control,
        max_predictions=config.max_predictions,
        max_predict_seconds=config.max_predict_seconds,
        max_spend=config.max_spend,
        usage=stats.usage,
    )
    stats.usage.prices = config.prices
    try:
        replay = await anyio.to_thread.run_sync(load_journal, config.journal_path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StorageError(f"cannot read the journal {config.journal_path}: {reason}") from exc
    states = replay.jobs
    manifest = str(config.manifest.resolve()) if config.manifest is not None else None
    if manifest is not None and replay.manifest not in (None, manifest):
        # Keys alone do not say the jobs are the same: each job's input digest is
        # compared below, and the jobs that differ are named one by one.
        log.warning("journal.other_manifest", journal_manifest=replay.manifest, manifest=manifest)
    limits = Limits.from_config(config)
    policy = RetryPolicy.from_config(config)
    api = replace(config.api, cancel_after=config.job_timeout) if config.job_timeout else config.api

    async def emit(event: JobEvent) -> None:
        stats.record(event)
        if event.kind not in _QUIET_EVENTS:
            if event.kind in _DEBUG_EVENTS:
                emit_log = log.debug
            elif event.kind in _WARNING_EVENTS and event.detail not in _QUIET_DEFERRALS:
                emit_log = log.warning
            else:
                emit_log = log.info
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

    ctx: WorkerContext | None = None
    try:
        async with (
            Journal(
                config.journal_path,
                flush_interval=config.journal_flush_interval,
                locked=True,
                manifest=manifest,
            ) as journal,
            Gateway(api, limits, policy) as gateway,
            Downloader(
                config.api, chunk_size=config.download_chunk_size, retry=policy
            ) as downloader,
        ):
            stats.retry_counters += [gateway.retries, downloader.retries]  # read live
            stats.create_rate = lambda: limits.create.rate_per_min  # lowered by low credit
            sweeper = Sweeper(
                gateway,
                limits.read,
                control,
                min_interval=config.poll_interval,
                lag_bound=4 * config.poll_interval,
            )
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
                sweeper=sweeper,
            )
            send, receive = anyio.create_memory_object_stream[tuple[Job, JobState | None]](
                config.concurrency
            )
            counted = anyio.Event()  # the producer reached the manifest's end
            async with anyio.create_task_group() as outer:
                workers_scope = CancelScope()
                outer.start_soon(
                    partial(_produce, jobs, states, config, ctx, send, counted=counted)
                )
                outer.start_soon(cancel_workers_on_request, control, workers_scope)
                outer.start_soon(cut_after_grace, control, workers_scope, config.shutdown_grace)
                outer.start_soon(sweeper.run)
                if config.deadline is not None:
                    outer.start_soon(drain_at_deadline, control, config.deadline)
                with workers_scope:
                    await _dispatch(receive, ctx)
                # After a stop the producer counts the jobs it no longer sends (no awaits but
                # their skips): the report's rows then add up to the manifest's jobs.
                await counted.wait()
                outer.cancel_scope.cancel()  # the producer is done; the watchers have no work left
            if control.cancel_requested and ctx.in_flight:
                await cancel_in_flight(ctx)
    except StorageError as exc:
        # The journal refused a write and said so again as it closed: the workers already
        # drained the run on it, so the run ends with its summary, then raises (below).
        if ctx is None:
            raise
        if ctx.storage_error is None:
            ctx.storage_error = exc

    at_start = (replay.runs, replay.created, len(states))
    # The replayed states of a long journal are the biggest thing alive: free them before
    # the summary and the report add their own peak.
    del replay, states
    summary = stats.summary(
        predict_seconds=spending.predict_seconds,
        throttled_429=limits.create.throttled + limits.read.throttled,
        throttled_seconds=limits.create.throttled_seconds + limits.read.throttled_seconds,
        interrupted=control.interrupted,
        stopped_reason=control.stop_reason,
        journal_at_start=at_start,
        output_dir=str(config.output_dir.resolve()),
        journal=str(config.journal_path.resolve()),
        stopped_by_limit=control.limit_reached,
        stopped_by_credit=control.no_credit,
        partition=True,  # every job of the manifest is in ``total``
        storage_error=None if ctx.storage_error is None else str(ctx.storage_error),
    )
    # The ids of failed jobs are in report.json; one log line holds only their count.
    numbers = summary.to_json()
    numbers["failed_keys"] = len(summary.failed_keys)
    numbers["failed_links"] = len(summary.failed_links)
    for many in ("changed_keys", "stale_keys"):
        numbers[many] = len(numbers[many])
    numbers.pop("billing", None)  # a table: report.json and the summary show it
    for name, value in numbers.pop("totals", {}).items():  # flat: a line, not a dict repr
        numbers[f"total_{name}"] = value
    for name, value in numbers.pop("retries", {}).items():
        numbers[f"retries_{name}"] = value
    for name, value in numbers.items():
        if isinstance(value, float):
            numbers[name] = round(value, 3)
    if ctx.storage_error is not None:
        # The disk refused: the report may not fit either, and the run ends with the error.
        with contextlib.suppress(OSError):
            await store_report(summary, config.output_dir / ENGINE_FILES.report)
        log.info("run.finished", **numbers)
        ctx.storage_error.summary = summary  # the CLI still shows what the run did
        raise ctx.storage_error
    await store_report(summary, config.output_dir / ENGINE_FILES.report)
    log.info("run.finished", **numbers)
    return summary


async def _produce(
    jobs: JobSource,
    states: Mapping[str, JobState],
    config: EngineConfig,
    ctx: WorkerContext,
    send: MemoryObjectSendStream[tuple[Job, JobState | None]],
    *,
    counted: anyio.Event,
) -> None:
    """Feed jobs to the workers: resumable ones first, finished ones skipped.

    Once the run stops creating (or the workers are gone), the rest of the manifest is
    only counted: a skipped job as skipped, any other as not started (the summary's
    rows partition every job of the manifest, not only those reached before the stop).
    """
    stats = ctx.stats
    sending = True
    try:
        async with send:
            for job in _ordered(jobs, states):
                state = states.get(job.key)
                stats.journaled_seen += state is not None
                if config.only and job.key not in config.only:
                    continue
                stats.total += 1
                sending = sending and not ctx.control.stop_creating
                if not sending:
                    # Not started: counted by the summary as the jobs that did not end.
                    # Counting a long rest reads the manifest: let a next Ctrl-C be heard.
                    if stats.total % 1024 == 0:
                        await anyio.lowlevel.checkpoint()
                    if state is not None and not (job.explicit_id and has_changed(job, state)):
                        skipped = _skipped(job, state, config)
                        if skipped is not None:
                            await ctx.emit(skipped)
                    continue
                if state is not None and job.explicit_id and has_changed(job, state):
                    state = await _changed(job, state, config, ctx)
                skipped = None if state is None else _skipped(job, state, config)
                if skipped is not None:
                    await ctx.emit(skipped)
                    continue
                try:
                    await send.send((job, state))
                except anyio.BrokenResourceError:
                    sending = False  # the workers were stopped (a cancel, a hurried exit)
            stats.read_all_jobs = True
    finally:
        counted.set()


async def _changed(
    job: Job, state: JobState, config: EngineConfig, ctx: WorkerContext
) -> JobState | None:
    """Act on a job whose model or input changed: the state to go on with (None: afresh)."""
    if config.on_changed == "report":
        log.warning("job.changed", job=job.key, action="report", status=str(state.status))
        await ctx.emit(JobEvent(job.key, JobEventKind.CHANGED, state.prediction_id, "report"))
        return state
    if state.status is JobStatus.RUNNING and state.prediction_id:
        await _cancel_replaced(job.key, state.prediction_id, ctx)
    kept = await anyio.to_thread.run_sync(keep_aside, config.output_dir, state)
    log.warning("job.changed", job=job.key, action="rerun", kept_aside=kept or None)
    detail = "rerun; old outputs kept as " + ", ".join(kept) if kept else "rerun"
    await ctx.emit(JobEvent(job.key, JobEventKind.CHANGED, state.prediction_id, detail))
    return None


async def _cancel_replaced(key: str, prediction_id: str, ctx: WorkerContext) -> None:
    """Cancel the prediction a changed job left running: nobody wants its input any more.

    A run killed while it waited leaves the prediction running (and billing); the job now
    asks for something else, so its output would never be fetched. If the cancel fails
    the prediction ends on its own (or at its Cancel-After); the rerun goes on.
    """
    try:
        await ctx.gateway.cancel(prediction_id)
    except EngineError as exc:
        log.warning("job.cancel_failed", job=key, prediction_id=prediction_id, error=str(exc))
        return
    record = JournalRecord.canceled(key, prediction_id=prediction_id, why="input changed")
    await ctx.journal.append(record, durable=True)


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


def _skipped(job: Job, state: JobState, config: EngineConfig) -> JobEvent | None:
    """Return the SKIPPED event when the journal says there is nothing to do, else None."""
    # Plain, not async: a resume decides this for a million jobs before its first create.
    # The replay's key, not the manifest's equal copy: the report keeps skipped failed keys.
    status = state.status
    if status is JobStatus.DONE and all(
        is_stored(config.output_dir / f.name, f.size) for f in state.files
    ):
        return JobEvent(state.key, JobEventKind.SKIPPED, state.prediction_id, "done", job=job)
    if status in _GAVE_UP and not config.retry_failed and not _not_the_jobs_fault(state):
        # "failed" or "canceled": each is reported as what the journal says it is.
        detail = "canceled" if status is JobStatus.CANCELED else "failed"
        return JobEvent(state.key, JobEventKind.SKIPPED, state.prediction_id, detail, job=job)
    return None


def _not_the_jobs_fault(state: JobState) -> bool:
    """Tell whether a failure was about the account or the network, not the job.

    Such a job never got a prediction (the create itself was refused: 402 insufficient
    credit, connection refused, 5xx or 429 past every retry), and the failure was not
    permanent. A plain re-run creates it again once the credit or the network is back;
    ``--retry-failed`` is for jobs whose prediction failed. Read from fields every
    journal has, so journals written before this rule are read by it too.
    """
    return state.status is JobStatus.FAILED and state.prediction_id is None and not state.permanent


async def _dispatch(
    receive: MemoryObjectReceiveStream[tuple[Job, JobState | None]], ctx: WorkerContext
) -> None:
    """Start one task per job received, each after taking one of ``concurrency`` slots.

    The slot comes first: a job is read from the stream only when it can start, so the
    producer waits (backpressure) and no task exists for a job not in hand.
    """
    slots = anyio.Semaphore(ctx.config.concurrency)
    async with anyio.create_task_group() as workers, receive:
        while True:
            await slots.acquire()
            try:
                job, state = await receive.receive()
            except anyio.EndOfStream:
                slots.release()
                return
            workers.start_soon(_work, job, state, ctx, slots)


async def _work(
    job: Job, state: JobState | None, ctx: WorkerContext, slot: anyio.Semaphore
) -> None:
    try:
        await run_job(job, state, ctx)
    finally:
        slot.release()
