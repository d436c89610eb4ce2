"""Make a `ReplicateClient`'s prediction calls on its loop: create, wait and list.

A create whose answer was lost is reconciled (found, not paid for twice); a wait polls to a
terminal state and raises our errors; a listing reads as many pages as ``limit`` takes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from engine._config import SETTLE_SECONDS
from engine._errors import (
    ConfigError,
    EngineError,
    ModelError,
    PredictionCanceledError,
    PredictionMayExistError,
    PredictionTimeoutError,
    ServerError,
    TransportError,
)
from engine._gateway import Gateway, PredictionPage
from engine._logs import get_logger
from engine._prediction import Prediction, PredictionStatus
from engine._reconcile import settled_lookup
from engine._retry import is_permanent_failure
from jobs import ModelRef, input_digest

__all__ = [
    "CreatedIds",
    "create",
    "list_predictions",
    "prediction_id",
    "settle",
    "wait",
    "webhook_events",
]

log = get_logger("engine.client")

_REMEMBERED = 10_000


class CreatedIds:
    """The ids a client created (newest last, bounded), touched only on its loop.

    A lost create's look-up must not mistake an earlier run of the same input for it.
    """

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}

    def __contains__(self, prediction_id: object) -> bool:
        return prediction_id in self._ids

    def remember(self, prediction_id: str) -> None:
        """Record a prediction this client created (called on the loop)."""
        self._ids[prediction_id] = None
        if len(self._ids) > _REMEMBERED:
            del self._ids[next(iter(self._ids))]


async def create(
    gateway: Gateway,
    created: CreatedIds,
    ref: ModelRef,
    input: Mapping[str, Any],
    *,
    attempts: int,
    settle: float = SETTLE_SECONDS,
    **params: Any,
) -> Prediction:
    """Create once, finding a prediction whose answer was lost instead of paying twice.

    A 5xx or a connection cut after sending may hide a stored prediction: the list
    is searched (model, input digest, creation window) before creating again, and an
    absence is believed only ``settle`` seconds after the send (the list can lag: see
    `engine._reconcile`). When the list cannot be read, `PredictionMayExistError` says
    so and identifies it.
    """
    digest = input_digest(input)
    first_sent: float | None = None
    error: EngineError | None = None
    for _ in range(attempts):
        sent_at = time.time()
        try:
            prediction = await gateway.create(ref, input, **params)
        except (ServerError, TransportError) as exc:
            if isinstance(exc, TransportError) and not exc.sent:
                raise  # provably never arrived; the gateway already retried it
            first_sent = first_sent or sent_at
            error = exc
        else:
            created.remember(prediction.id)
            return prediction
        try:
            lookup = await settled_lookup(
                gateway, ref, digest, sent_at=sent_at, settle=settle, since=first_sent
            )
            found = lookup.prediction_id
        except EngineError as lookup:
            log.warning("client.create_unknown", model=str(ref), error=str(lookup))
            raise PredictionMayExistError(str(ref), digest, first_sent, str(error)) from error
        # The newest match is the lost create's, unless it is one we already had:
        # then the lost one was never stored.
        if found is not None and found not in created:
            log.info("client.create_found", model=str(ref), prediction_id=found)
            created.remember(found)
            return await gateway.get(found)
        log.info("client.create_not_stored", model=str(ref), error=str(error))
    assert error is not None
    raise error


async def settle(
    gateway: Gateway, prediction: Prediction, timeout: float, poll_interval: float
) -> Prediction:
    """Poll until the prediction is terminal; `PredictionTimeoutError` past ``timeout``."""
    current = prediction
    deadline = time.monotonic() + timeout
    while not current.status.terminal:
        if time.monotonic() >= deadline:
            raise PredictionTimeoutError(
                current,
                f"prediction {current.id} still {current.status} after {timeout:g} s "
                "(it may still run: see the error's .prediction)",
            )
        await anyio.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))
        current = await gateway.get(current.id)
    return current


async def wait(
    gateway: Gateway, prediction: Prediction, timeout: float, poll_interval: float
) -> Prediction:
    """Settle the prediction; raise when it failed or was canceled, else return it."""
    current = await settle(gateway, prediction, timeout, poll_interval)
    if current.status is PredictionStatus.FAILED:
        raise ModelError(current, permanent=is_permanent_failure(current.error))
    if current.status in (PredictionStatus.CANCELED, PredictionStatus.ABORTED):
        raise PredictionCanceledError(current, f"prediction {current.id} was {current.status}")
    return current


async def list_predictions(gateway: Gateway, limit: int, cursor: str | None) -> PredictionPage:
    """Return up to ``limit`` (at least 1) predictions from ``cursor`` on, reading pages
    as needed."""
    results: list[Prediction] = []
    page_cursor, skip = _split_cursor(cursor)
    while True:
        page = await gateway.list(page_cursor)
        items = page.results[skip:]
        wanted = limit - len(results)
        if len(items) > wanted:
            # Stop inside this page: the next call starts where this one stopped.
            results.extend(items[:wanted])
            return PredictionPage(results, _join_cursor(page_cursor, skip + wanted))
        results.extend(items)
        if page.next is None or len(results) == limit:
            return PredictionPage(results, page.next)
        page_cursor, skip = page.next, 0


def webhook_events(events: Sequence[str] | None) -> list[str] | None:
    """Map the seed's webhook event names to Replicate's, in Replicate's order."""
    if events is None:
        return None
    known = ("start", "output", "logs", "completed")
    mapped = {"completed" if e in ("failed", "succeeded", "canceled") else e for e in events}
    unknown = mapped - set(known)
    if unknown:
        raise ConfigError(f"unknown webhook events {sorted(unknown)}; known: {', '.join(known)}")
    return [e for e in known if e in mapped]


def prediction_id(prediction: Prediction | str) -> str:
    """Return the id of a prediction given as itself or as its id."""
    return prediction if isinstance(prediction, str) else prediction.id


def _split_cursor(cursor: str | None) -> tuple[str | None, int]:
    """Split our cursor into the API's cursor and how many of its page were already given.

    A limit can stop inside a page; the count rides in the URL fragment, which is never
    sent to the server (``#skip=N``; alone, it means the first page).
    """
    if not cursor or "#skip=" not in cursor:
        return cursor, 0
    base, _, skip = cursor.rpartition("#skip=")
    try:
        return base or None, max(0, int(skip))
    except ValueError:
        raise ConfigError(f"not a cursor from list_predictions: {cursor!r}") from None


def _join_cursor(cursor: str | None, skip: int) -> str:
    return f"{cursor or ''}#skip={skip}"
