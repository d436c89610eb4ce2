"""Read a prediction's server-sent events (``urls.stream``) from an httpx response.

replicate 1.0.7 reads the stream once and has no ``Last-Event-ID``; the client's
resuming stream reads it here, through the gateway's own httpx client and budgets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from engine._gateway import StreamEvent

__all__ = ["EVENT_TYPES", "read_events"]

EVENT_TYPES = frozenset({"output", "logs", "error", "done"})


async def read_events(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    """Yield each complete event of ``response``; comments and unknown events are skipped.

    An event is complete at its blank line: a connection cut halfway through one yields
    nothing of it, so a resumed stream repeats it instead of losing it.
    """
    name, event_id = "", ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if name in EVENT_TYPES:
                yield StreamEvent(event=name, data="\n".join(data), id=event_id)
            name, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
