"""Find a prediction the server stored although we never learned its id.

A create can be accepted while its answer is lost (read timeout, 5xx from a proxy, a kill
between the answer and the journal). The API has no idempotency key, so before paying
again we list recent predictions (newest first) and match model and input digest.

The list can be briefly behind a get (issue 17's "a list that is briefly behind a get";
Replicate documents no bound), so a prediction missing from it is not yet proof that the
create was lost. `settled_lookup` believes an absence only once the create has had the
settle window (`EngineConfig.settle`, seconds from when the create was sent) to appear:
it looks at once, and if the window is still open, waits for its end and looks again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import anyio

from engine._control import RunControl
from engine._gateway import Gateway
from engine._logs import get_logger
from jobs import ModelRef, input_digest

__all__ = ["Lookup", "find_created_prediction", "settled_lookup"]

log = get_logger("engine.reconcile")

# Clocks of client and server differ; look a little further back than the create was sent.
_SKEW_SECONDS = 120.0
_MAX_PAGES = 20


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the prediction list says of one create whose answer was lost.

    ``prediction_id``: the stored prediction, when found. ``settled``: False when the
    settle window was still open as the look stopped (the run is stopping): the create
    may still show up, so it must be neither sent again nor given up on.
    """

    prediction_id: str | None
    settled: bool = True


async def settled_lookup(
    gateway: Gateway,
    model: ModelRef | None,
    digest: str,
    *,
    sent_at: float,
    settle: float,
    control: RunControl | None = None,
    since: float | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Lookup:
    """Look for the create sent at ``sent_at`` (unix seconds) until the list can be believed.

    Looks once now; when nothing is found and ``sent_at + settle`` is still ahead, waits
    until then (or until ``control`` stops creating: then ``settled`` is False) and looks
    once more. At most two list walks, so a lost create is sent again within ``settle``
    seconds of its sending. ``since`` (default ``sent_at``): the oldest create of this job
    whose answer was lost, for the list's time window. ``exclude``: ids known to be
    other jobs' (matched by digest alone when ``model`` is None).
    """
    oldest = sent_at if since is None else min(since, sent_at)
    found = await find_created_prediction(gateway, model, digest, oldest, exclude)
    if found is not None:
        return Lookup(found)
    ends = sent_at + settle
    if time.time() >= ends:
        return Lookup(None)
    log.info("reconcile.settling", seconds=round(ends - time.time(), 3))
    while (left := ends - time.time()) > 0:
        if control is not None and control.stop_creating:
            return Lookup(None, settled=False)
        with anyio.move_on_after(left):
            if control is None:
                await anyio.sleep(left)
            else:
                await control.wait_changed()
    return Lookup(await find_created_prediction(gateway, model, digest, oldest, exclude))


async def find_created_prediction(
    gateway: Gateway,
    model: ModelRef | None,
    digest: str,
    since: float,
    exclude: frozenset[str] = frozenset(),
) -> str | None:
    """Return the id of a prediction of ``model`` (None: of any model) with input digest
    ``digest`` created after ``since`` (unix seconds) and not in ``exclude``, or None."""
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await gateway.list(cursor)
        for prediction in page.results:
            created = _timestamp(prediction.created_at)
            if created is not None and created < since - _SKEW_SECONDS:
                return None  # newest first: everything further is older still
            if prediction.id in exclude:
                continue
            if model is not None and not _same_model(prediction.model, prediction.version, model):
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
