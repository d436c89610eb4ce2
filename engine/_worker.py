"""Carry one job through its life: create -> journal id -> wait -> download -> journal done.

The order is what makes a run safe to kill at any moment: the prediction id reaches the
journal (fsynced) before anything waits on it, and ``done`` is written only after every
output file is verified and renamed into place.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import anyio
import structlog

from engine._config import EngineConfig
from engine._control import RunControl, Spending
from engine._download import Downloader
from engine._durable import GroupCommit
from engine._errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    DownloadError,
    EngineError,
    InputFileError,
    InvalidRequestError,
    ModelError,
    OutputExpiredError,
    ServerError,
    StorageError,
    TransportError,
)
from engine._events import FOUND_AFTER_RESTART, JobEvent, JobEventKind
from engine._gateway import Gateway
from engine._journal import JobState, Journal, JournalRecord
from engine._limits import PollPacer
from engine._logs import get_logger
from engine._metadata import embed_output_metadata
from engine._parts import check_folders, is_stored
from engine._prediction import Prediction, PredictionStatus
from engine._reconcile import find_created_prediction
from engine._retry import is_permanent_failure
from engine._sidecar import store_sidecar
from engine._stats import RunStats
from engine._sweep import Sweeper, Watch
from jobs import (
    Job,
    JobStatus,
    OutputFile,
    input_digest,
    job_key,
    normalise_output,
    plan_outputs,
)

__all__ = ["WorkerContext", "run_job"]

log = get_logger("engine.worker")

_PAYMENT_REQUIRED = 402  # Replicate's "insufficient credit" on a create


@dataclass(slots=True)
class WorkerContext:
    """What every worker shares: gateway, downloader, journal, pacer, control and counters.

    ``sweeper`` notices completions from the prediction list when many are in flight; a
    context without one (a cluster worker: the list sweep is one process's view of the
    account) polls every prediction on its own.
    """

    config: EngineConfig
    gateway: Gateway
    downloader: Downloader
    journal: Journal
    pacer: PollPacer
    control: RunControl
    stats: RunStats
    emit: Callable[[JobEvent], Awaitable[None]]
    spending: Spending
    sweeper: Sweeper | None = None
    in_flight: dict[str, Job] = field(default_factory=dict)  # prediction id -> job
    # The first disk refusal: the run drains, then ends with it (a whole-run error).
    storage_error: StorageError | None = None
    sidecars: GroupCommit = field(default_factory=GroupCommit)  # their fsyncs share hops


async def run_job(job: Job, state: JobState | None, ctx: WorkerContext) -> None:
    """Run ``job`` to a final state, resuming from its journaled ``state``.

    An API or network error that outlasted its retries ends only this job, as deferred:
    the journal keeps what it knew, so the next run picks the job up where it stood. Errors
    that concern the whole run (bad token or configuration, a journal that cannot be
    written) stop the run.
    """
    with structlog.contextvars.bound_contextvars(job=job.key):
        lifecycle = _Lifecycle(job, state, ctx)
        try:
            await lifecycle.run()
        except (AuthenticationError, ConfigError, StorageError):
            raise
        except EngineError as exc:
            prediction_id = lifecycle.waiting_on
            # Logged once, by the runner's event hook (job.deferred with the reason).
            await ctx.emit(
                JobEvent(job.key, JobEventKind.DEFERRED, prediction_id, _why(exc), job=job)
            )


class _Lifecycle:
    """The state machine of one job within one run."""

    def __init__(self, job: Job, state: JobState | None, ctx: WorkerContext) -> None:
        self.job = job
        self.state = state
        self.ctx = ctx
        self.attempt = state.attempts if state else 0  # numbering continues across runs
        self.tries = 0  # predictions created by this run, for --max-retries
        # The create's answer is the first poll: a fast model may already be done.
        self.created: Prediction | None = None
        self.waiting_on: str | None = None  # the prediction whose wait failed, if one did

    async def run(self) -> None:
        ctx, job, state = self.ctx, self.job, self.state
        prediction_id = self._resumable_prediction()
        how = ""
        if prediction_id is None and state is not None and state.status is JobStatus.CREATING:
            prediction_id = await self._reconcile(state)
            how = FOUND_AFTER_RESTART  # paid by the killed run, journaled only now
        while True:
            if prediction_id is None:
                prediction_id = await self._create()
                if prediction_id is None:
                    return
            else:
                await ctx.emit(
                    JobEvent(job.key, JobEventKind.REATTACHED, prediction_id, how, job=job)
                )
                how = ""
            try:
                prediction = await self._wait(prediction_id)
            except InvalidRequestError as exc:
                if exc.status != 404:
                    raise
                # Unknown to this account (another token, a restarted emulator): its
                # outputs can never be had. Like an expired output, only a new prediction
                # brings them back.
                log.warning("job.prediction_not_found", prediction_id=prediction_id)
                self.waiting_on = None  # given up for good, not left for the next run
                if not await self._retry_or_fail(prediction_id, exc):
                    return
                prediction_id = None
                continue
            if prediction is None:
                await ctx.emit(
                    JobEvent(job.key, JobEventKind.DEFERRED, prediction_id, "left running", job=job)
                )
                return
            if not await self._finish(prediction):
                return
            prediction_id = None

    def _resumable_prediction(self) -> str | None:
        state = self.state
        if state is None or state.prediction_id is None:
            return None
        if state.status in (JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.DONE):
            return state.prediction_id
        return None

    async def _journal(self, record: JournalRecord, *, durable: bool = False) -> None:
        await self.ctx.journal.append(record, durable=durable)

    # -- create --------------------------------------------------------------------------

    async def _create(self) -> str | None:
        """Create a prediction and journal its id durably; None when it cannot be had.

        A create that failed in a way that may have stored the prediction (a 5xx, a
        connection lost after sending) is followed by a look at the prediction list
        before paying again. At most ``call_attempts`` creates are tried.
        """
        ctx, job = self.ctx, self.job
        digest = input_digest(job.input)
        # An explicit id stays when the model or input changes: record what it asked for.
        content = job_key(job.model, job.input) if job.explicit_id else None
        first_uncertain: float | None = None
        error: EngineError | None = None
        for _ in range(ctx.config.call_attempts):
            if ctx.control.stop_creating or not ctx.spending.reserve_create():
                await ctx.emit(
                    JobEvent(job.key, JobEventKind.DEFERRED, None, "not started", job=job)
                )
                return None
            self.attempt += 1
            self.tries += 1
            sent_at = time.time()
            # Durable before sending: after a kill, this record is how the next run knows
            # to look for the prediction instead of paying for a second one.
            await self._journal(
                JournalRecord.creating(
                    job.key, attempt=self.attempt, input_digest=digest, content=content
                ),
                durable=True,
            )
            await ctx.emit(JobEvent(job.key, JobEventKind.CREATING, job=job))
            try:
                prediction = await ctx.gateway.create(job.model, job.input)
            except (AuthenticationError, ConfigError):
                raise  # the whole run is misconfigured: stop it, loudly and early
            except InputFileError as exc:
                await self._fail(None, exc, permanent=True)  # the file, not the service
                return None
            except (ApiError, TransportError) as exc:
                if isinstance(exc, ApiError) and exc.status == _PAYMENT_REQUIRED:
                    # The account, not the job: every create would be refused alike. Stop
                    # creating; journaled as not permanent, the next run creates it again.
                    ctx.control.drain(f"insufficient credit: {exc}")
                    await self._fail(None, exc, permanent=False)
                    return None
                if isinstance(exc, ApiError) and exc.permanent:
                    await self._fail(None, exc, permanent=True)
                    return None
                if not _maybe_stored(exc):
                    # Never accepted, and the gateway already retried it as long as its
                    # class allows (a network down, a 429 that lasts): the next run tries
                    # again; retrying here would only multiply the wait.
                    await ctx.emit(
                        JobEvent(job.key, JobEventKind.DEFERRED, None, _why(exc), job=job)
                    )
                    return None
                first_uncertain = first_uncertain or sent_at
                found = await self._find_orphan(digest, first_uncertain)
                if found is not None:
                    # Created (and paid) by this run: its answer was lost, not its work.
                    await ctx.emit(
                        JobEvent(job.key, JobEventKind.CREATED, found, "found by listing", job=job)
                    )
                    return found
                await ctx.emit(JobEvent(job.key, JobEventKind.RETRYING, None, _why(exc), job=job))
                error = exc
                continue
            # In flight from this moment: a Ctrl-C that lands while the id is being
            # journaled must still cancel this prediction on exit.
            ctx.in_flight[prediction.id] = job
            await self._journal(
                JournalRecord.created(job.key, prediction_id=prediction.id, attempt=self.attempt),
                durable=True,
            )
            await ctx.emit(JobEvent(job.key, JobEventKind.CREATED, prediction.id, job=job))
            self.created = prediction
            return prediction.id
        assert error is not None  # the loop only falls through after an error
        await self._fail(None, error, permanent=False)
        return None

    async def _find_orphan(self, digest: str, since: float) -> str | None:
        """Find (and journal) a prediction the server stored though we never saw its id."""
        found = await find_created_prediction(self.ctx.gateway, self.job.model, digest, since)
        if found is not None:
            log.info("job.reconciled", prediction_id=found)
            record = JournalRecord.created(self.job.key, prediction_id=found, attempt=self.attempt)
            await self._journal(record, durable=True)
        return found

    async def _reconcile(self, state: JobState) -> str | None:
        """After a crash between sending a create and journaling its id, find that prediction."""
        since = state.creating_since or 0.0
        digest = state.input_digest or input_digest(self.job.input)
        return await self._find_orphan(digest, since)

    # -- wait ----------------------------------------------------------------------------

    async def _wait(self, prediction_id: str) -> Prediction | None:
        """Poll until terminal, sharing the read budget; None when the run is interrupted."""
        ctx = self.ctx
        ctx.in_flight[prediction_id] = self.job
        try:
            prediction = await self._poll(prediction_id)
        except EngineError:
            # This run stops watching it (the next one re-attaches): exit must not cancel it.
            ctx.in_flight.pop(prediction_id, None)
            self.waiting_on = prediction_id
            raise
        return prediction

    async def _poll(self, prediction_id: str) -> Prediction | None:
        """Ask for the prediction until terminal, or wait for the list sweep to see it end.

        While the sweep covers the prediction (many in flight) this worker sends nothing:
        it wakes when the sweep delivers the terminal prediction, or asks for one GET
        (the list lacked the output, or has missed the prediction for too long).
        """
        ctx = self.ctx
        started = time.monotonic()
        timeout = ctx.config.job_timeout
        watching = (
            ctx.sweeper.watch(prediction_id)
            if ctx.sweeper is not None
            else contextlib.nullcontext(None)
        )
        with ctx.pacer.track(), watching as watch:
            while True:
                known, self.created = self.created, None
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
                await self._wait_for_news(watch, age)

    async def _wait_for_news(self, watch: Watch | None, age: float) -> None:
        """Sleep out the poll interval, or until the sweep (or the run's state) has news."""
        ctx = self.ctx
        timeout = ctx.config.job_timeout
        if watch is None:
            with anyio.move_on_after(ctx.pacer.interval(age)):
                await ctx.control.wait_changed()
            return
        if watch.covered:
            wait = math.inf if timeout is None else timeout - age + ctx.pacer.min_interval
        else:
            wait = ctx.pacer.interval(age)
        with anyio.move_on_after(wait):
            await watch.wait()

    # -- finish --------------------------------------------------------------------------

    async def _finish(self, prediction: Prediction) -> bool:
        """Handle a terminal prediction; return True when a new attempt should follow."""
        ctx, job = self.ctx, self.job
        ctx.spending.add_predict_time(prediction.predict_time)
        ctx.spending.add_usage(job, prediction)
        if prediction.status is PredictionStatus.SUCCEEDED:
            await self._journal(
                JournalRecord.succeeded(
                    job.key,
                    prediction_id=prediction.id,
                    outputs=None,
                    predict_time=prediction.predict_time,
                )
            )
            await ctx.emit(JobEvent(job.key, JobEventKind.SUCCEEDED, prediction.id, job=job))
            try:
                files = await self._download(prediction)
            except OutputExpiredError as exc:
                # Gone from Replicate: only a new prediction can bring the files back.
                return await self._retry_or_fail(prediction.id, exc)
            except StorageError as exc:
                # The disk refuses: creating more would pay for outputs we cannot keep.
                # The job stays "succeeded" in the journal, so the next run downloads it.
                if ctx.storage_error is None:
                    ctx.storage_error = exc
                ctx.control.drain(f"storage error: {exc}")
                await ctx.emit(
                    JobEvent(job.key, JobEventKind.FAILED, prediction.id, _why(exc), job=job)
                )
                return False
            except DownloadError as exc:
                # Still on Replicate: stay "succeeded" so the next run fetches it, paid once.
                await ctx.emit(
                    JobEvent(job.key, JobEventKind.FAILED, prediction.id, _why(exc), job=job)
                )
                return False
            # After the files, before done: a run killed in between writes it on resume.
            await self._sidecar(prediction, files)
            await self._journal(
                JournalRecord.done(
                    job.key, prediction_id=prediction.id, predict_time=prediction.predict_time
                ),
                durable=True,
            )
            total = sum(f.size for f in files)
            await ctx.emit(
                JobEvent(
                    job.key,
                    JobEventKind.DONE,
                    prediction.id,
                    size=total,
                    job=job,
                    files=tuple(files),
                )
            )
            return False
        await self._sidecar(prediction)  # failed or canceled: the error and logs, no files
        if prediction.status is PredictionStatus.FAILED:
            permanent = is_permanent_failure(prediction.error)
            error = ModelError(prediction, permanent=permanent)
            if permanent:
                await self._fail(prediction.id, error, permanent=True)
                return False
            return await self._retry_or_fail(prediction.id, error)
        # canceled or aborted: by us (timeout) or on Replicate; either way not retried blindly
        why = "timeout" if ctx.config.job_timeout else "canceled"
        await self._journal(
            JournalRecord.canceled(job.key, prediction_id=prediction.id, why=why), durable=True
        )
        await ctx.emit(JobEvent(job.key, JobEventKind.CANCELED, prediction.id, why, job=job))
        return False

    async def _sidecar(self, prediction: Prediction, files: list[OutputFile] | None = None) -> None:
        if self.ctx.config.sidecars:
            ctx = self.ctx
            await store_sidecar(
                ctx.sidecars, ctx.config.output_dir, self.job, prediction, files or ()
            )

    async def _retry_or_fail(self, prediction_id: str | None, exc: Exception) -> bool:
        if self.tries <= self.ctx.config.prediction_retries and not self.ctx.control.stop_creating:
            await self._journal(self._failed(prediction_id, exc, permanent=False))
            await self.ctx.emit(
                JobEvent(
                    self.job.key, JobEventKind.RETRYING, prediction_id, _why(exc), job=self.job
                )
            )
            return True
        await self._fail(prediction_id, exc, permanent=False)
        return False

    async def _fail(self, prediction_id: str | None, exc: Exception, *, permanent: bool) -> None:
        await self._journal(self._failed(prediction_id, exc, permanent=permanent), durable=True)
        await self.ctx.emit(
            JobEvent(self.job.key, JobEventKind.FAILED, prediction_id, _why(exc), job=self.job)
        )

    def _failed(
        self, prediction_id: str | None, exc: Exception, *, permanent: bool
    ) -> JournalRecord:
        return JournalRecord.failed(
            self.job.key,
            prediction_id=prediction_id,
            error=str(exc),
            error_class=type(exc).__name__,
            permanent=permanent,
            attempt=self.attempt,
        )

    # -- download ------------------------------------------------------------------------

    async def _download(self, prediction: Prediction) -> list[OutputFile]:
        """Store every output, skipping files already verified on disk by an earlier run."""
        ctx, job = self.ctx, self.job
        items = normalise_output(prediction.output)
        if not items and prediction.data_removed:
            raise OutputExpiredError(f"outputs of prediction {prediction.id} were removed")
        planned = plan_outputs(job, items)  # names, and local names inside JSON documents
        have = {f.name: f for f in (self.state.files if self.state else ())}
        stored: list[OutputFile] = []
        for item, name in ((p.item, p.name) for p in planned):
            dest = ctx.config.output_dir / name
            if "/" in name:
                check_folders(ctx.config.output_dir, name)
            known = have.get(name)
            if known is not None and is_stored(dest, known.size):
                # The journal keeps no URL: this prediction's is the file's source.
                stored.append(replace(known, url=item.url))
                continue
            started = time.monotonic()
            arrived = _Arrived(ctx.stats)
            try:
                if item.url is not None:
                    result = await ctx.downloader.fetch(item.url, dest, name=name, progress=arrived)
                else:
                    result = await ctx.downloader.write_inline(item.text or "", dest, name=name)
            finally:
                arrived.settle()  # DOWNLOADED counts the verified file instead
            size, sha256 = result.size, result.sha256
            if ctx.config.embed_metadata:  # before the file is journaled: its final hash
                size, sha256 = await embed_output_metadata(dest, job, prediction, (size, sha256))
            stored_file = OutputFile(name, size, sha256, item.url, result.content_type)
            ctx.stats.download_seconds.append(time.monotonic() - started)
            await self._journal(
                JournalRecord.file(job.key, output=stored_file, prediction_id=prediction.id)
            )
            await ctx.emit(
                JobEvent(
                    job.key, JobEventKind.DOWNLOADED, prediction.id, name, result.size, job=job
                )
            )
            stored.append(stored_file)
        return stored


class _Arrived:
    """Count one file's bytes as they arrive, into the run's stats (from any thread)."""

    __slots__ = ("count", "stats")

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.count = 0  # one transfer at a time per file: no lock needed for this one

    def __call__(self, size: int) -> None:
        self.count += size
        self.stats.add_arriving(size)

    def settle(self) -> None:
        self.stats.add_arriving(-self.count)
        self.count = 0


def _maybe_stored(exc: EngineError) -> bool:
    """Tell whether a failed create may still have stored (and billed) a prediction."""
    return isinstance(exc, ServerError) or (isinstance(exc, TransportError) and exc.sent)


def _why(exc: BaseException) -> str:
    """Return ``ErrorClass: message`` for events and the report (no secrets by construction)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300]
