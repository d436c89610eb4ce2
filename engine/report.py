"""Count what a run did and write it down: `RunStats` while running, `RunSummary` after."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine._pricing import Usage
from engine.events import JobEvent, JobEventKind

__all__ = ["RunStats", "RunSummary", "percentile", "write_report"]


def percentile(values: list[float], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a finished (or interrupted) run did. ``exit_code`` follows the CLI's contract."""

    total: int
    done: int
    skipped_done: int
    failed: int
    deferred: int
    canceled: int
    predictions_created: int
    reattached: int
    retries: dict[str, int]
    bytes_downloaded: int
    files_downloaded: int
    wall_seconds: float
    predict_seconds: float
    prediction_p50: float | None
    prediction_p95: float | None
    download_p50: float | None
    download_p95: float | None
    throttled_429: int
    throttled_seconds: float
    common_errors: list[tuple[str, int]]
    failed_keys: list[str]
    interrupted: bool
    stopped_reason: str | None
    billing: dict[str, Any] | None = None  # billable units per model (and money, if priced)

    @property
    def exit_code(self) -> int:
        """Return 130 when interrupted, 1 when any job is not done, else 0."""
        if self.interrupted:
            return 130
        unfinished = self.failed or self.deferred or self.canceled or self.stopped_reason
        return 1 if unfinished else 0

    @property
    def throughput_per_min(self) -> float:
        """Return jobs finished per minute of wall time."""
        return 60.0 * self.done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the machine-readable form written to ``report.json``."""
        # Shallow on purpose: asdict() deep-copies, and failed_keys may hold a million ids.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["common_errors"] = [{"error": e, "count": n} for e, n in self.common_errors]
        data["throughput_per_min"] = round(self.throughput_per_min, 3)
        data["exit_code"] = self.exit_code
        return data


@dataclass(slots=True)
class RunStats:
    """Accumulate a run's numbers from job events and timings (single event loop, no locks).

    A run's job keys are unique (the manifest reader refuses duplicates), so a skipped job
    needs no entry in ``final``: a done one is only counted, a failed one only listed for
    the report. A resume can skip a million of them.
    """

    started: float = field(default_factory=time.monotonic)
    total: int = 0
    skipped_done: int = 0
    predictions_created: int = 0
    reattached: int = 0
    bytes_downloaded: int = 0
    files_downloaded: int = 0
    predict_seconds: float = 0.0
    prediction_seconds: list[float] = field(default_factory=list)
    download_seconds: list[float] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    final: dict[str, JobEventKind] = field(default_factory=dict)  # of the jobs that ran
    skipped_failed: list[str] = field(default_factory=list)
    in_flight: int = 0
    queued: int = 0
    usage: Usage = field(default_factory=Usage)

    def record(self, event: JobEvent) -> None:
        """Fold one event into the counters."""
        kind = event.kind
        # Skips first: a resume can skip a million jobs before any other event.
        if kind is JobEventKind.SKIPPED:
            if event.detail == "failed":
                # A list, not a dict entry: 8 bytes a job, and the key is the replay's string.
                self.skipped_failed.append(event.key)
            elif event.detail == "done":
                self.skipped_done += 1
            return
        if kind is JobEventKind.CREATED:
            self.predictions_created += 1
        elif kind is JobEventKind.REATTACHED:
            self.reattached += 1
        elif kind is JobEventKind.DOWNLOADED:
            self.files_downloaded += 1
            self.bytes_downloaded += event.size
        elif kind is JobEventKind.RETRYING:
            self.retries[event.detail.split(":", 1)[0] or "unknown"] += 1
        if kind in (
            JobEventKind.DONE,
            JobEventKind.FAILED,
            JobEventKind.CANCELED,
            JobEventKind.DEFERRED,
        ):
            self.final[event.key] = kind
            if kind is JobEventKind.FAILED:
                self.errors[event.detail[:200]] += 1

    def summary(
        self,
        *,
        throttled_429: int,
        throttled_seconds: float,
        interrupted: bool,
        stopped_reason: str | None,
    ) -> RunSummary:
        """Freeze the counters into a `RunSummary`."""
        finals = Counter(self.final.values())
        failed_keys = [k for k, v in self.final.items() if v is JobEventKind.FAILED]
        failed_keys += self.skipped_failed
        failed_keys.sort()
        return RunSummary(
            total=self.total,
            done=finals[JobEventKind.DONE] + self.skipped_done,
            skipped_done=self.skipped_done,
            failed=len(failed_keys),
            deferred=finals[JobEventKind.DEFERRED],
            canceled=finals[JobEventKind.CANCELED],
            predictions_created=self.predictions_created,
            reattached=self.reattached,
            retries=dict(self.retries),
            bytes_downloaded=self.bytes_downloaded,
            files_downloaded=self.files_downloaded,
            wall_seconds=round(time.monotonic() - self.started, 3),
            predict_seconds=round(self.predict_seconds, 3),
            prediction_p50=percentile(self.prediction_seconds, 0.5),
            prediction_p95=percentile(self.prediction_seconds, 0.95),
            download_p50=percentile(self.download_seconds, 0.5),
            download_p95=percentile(self.download_seconds, 0.95),
            throttled_429=throttled_429,
            throttled_seconds=round(throttled_seconds, 3),
            common_errors=self.errors.most_common(5),
            failed_keys=failed_keys,
            interrupted=interrupted,
            stopped_reason=stopped_reason,
            billing=self.usage.to_json(),
        )


def write_report(summary: RunSummary, path: Path) -> None:
    """Write ``report.json`` atomically (a reader never sees half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
