"""Send signed webhook deliveries for a prediction's filtered events, with retries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from engine.emulator.config import EmulatorConfig
from engine.emulator.lifecycle import TERMINAL, PredictionRecord
from engine.emulator.stats import Stats

__all__ = ["DEFAULT_EVENTS", "new_secret", "sign", "watch_prediction"]

DEFAULT_EVENTS = ("output", "completed")


def new_secret() -> str:
    """Return a ``whsec_`` key; standard base64 has no ``_``, which the client splits on."""
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """Return the ``webhook-signature`` header value (Standard Webhooks, ``v1,<b64>``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


async def _deliver(
    client: httpx.AsyncClient, url: str, body: str, config: EmulatorConfig, stats: Stats
) -> None:
    """POST one event, retrying with the same ``webhook-id`` until a 2xx or retries run out."""
    msg_id = "msg_" + base64.b32encode(os.urandom(15)).decode().lower()
    for delay in (0.0, *config.webhook_retry_delays):
        await anyio.sleep(delay)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "Replicate-Webhooks/1.0 (emulator)",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(_secret(config), msg_id, timestamp, body),
        }
        try:
            response = await client.post(
                url, content=body, headers=headers, timeout=config.webhook_timeout
            )
        except httpx.HTTPError:
            stats.webhook(0)
            continue
        stats.webhook(response.status_code)
        if response.is_success:
            return


def _secret(config: EmulatorConfig) -> str:
    assert config.webhook_secret is not None, "the Emulator fills in a secret"
    return config.webhook_secret


async def watch_prediction(
    record: PredictionRecord,
    *,
    client: httpx.AsyncClient,
    clock: Callable[[], float],
    render: Callable[[float], dict[str, Any]],
    config: Callable[[], EmulatorConfig],
    stats: Stats,
) -> None:
    """Follow ``record`` until it ends, delivering each filtered event in order."""
    assert record.webhook is not None
    wanted = set(record.webhook_events_filter or DEFAULT_EVENTS)
    wake = anyio.Event()

    def on_change() -> None:
        wake.set()

    record.on_change.append(on_change)
    sent_start, last_output, last_logs = False, None, ""
    try:
        while True:
            now = clock()
            body = render(now)
            status = body["status"]
            events: list[str] = []
            if not sent_start and status != "starting":
                sent_start = True
                if "start" in wanted and body.get("started_at"):
                    events.append("start")
            if status in TERMINAL:
                events.append("completed" if "completed" in wanted else "")
                if "completed" not in wanted and body["output"] != last_output:
                    events.append("output" if "output" in wanted else "")
            else:
                if body["output"] and body["output"] != last_output and "output" in wanted:
                    events.append("output")
                if body["logs"] != last_logs and "logs" in wanted:
                    events.append("logs")
            last_output, last_logs = body["output"], body["logs"]
            if any(events):
                payload = json.dumps(body)
                await _deliver(client, record.webhook, payload, config(), stats)
            if status in TERMINAL:
                return
            # Coalesce output/log events to at most one per 500 ms (scaled), as Replicate does.
            interval = max(0.001, 0.5 * config().time_scale)
            until = record.started if status == "starting" else now + interval
            with anyio.move_on_after(max(0.0, min(until, record.end()[0]) - clock())):
                await wake.wait()
            wake = anyio.Event()
    finally:
        record.on_change.remove(on_change)
