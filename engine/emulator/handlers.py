"""Answer the prediction endpoints: create (three routes), get, cancel, list, stream."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from engine.emulator.catalogue import (
    DEPLOYMENTS,
    MODELS,
    ModelSpec,
    by_version,
    canonical_key,
    validate_input,
)
from engine.emulator.lifecycle import TERMINAL, PredictionRecord
from engine.emulator.problems import Problem, json_response, not_found
from engine.emulator.resources import base_url
from engine.emulator.shapes import inline_output
from engine.emulator.sse import resume_point, stream_events

if TYPE_CHECKING:
    from engine.emulator.app import Emulator

__all__ = [
    "cancel_prediction",
    "create_by_deployment",
    "create_by_model",
    "create_by_version",
    "get_prediction",
    "list_predictions",
    "parse_duration",
    "stream_prediction",
]

PAGE_SIZE = 100
_PREFER = re.compile(r"^\s*wait(?:=(\d+))?\s*$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_EVENTS = frozenset({"start", "output", "logs", "completed"})


def parse_duration(text: str) -> float | None:
    """Parse ``Cancel-After`` values such as ``90``, ``30s``, ``1m30s`` or ``500ms``."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNITS[u] for n, u in parts)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise Problem(400, "Bad request", "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise Problem(400, "Bad request", "The request body must be a JSON object")
    return data


def _record(em: Emulator, request: Request) -> PredictionRecord:
    record = em.predictions.get(request.path_params["id"])
    if record is None:
        raise not_found("The requested prediction could not be found.")
    return record


async def create_by_version(em: Emulator, request: Request) -> Response:
    """Create from ``{"version": id}`` (a bare id or ``owner/name:id``)."""
    body = await _body(request)
    version = body.get("version")
    model = by_version(version) if isinstance(version, str) else None
    if model is None:
        raise Problem(
            422,
            "Invalid version or not permitted",
            "The specified version does not exist"
            " (or perhaps you don't have permission to use it?)",
        )
    return await _create(em, request, model, body)


async def create_by_model(em: Emulator, request: Request) -> Response:
    """Create on a model's latest version."""
    model = MODELS.get(f"{request.path_params['owner']}/{request.path_params['name']}")
    if model is None:
        raise not_found("The requested model could not be found.")
    if not model.published:
        raise not_found("The requested model has no published version.")
    return await _create(em, request, model, await _body(request))


async def create_by_deployment(em: Emulator, request: Request) -> Response:
    """Create on a deployment (a name for a catalogue model)."""
    ref = f"{request.path_params['owner']}/{request.path_params['name']}"
    if ref not in DEPLOYMENTS:
        raise not_found("The requested deployment could not be found.")
    released = DEPLOYMENTS[ref]
    if released is None:
        raise not_found("The requested deployment has no current release.")
    return await _create(em, request, MODELS[released], await _body(request), deployment=ref)


def _failure(em: Emulator, model: ModelSpec, data: dict[str, Any], before: int) -> str | None:
    """Decide at creation whether (and how) the prediction will fail."""
    config = em.config
    if model.kind == "fails":
        return f"ValueError: {model.ref} always fails (by design)"
    if data.get("prompt") == "fail":
        return "ValueError: the prompt asked this prediction to fail"
    if before < config.fail_first_per_input:
        return "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.59 GiB total capacity)"
    if config.permanent_failure_rate and em.rng.random() < config.permanent_failure_rate:
        return "NSFW content detected. Try running it again, or try a different prompt."
    if config.transient_failure_rate and em.rng.random() < config.transient_failure_rate:
        return "Prediction interrupted; please retry (code: PA)"
    return None


