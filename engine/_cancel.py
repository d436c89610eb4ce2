"""Cancel the predictions a journal shows as still running, so nothing keeps billing.

After a crash, a ``kill -9`` or a Ctrl-C that left predictions running, the journal still
holds their ids (each is journaled before anything waits on it). `still_running` lists
them from the journal alone; `cancel_running` cancels each on Replicate and journals it
``canceled``, so a re-run skips it as it skips any canceled job (``--retry-failed`` runs
it again). A prediction that finished meanwhile is left as it is: the next run
re-attaches it and downloads its outputs, paid once.

A create sent without an answer (the journal shows the job ``creating``) may have stored
a prediction that runs and bills with no id journaled. `find_unanswered` looks for each
in the prediction list, as a run's reconcile does (`engine/_reconcile.py`, believing an
absence only after the settle window), and journals the ones it finds as ``created``
so that they can be canceled like the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from engine._config import EngineConfig
from engine._errors import EngineError
from engine._gateway import Gateway
from engine._journal import Journal, JournalRecord, Replay
from engine._limits import Limits
from engine._logs import get_logger
from engine._prediction import PredictionStatus, web_url
from engine._reconcile import settled_lookup
from engine._retry import RetryPolicy
from jobs import JobStatus

__all__ = [
    "CancelOutcome",
    "Running",
    "cancel_running",
    "still_running",
    "uncertain_creates",
]

log = get_logger("engine.cancel")

CANCEL_WHY = "cancel command"  # the journal's reason, read by ``status``
_FINISHED = frozenset({PredictionStatus.SUCCEEDED, PredictionStatus.FAILED})


@dataclass(frozen=True, slots=True, order=True)
class Running:
    """One job's prediction the journal shows as still running."""

    key: str
    prediction_id: str

    @property
    def url(self) -> str:
        """Return the prediction's web page."""
        return web_url(self.prediction_id)


@dataclass(slots=True)
class CancelOutcome:
    """What `cancel_running` did, prediction by prediction."""

    canceled: list[Running] = field(default_factory=list)
    finished: list[tuple[Running, str]] = field(default_factory=list)  # and its status
    failed: list[tuple[Running, str]] = field(default_factory=list)  # and the error
    # Creates sent without an answer: found by listing (then canceled like the rest), or
    # absent from the list after the settle window (never stored: nothing bills).
    found: list[Running] = field(default_factory=list)
    not_stored: int = 0


def still_running(replay: Replay) -> list[Running]:
    """Return the journaled predictions that were running when the journal was last written."""
    return sorted(
        Running(state.key, state.prediction_id)
        for state in replay.jobs.values()
        if state.status is JobStatus.RUNNING and state.prediction_id is not None
    )


def uncertain_creates(replay: Replay) -> int:
    """Count creates in flight at a crash: no id known; the next run finds them by listing."""
    return sum(state.status is JobStatus.CREATING for state in replay.jobs.values())


async def cancel_running(
    config: EngineConfig, running: list[Running], replay: Replay | None = None
) -> CancelOutcome:
    """Cancel each of ``running`` on Replicate; journal the canceled ones durably.

    With ``replay``, its jobs left ``creating`` are first looked for by listing, and the
    predictions found are journaled ``created`` and canceled too.
    """
    outcome = CancelOutcome()
    running = list(running)
    limits = Limits.from_config(config)
    slots = anyio.CapacityLimiter(config.concurrency)
    async with (
        Journal(config.journal_path, flush_interval=config.journal_flush_interval) as journal,
        Gateway(config.api, limits, RetryPolicy.from_config(config)) as gateway,
    ):
        if replay is not None:
            await _find_unanswered(config, replay, gateway, journal, outcome)
            running += outcome.found

        async def cancel_one(item: Running) -> None:
            async with slots:
                try:
                    prediction = await gateway.cancel(item.prediction_id)
                except EngineError as exc:
                    log.warning(
                        "prediction.cancel_failed",
                        job=item.key,
                        prediction_id=item.prediction_id,
                        error=str(exc),
                    )
                    outcome.failed.append((item, str(exc)))
                    return
            if prediction.status in _FINISHED:
                # Too late to cancel: it is paid; the next run fetches (or records) it.
                outcome.finished.append((item, str(prediction.status)))
                return
            record = JournalRecord.canceled(
                item.key, prediction_id=item.prediction_id, why=CANCEL_WHY
            )
            await journal.append(record, durable=True)
            log.info("prediction.canceled", job=item.key, prediction_id=item.prediction_id)
            outcome.canceled.append(item)

        async with anyio.create_task_group() as tg:
            for item in running:
                tg.start_soon(cancel_one, item)
    outcome.canceled.sort()
    outcome.finished.sort()
    outcome.failed.sort()
    return outcome


async def _find_unanswered(
    config: EngineConfig,
    replay: Replay,
    gateway: Gateway,
    journal: Journal,
    outcome: CancelOutcome,
) -> None:
    """Look for the prediction of each create the journal shows sent without an answer.

    The journal does not name the model of a create, so a prediction matches by input
    digest and creation time alone; the ids the journal already gives other jobs are
    never taken. Each lookup may wait out its settle window (`EngineConfig.settle`).
    """
    known = {s.prediction_id for s in replay.jobs.values() if s.prediction_id}
    creating = sorted(
        (s for s in replay.jobs.values() if s.status is JobStatus.CREATING and s.input_digest),
        key=lambda s: -(s.creating_since or 0.0),
    )
    # One after another, newest first: a prediction found for one job is never taken for
    # the next, and once the newest create's window has been waited out, so have the rest.
    for state in creating:
        assert state.input_digest is not None  # filtered above
        lookup = await settled_lookup(
            gateway,
            None,
            state.input_digest,
            sent_at=state.creating_since or 0.0,
            settle=config.settle,
            exclude=frozenset(known),
        )
        found = lookup.prediction_id
        if found is None:
            outcome.not_stored += 1
            continue
        known.add(found)
        record = JournalRecord.created(state.key, prediction_id=found, attempt=state.attempts)
        await journal.append(record, durable=True)
        log.info("prediction.found_by_listing", job=state.key, prediction_id=found)
        outcome.found.append(Running(state.key, found))
