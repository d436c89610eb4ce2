"""Cancel the predictions a journal shows as still running, so nothing keeps billing.

After a crash, a ``kill -9`` or a Ctrl-C that left predictions running, the journal still
holds their ids (each is journaled before anything waits on it). `still_running` lists
them from the journal alone; `cancel_running` cancels each on Replicate and journals it
``canceled``, so a re-run skips it as it skips any canceled job (``--retry-failed`` runs
it again). A prediction that finished meanwhile is left as it is: the next run
re-attaches it and downloads its outputs, paid once.
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
from engine._retry import RetryPolicy
from jobs import JobStatus

__all__ = ["CancelOutcome", "Running", "cancel_running", "still_running", "uncertain_creates"]

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


async def cancel_running(config: EngineConfig, running: list[Running]) -> CancelOutcome:
    """Cancel each of ``running`` on Replicate; journal the canceled ones durably."""
    outcome = CancelOutcome()
    limits = Limits.from_config(config)
    slots = anyio.CapacityLimiter(config.concurrency)
    async with (
        Journal(config.journal_path, flush_interval=config.journal_flush_interval) as journal,
        Gateway(config.api, limits, RetryPolicy.from_config(config)) as gateway,
    ):

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