async def _create(
    em: Emulator,
    request: Request,
    model: ModelSpec,
    body: dict[str, Any],
    deployment: str | None = None,
) -> Response:
    data = body.get("input")
    data = {} if data is None else data
    problems = validate_input(model, data)
    if problems:
        detail = "".join(f"- {p['field']}: {p['description']}\n" for p in problems)
        raise Problem(422, "Input validation failed", detail, invalid_fields=problems)
    events = body.get("webhook_events_filter")
    if events is not None and (not isinstance(events, list) or not set(events) <= _EVENTS):
        raise Problem(
            422, "Invalid webhook_events_filter", f"Events must be among {sorted(_EVENTS)}"
        )
    webhook, completed = body.get("webhook"), body.get("webhook_completed")
    if webhook is None and completed is not None:
        webhook, events = completed, ["completed"]
    if webhook is not None:
        em.require_webhooks()
    now = em.clock()
    key = canonical_key(model, data)
    cancel_after = parse_duration(request.headers.get("cancel-after", ""))
    record = em.new_record(
        model,
        data,
        now,
        failure=_failure(em, model, data, em.stats.per_input[key]),
        stream=body.get("stream") is True,
        deployment=deployment,
        webhook=webhook if isinstance(webhook, str) else None,
        webhook_events_filter=events,
        deadline=None if cancel_after is None else now + cancel_after,
    )
    base = base_url(request)
    em.add(record, base)
    em.stats.created(key, record.id, now, record.end()[0], model.ref)
    if record.webhook is not None:
        em.watch(record, base)
    prefer = _PREFER.match(request.headers.get("prefer", ""))
    headers: dict[str, str] = {}
    if prefer is None:
        return json_response(record.render(now, base, em.config.output_expiry), 201)
    headers["preference-applied"] = request.headers["prefer"].strip()
    window = min(60, int(prefer.group(1) or 60))
    await _wait_for_end(em, record, now + window)
    return json_response(_sync_body(em, record, base), 201, headers)


async def _wait_for_end(em: Emulator, record: PredictionRecord, until: float) -> None:
    """Sleep until the prediction ends or ``until``, waking early on cancel."""
    while (left := min(until, record.end()[0]) - em.clock()) > 0:
        event = anyio.Event()
        record.on_change.append(event.set)
        try:
            with anyio.move_on_after(left):
                await event.wait()
        finally:
            record.on_change.remove(event.set)


def _sync_body(em: Emulator, record: PredictionRecord, base: str) -> dict[str, Any]:
    """Render a sync answer: terminal with data URIs when small, else ``starting``."""
    now = em.clock()
    body = record.render(now, base, em.config.output_expiry)
    if body["status"] not in TERMINAL:
        if not em.config.sync_partial_on_expiry:
            body.update(status="starting", output=None)
        return body
    if record.files and body["status"] == "succeeded":
        body["output"] = inline_output(
            record.template,
            record.file_urls,
            record.files,
            em.config.data_uri_max,
            em.config.output_salt,
        )
    return body


async def get_prediction(em: Emulator, request: Request) -> Response:
    """Return a prediction as it is now."""
    record = _record(em, request)
    body = record.render(em.clock(), base_url(request), em.config.output_expiry)
    if em.config.inline_outputs and record.files and body["status"] == "succeeded":
        body["output"] = inline_output(
            record.template,
            record.file_urls,
            record.files,
            em.config.data_uri_max,
            em.config.output_salt,
        )
    return json_response(body)


async def cancel_prediction(em: Emulator, request: Request) -> Response:
    """Cancel a running prediction; a terminal one is returned unchanged."""
    record = _record(em, request)
    now = em.clock()
    if record.status(now) not in TERMINAL:
        record.canceled_at = now
        em.stats.ended_early(record.id)
        record.notify()
    return json_response(record.render(now, base_url(request), em.config.output_expiry))


def _instant(request: Request, name: str) -> datetime | None:
    """Read an ISO 8601 query parameter (``created_after``/``created_before``)."""
    text = request.query_params.get(name)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    except ValueError:
        raise Problem(400, "Bad request", f"{name} must be an ISO 8601 date-time") from None


