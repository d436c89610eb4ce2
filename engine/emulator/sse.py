"""Stream a prediction as server-sent events in the exact shape replicate 1.0.7 parses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio

from engine.emulator.lifecycle import PredictionRecord

__all__ = ["event", "resume_point", "stream_events"]

_KEEPALIVE = 10.0


def event(name: str, event_id: str, data: str) -> str:
    """Format one event: every line of ``data`` gets its own ``data: `` prefix."""
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return f"event: {name}\nid: {event_id}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def resume_point(last_event_id: str | None, record: PredictionRecord) -> tuple[int, int, int]:
    """Return (events, logs, outputs) already sent before ``Last-Event-ID``, else zeros.

    An id is ``<created ms>:<seq>:<logs>:<outputs>``: opaque to clients, and enough for
    a reconnecting client to be served exactly the events after it, with no state kept.
    """
    parts = (last_event_id or "").strip().split(":")
    if len(parts) != 4 or parts[0] != str(_stamp(record)):
        return 0, 0, 0
    try:
        seq, logs, outputs = (int(p) for p in parts[1:])
    except ValueError:
        return 0, 0, 0
    return seq + 1, logs, outputs


def _stamp(record: PredictionRecord) -> int:
    return int(record.created * 1000)


async def stream_events(
    record: PredictionRecord,
    *,
    clock: Callable[[], float],
    tick: float,
    resume: tuple[int, int, int] = (0, 0, 0),
    drop_after: int = 0,
) -> AsyncIterator[str]:
    """Yield ``: hi``, then output/logs events as they appear, then error and/or ``done``.

    ``resume`` (from `resume_point`) skips what a reconnecting client already has.
    ``drop_after`` > 0 ends the response after that many events, before ``done``, as a
    dropped connection does.
    """
    wake = anyio.Event()

    def on_change() -> None:
        wake.set()

    record.on_change.append(on_change)
    stamp = _stamp(record)
    seq, sent_logs, sent_tokens = resume
    quiet_since = clock()
    sent_here = 0

    def emit(name: str, data: str) -> str:
        nonlocal seq
        seq += 1
        return event(name, f"{stamp}:{seq - 1}:{sent_logs}:{sent_tokens}", data)

    try:
        yield ": hi\n\n"
        while True:
            now = clock()
            status = record.status(now)
            output = record.output_at(now) if record.model.kind == "text" else None
            logs = list(record.log_lines(now))
            chunks = []
            for line in logs[sent_logs:]:
                sent_logs += 1
                chunks.append(emit("logs", line))
            if isinstance(output, list):
                for token in output[sent_tokens:]:
                    sent_tokens += 1
                    chunks.append(emit("output", token))
            elif status == "succeeded" and record.file_urls:
                for url in record.file_urls[sent_tokens:]:
                    sent_tokens += 1
                    chunks.append(emit("output", url))
            if status == "failed":
                chunks.append(emit("error", json.dumps({"detail": record.failure})))
                chunks.append(emit("done", json.dumps({"reason": "error"})))
            elif status in ("canceled", "aborted"):
                chunks.append(emit("done", json.dumps({"reason": "canceled"})))
            elif status == "succeeded":
                chunks.append(emit("done", "{}"))
            if drop_after and sent_here + len(chunks) >= drop_after:
                yield "".join(chunks[: drop_after - sent_here])
                return  # the connection drops: no done
            sent_here += len(chunks)
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
