"""Carry one job through its life: create -> journal id -> wait -> download -> journal done.

The order is what makes a run safe to kill at any moment: the prediction id reaches the
journal (fsynced) before anything waits on it, and ``done`` is written only after every
output file is verified and renamed into place.
"""

from __future__ import annotations

import structlog

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
from engine._events import FOUND_AFTER_RESTART, UNANSWERED, JobEvent, JobEventKind
from engine._journal import JobState, JournalRecord
from engine._logs import get_logger
from engine._outputs import store_outputs
from engine._polling import poll
from engine._prediction import Prediction, PredictionStatus
from engine._reconcile import Lookup, settled_lookup
from engine._retry import is_permanent_failure
from engine._sidecar import store_sidecar
from engine._worker_context import WorkerContext
from jobs import (
    Job,
    JobStatus,
    OutputFile,
    input_digest,
    job_key,
)

__all__ = ["WorkerContext", "run_job"]

log = get_logger("engine.worker")

# A job the full disk left succeeded on Replicate: the run's one error line says why.
_NOT_DOWNLOADED = "not downloaded"
_PAYMENT_REQUIRED = 402  # Replicate's "insufficient credit" on a create


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
        except (AuthenticationError, ConfigError):
            raise
        except StorageError as exc:
            # The disk refused (the journal or a file): stop creating, let the others end
            # as they can, and leave this job to the next run. The run ends with its
            # summary, names what still runs, and raises this error (engine._runner).
            # Said once, as the run's error: each job only says where it was left.
            ctx.storage_refused(exc)
            running = next((p for p, j in ctx.in_flight.items() if j.key == job.key), None)
            where = "not started" if running is None else "left running"
            await ctx.emit(JobEvent(job.key, JobEventKind.DEFERRED, running, where, job=job))
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
            lookup = await self._reconcile(state)
            if not lookup.settled:
                await self._unanswered()
                return
            prediction_id = lookup.prediction_id
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
        before paying again, and is sent again only once the list has had the settle
        window to show it (`settled_lookup`). A run that stops meanwhile leaves the job
        ``creating`` for the next run to look for. At most ``call_attempts`` creates are
        tried.
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
            # Durable before sending: after a kill, this record is how the next run knows
            # to look for the prediction instead of paying for a second one. Its time is
            # the send's for the settle window, in this run as in the next.
            creating = JournalRecord.creating(
                job.key, attempt=self.attempt, input_digest=digest, content=content
            )
            sent_at = creating.ts
            await self._journal(creating, durable=True)
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
                    # Nothing was created, so nothing failed: journaled as the account's
                    # failure (no prediction, not permanent), the next run creates it, and
                    # `status` counts it pending. The run says it once (its stop reason),
                    # not once a job.
                    ctx.control.no_credit = True
                    ctx.control.drain(f"insufficient credit (402): {exc}")
                    await self._journal(self._failed(None, exc, permanent=False), durable=True)
                    await ctx.emit(
                        JobEvent(job.key, JobEventKind.DEFERRED, None, "not started", job=job)
                    )
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
                lookup = await self._find_orphan(digest, sent_at, first_uncertain)
                if not lookup.settled:
                    await self._unanswered()
                    return None
                found = lookup.prediction_id
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
        # No prediction, not the job's fault: a plain re-run creates it (`status` says
        # pending), so this run reports it left for the next one, not failed.
        await self._journal(self._failed(None, error, permanent=False), durable=True)
        await ctx.emit(JobEvent(job.key, JobEventKind.DEFERRED, None, _why(error), job=job))
        return None

    async def _find_orphan(self, digest: str, sent_at: float, since: float) -> Lookup:
        """Find (and journal) a prediction the server stored though we never saw its id.

        ``sent_at``: when the create in question was sent (unix seconds); ``since``: the
        oldest create of this job whose answer was lost.
        """
        ctx = self.ctx
        lookup = await settled_lookup(
            ctx.gateway,
            self.job.model,
            digest,
            sent_at=sent_at,
            settle=ctx.config.settle,
            control=ctx.control,
            since=since,
        )
        found = lookup.prediction_id
        if found is not None:
            log.info("job.reconciled", prediction_id=found)
            record = JournalRecord.created(self.job.key, prediction_id=found, attempt=self.attempt)
            await self._journal(record, durable=True)
        return lookup

    async def _reconcile(self, state: JobState) -> Lookup:
        """After a crash between sending a create and journaling its id, find that prediction."""
        since = state.creating_since or 0.0
        digest = state.input_digest or input_digest(self.job.input)
        return await self._find_orphan(digest, since, since)

    async def _unanswered(self) -> None:
        """Leave a create the list has not shown yet for the next run (journal: creating)."""
        job = self.job
        await self.ctx.emit(JobEvent(job.key, JobEventKind.DEFERRED, None, UNANSWERED, job=job))

    # -- wait ----------------------------------------------------------------------------

    async def _wait(self, prediction_id: str) -> Prediction | None:
        """Poll until terminal, sharing the read budget; None when the run is interrupted."""
        ctx = self.ctx
        ctx.in_flight[prediction_id] = self.job
        try:
            created, self.created = self.created, None
            prediction = await poll(ctx, prediction_id, created)
        except EngineError:
            # This run stops watching it (the next one re-attaches): exit must not cancel it.
            ctx.in_flight.pop(prediction_id, None)
            self.waiting_on = prediction_id
            raise
        return prediction

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
                files = await store_outputs(self.ctx, self.job, self.state, prediction)
            except OutputExpiredError as exc:
                # Gone from Replicate: only a new prediction can bring the files back.
                return await self._retry_or_fail(prediction.id, exc)
            except StorageError as exc:
                # The job stays "succeeded" in the journal, so the next run downloads it.
                ctx.storage_refused(exc)
                await ctx.emit(  # not failed: the next run downloads it, paid once
                    JobEvent(
                        job.key, JobEventKind.DEFERRED, prediction.id, _NOT_DOWNLOADED, job=job
                    )
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


def _maybe_stored(exc: EngineError) -> bool:
    """Tell whether a failed create may still have stored (and billed) a prediction."""
    return isinstance(exc, ServerError) or (isinstance(exc, TransportError) and exc.sent)


def _why(exc: BaseException) -> str:
    """Return ``ErrorClass: message`` for events and the report (no secrets by construction)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}"[:300]
