"""Stream a `ReplicateClient` prediction's events, resuming or completing a dropped stream.

A stream that drops before ``done`` is resumed after the last event seen
(``Last-Event-ID``), else completed from the prediction's final state; each event is
yielded once. When neither works, `TransportError` is raised: a stream never ends silently.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from engine._client_calls import CreatedIds, create, settle
from engine._client_env import Settings
from engine._client_loop import Runtime
from engine._errors import EngineError, TransportError, UnexpectedResponseError
from engine._gateway import Gateway, StreamEvent
from engine._logs import get_logger
from engine._prediction import Prediction, PredictionStatus
from engine._sse import read_events
from jobs import ModelRef

__all__ = ["stream_events"]

log = get_logger("engine.client")


async def stream_events(
    runtime: Runtime,
    created: CreatedIds,
    settings: Settings,
    model_id: str,
    input_params: Mapping[str, Any] | None,
) -> AsyncGenerator[StreamEvent, None]:
    """Create a streaming prediction and yield its events (on the client's loop)."""
    ref = ModelRef.parse(model_id)
    gateway = await runtime.gateway()
    attempts = settings.max_retries + 1
    prediction = await create(
        gateway,
        created,
        ref,
        dict(input_params or {}),
        attempts=attempts,
        settle=settings.settle,
        stream=True,
    )
    url = prediction.urls.get("stream")
    if not url:
        raise UnexpectedResponseError(
            f"{model_id} does not stream: prediction {prediction.id} has no stream URL"
        )
    log.info("client.stream", model=model_id, prediction_id=prediction.id)
    last_id: str | None = None
    counts = {"output": 0, "logs": 0}
    reason = ""
    for _ in range(attempts):
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            async with gateway.http.stream("GET", url, headers=headers) as response:
                kind = response.headers.get("content-type", "").split(";")[0].strip()
                if response.status_code != 200 or kind != "text/event-stream":
                    reason = f"HTTP {response.status_code} {kind}"
                    break  # refused: resuming will not help, the final state may
                async for event in read_events(response):
                    last_id = event.id or last_id
                    if event.event in counts:
                        counts[event.event] += 1
                    yield event
                    if event.event == "done":
                        return
            reason = "the stream ended before done"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "client.stream_dropped",
            prediction_id=prediction.id,
            last_event_id=last_id,
            reason=reason,
        )
    async for event in _stream_rest(gateway, settings, prediction, counts, reason):
        yield event


async def _stream_rest(
    gateway: Gateway,
    settings: Settings,
    prediction: Prediction,
    counts: Mapping[str, int],
    reason: str,
) -> AsyncIterator[StreamEvent]:
    """Yield what a dropped stream missed, from the prediction's final state."""
    try:
        final = await settle(gateway, prediction, settings.timeout, settings.poll_interval)
    except EngineError as exc:
        raise TransportError(
            f"the event stream of prediction {prediction.id} dropped ({reason}) after "
            f"{sum(counts.values())} events, and its final state could not be read: {exc}",
            sent=True,
        ) from exc
    log.info("client.stream_completed_from_state", prediction_id=final.id)
    for line in (final.logs or "").splitlines()[counts["logs"] :]:
        yield StreamEvent(event="logs", data=line, id="")
    output = final.output
    items = output if isinstance(output, list) else ([] if output is None else [output])
    for item in items[counts["output"] :]:
        yield StreamEvent(event="output", data=str(item), id="")
    if final.status is PredictionStatus.FAILED:
        yield StreamEvent(event="error", data=json.dumps({"detail": final.error}), id="")
        yield StreamEvent(event="done", data=json.dumps({"reason": "error"}), id="")
    elif final.status is PredictionStatus.SUCCEEDED:
        yield StreamEvent(event="done", data="{}", id="")
    else:
        yield StreamEvent(event="done", data=json.dumps({"reason": "canceled"}), id="")
