"""Derive a prediction's state from the clock, so in-flight predictions cost no tasks.

A `PredictionRecord` stores only what was decided at creation (timings, outcome) and the
times of later events (cancel); `render(now)` turns that into the API's JSON.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from engine.emulator.catalogue import ModelSpec
from engine.emulator.media import tokens_for
from engine.emulator.shapes import OutputFile, render_output

__all__ = ["PredictionRecord", "iso", "new_id"]

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


def new_id() -> str:
    """Return a 26-character lowercase base32 id, like Replicate's."""
    return base64.b32encode(os.urandom(16)).decode().lower()[:26]


def iso(ts: float) -> str:
    """Format unix time as ISO 8601 with microseconds and ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True, eq=False)
class PredictionRecord:
    """Everything known about one prediction; the status is computed, never stored."""

    id: str
    seq: int
    model: ModelSpec
    version: str
    input: dict[str, Any]
    created: float
    started: float
    finished: float
    failure: str | None = None
    stream: bool = False
    deployment: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    deadline: float | None = None
    canceled_at: float | None = None
    file_urls: list[str] = field(default_factory=list)
    files: list[OutputFile] = field(default_factory=list)  # parallel to file_urls
    template: Any = None  # the output with `Slot`s where the file URLs go
    source: str = "api"  # "web": made outside the API (foreign_predictions)
    video_size: int = 0  # fixed at creation so a later config change cannot alter a file
    on_change: list[Callable[[], None]] = field(default_factory=list)

    def end(self) -> tuple[float, str]:
        """Return when and how the prediction ends (cancel and deadline cut it short)."""
        end, status = self.finished, "failed" if self.failure else "succeeded"
        if self.deadline is not None and self.deadline < end:
            end, status = self.deadline, "aborted" if self.deadline < self.started else "canceled"
        if self.canceled_at is not None and self.canceled_at < end:
            end, status = self.canceled_at, "canceled"
        return end, status

    def status(self, now: float) -> str:
        """Return the status at ``now``."""
        end, final = self.end()
        if now >= end:
            return final
        return "starting" if now < self.started else "processing"

    def progress(self, now: float) -> float:
        """Return the fraction of the run done at ``now`` (0 before start)."""
        span = self.finished - self.started
        if span <= 0:
            return 1.0 if now >= self.started else 0.0
        return min(1.0, max(0.0, (now - self.started) / span))

    def tokens(self) -> list[str]:
        """Return the full token list of a text model."""
        return tokens_for(str(self.input.get("prompt", "")), int(self.input.get("max_tokens", 64)))

    def output_at(self, now: float) -> Any:
        """Return the output visible at ``now`` (tokens grow; files appear on success)."""
        status = self.status(now)
        if status in ("failed", "canceled", "aborted", "starting"):
            return None
        if self.model.kind == "text":
            tokens = self.tokens()
            if status == "succeeded":
                return tokens
            return tokens[: int(len(tokens) * self.progress(now))]
        if status != "succeeded":
            return None
        return render_output(self.template, self.file_urls)

    def log_lines(self, now: float) -> Iterator[str]:
        """Yield tqdm-like log lines written up to ``now``."""
        end, _ = self.end()
        upto = min(now, end)
        if upto < self.started:
            return
        yield f"Using seed: {self.input.get('seed', 42)}"
        steps = 4
        done = int(steps * self.progress(upto))
        for k in range(1, done + 1):
            pct = 100 * k // steps
            bar = "#" * (k * 10 // steps)
            yield f"{pct:3d}%|{bar:<10}| {k}/{steps} [00:0{k}<00:0{steps - k}, 1.00it/s]"
        if self.failure is not None and self.status(now) == "failed":
            yield f"Traceback (most recent call last):\n{self.failure}"

    def render(self, now: float, base_url: str, output_expiry: float) -> dict[str, Any]:
        """Return the Prediction JSON at ``now`` with URLs on ``base_url``."""
        status = self.status(now)
        end, _ = self.end()
        terminal = status in TERMINAL
        removed = terminal and now >= end + output_expiry
        api = f"{base_url}/v1/predictions/{self.id}"
        urls = {"get": api, "cancel": f"{api}/cancel", "web": f"https://replicate.com/p/{self.id}"}
        if self.model.streamable:
            urls["stream"] = f"{base_url}/v1/streams/{self.id}"
        body: dict[str, Any] = {
            "id": self.id,
            "model": self.model.ref,
            "version": self.version,
            "input": self.input,
            "logs": "" if removed else "\n".join(self.log_lines(now)),
            "output": None if removed else self.output_at(now),
            "data_removed": removed,
            "error": self.failure if status == "failed" else None,
            "status": status,
            "source": self.source,
            "created_at": iso(self.created),
            "urls": urls,
        }
        if self.started <= min(now, end):
            body["started_at"] = iso(self.started)
        if terminal:
            body["completed_at"] = iso(end)
            metrics: dict[str, Any] = {"total_time": round(end - self.created, 6)}
            if self.started <= end:
                metrics["predict_time"] = round(end - self.started, 6)
            if self.model.billing == "output" and status == "succeeded":
                metrics["image_count"] = len(self.file_urls)
            if self.model.kind == "text" and status == "succeeded":
                metrics["output_token_count"] = len(self.tokens())
                metrics["input_token_count"] = len(str(self.input.get("prompt", "")).split())
            body["metrics"] = metrics
        if self.model.hardware is not None:
            body["hardware"] = self.model.hardware
        if self.deployment is not None:
            body["deployment"] = self.deployment
        if self.webhook is not None:
            body["webhook"] = self.webhook
            body["webhook_events_filter"] = self.webhook_events_filter or ["output", "completed"]
        if self.stream:
            body["stream"] = True
        return body

    def file(self, name: str) -> OutputFile | None:
        """Return the output file called ``name``, if this prediction has one."""
        return next((f for f in self.files if f.name == name), None)

    def notify(self) -> None:
        """Wake SSE streams and webhook senders waiting on this prediction."""
        for callback in list(self.on_change):
            callback()
