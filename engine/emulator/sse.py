"""Stream a prediction as server-sent events in the exact shape replicate 1.0.7 parses."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import anyio

from engine.emulator.lifecycle import PredictionRecord

__all__ = ["event", "stream_events"]

_KEEPALIVE = 10.0


def event(name: str, event_id: str, data: str) -> str:
    """Format one event: every line of ``data`` gets its own ``data: `` prefix."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\nid: {event_id}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


async def stream_events(
    record: PredictionRecord, *, clock: Callable[[], float], tick: float
) -> AsyncIterator[str]:
    """Yield ``: hi``, then output/logs events as they appear, then error and/or ``done``."""
    wake = anyio.Event()

    def on_change() -> None:
        wake.set()

    record.on_change.append(on_change)
    stamp, seq = int(time.time()), 0
    sent_tokens, sent_logs, quiet_since = 0, 0, clock()

    def next_id() -> str:
        nonlocal seq
        seq += 1
        return f"{stamp}:{seq - 1}"

    try:
        yield ": hi\n\n"
        while True:
            now = clock()
            status = record.status(now)
            output = record.output_at(now) if record.model.kind == "text" else None
            logs = list(record.log_lines(now))
            chunks = [event("logs", next_id(), line) for line in logs[sent_logs:]]
            sent_logs = len(logs)
            if isinstance(output, list):
                chunks.extend(event("output", next_id(), token) for token in output[sent_tokens:])
                sent_tokens = len(output)
            elif status == "succeeded" and sent_tokens == 0 and record.file_urls:
                chunks.extend(event("output", next_id(), url) for url in record.file_urls)
                sent_tokens = len(record.file_urls)
            if status == "failed":
                chunks.append(event("error", next_id(), json.dumps({"detail": record.failure})))
                chunks.append(event("done", next_id(), json.dumps({"reason": "error"})))
            elif status in ("canceled", "aborted"):
                chunks.append(event("done", next_id(), json.dumps({"reason": "canceled"})))
            elif status == "succeeded":
                chunks.append(event("done", next_id(), "{}"))
            if chunks:
                quiet_since = now
                yield "".join(chunks)
            elif now - quiet_since >= _KEEPALIVE:
                quiet_since = now
                yield ": keep-alive\n\n"
            if status not in ("starting", "processing"):
                return
            with anyio.move_on_after(tick):
                await wake.wait()
            wake = anyio.Event()
    finally:
        record.on_change.remove(on_change)
