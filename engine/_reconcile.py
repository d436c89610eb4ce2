"""Find a prediction the server stored although we never learned its id.

A create can be accepted while its answer is lost (read timeout, 5xx from a proxy, a kill
between the answer and the journal). The API has no idempotency key, so before paying
again we list recent predictions (newest first) and match model and input digest.
"""

from __future__ import annotations

from datetime import datetime

from engine._gateway import Gateway
from engine._logs import get_logger
from jobs import ModelRef, input_digest

__all__ = ["find_created_prediction"]

log = get_logger("engine.reconcile")

# Clocks of client and server differ; look a little further back than the create was sent.
_SKEW_SECONDS = 120.0
_MAX_PAGES = 20


async def find_created_prediction(
    gateway: Gateway, model: ModelRef, digest: str, since: float
) -> str | None:
    """Return the id of a prediction of ``model`` with input digest ``digest`` created
    after ``since`` (unix seconds), or None when there is none."""
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await gateway.list(cursor)
        for prediction in page.results:
            created = _timestamp(prediction.created_at)
            if created is not None and created < since - _SKEW_SECONDS:
                return None  # newest first: everything further is older still
            if not _same_model(prediction.model, prediction.version, model):
                continue
            if prediction.input is not None and input_digest(prediction.input) == digest:
                return prediction.id
        if page.next is None:
            return None
        cursor = page.next
    log.warning("reconcile.gave_up", pages=_MAX_PAGES)
    return None


def _same_model(model: str, version: str, ref: ModelRef) -> bool:
    if ref.version is not None and version == ref.version:
        return True
    return model == ref.slug or ref.deployment


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