def _created(record: PredictionRecord) -> datetime:
    return datetime.fromtimestamp(record.created, UTC)


async def list_predictions(em: Emulator, request: Request) -> Response:
    """Return one page: 100 at most, newest first, every source, an absolute ``next`` URL.

    The cursor names the position below which the next page starts, so predictions made
    while a client pages (ours or "from the web") never shift the pages it has yet to read.
    ``created_after`` and ``created_before`` filter (exclusive) and ride along in ``next``.
    """
    if em.config.list_shift:
        return _list_by_offset(em, request)
    cursor = request.query_params.get("cursor")
    stop = len(em.order)
    if cursor:
        try:
            stop = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("s="))
        except ValueError:
            raise Problem(400, "Bad request", "Invalid cursor") from None
    after, before = _instant(request, "created_after"), _instant(request, "created_before")
    now = em.clock()
    shown = now - em.config.list_lag  # a list behind a get shows the past
    page: list[PredictionRecord] = []
    position = min(stop, len(em.order))
    while position > 0 and len(page) < PAGE_SIZE:
        position -= 1
        record = em.order[position]
        created = _created(record)  # as rendered, so a listed created_at filters exactly
        if record.created > shown:
            continue  # not in the list yet
        if (after is None or created > after) and (before is None or created < before):
            page.append(record)
    more = position > 0 and (after is None or _created(em.order[position - 1]) > after)
    base = base_url(request)
    following = None
    if more:
        token = base64.urlsafe_b64encode(f"s={position}".encode()).decode()
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        following = f"{base}/v1/predictions?{urlencode({**query, 'cursor': token})}"
    results = [r.render(shown, base, em.config.output_expiry) for r in page]
    return json_response({"previous": None, "next": following, "results": results})


def _list_by_offset(em: Emulator, request: Request) -> Response:
    """Page by offset from the newest (the ``list_shift`` knob), then add web predictions."""
    cursor = request.query_params.get("cursor")
    offset = 0
    if cursor:
        try:
            offset = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("o="))
        except ValueError:
            raise Problem(400, "Bad request", "Invalid cursor") from None
    after, before = _instant(request, "created_after"), _instant(request, "created_before")
    matching = [
        r
        for r in reversed(em.order)
        if (after is None or _created(r) > after) and (before is None or _created(r) < before)
    ]
    page = matching[offset : offset + PAGE_SIZE]
    now, base = em.clock(), base_url(request)
    following = None
    if offset + PAGE_SIZE < len(matching):
        token = base64.urlsafe_b64encode(f"o={offset + PAGE_SIZE}".encode()).decode()
        query = {k: v for k, v in request.query_params.items() if k != "cursor"}
        following = f"{base}/v1/predictions?{urlencode({**query, 'cursor': token})}"
    em.foreign_pending += em.config.list_shift  # made at the next request: the pages shift
    results = [r.render(now, base, em.config.output_expiry) for r in page]
    return json_response({"previous": None, "next": following, "results": results})


async def stream_prediction(em: Emulator, request: Request) -> Response:
    """Stream a streamable prediction as server-sent events, resuming after Last-Event-ID.

    ``stream_drop_after_events`` cuts the first stream of each prediction (one without
    ``Last-Event-ID``) after that many events; a resumed stream runs to ``done``.
    """
    record = _record(em, request)
    if not record.model.streamable:
        raise not_found("This prediction does not stream.")
    tick = max(0.001, min(0.05, (record.finished - record.started) / 20))
    last_id = request.headers.get("last-event-id")
    drop = em.config.stream_drop_after_events if last_id is None else 0
    return StreamingResponse(
        stream_events(
            record,
            clock=em.clock,
            tick=tick,
            resume=resume_point(last_id, record),
            drop_after=drop,
        ),
        media_type="text/event-stream",
        headers={"cache-control": "no-store"},
    )
