"""Write down what a run did: `RunSummary` (frozen) and ``report.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine._durable import write_durably

__all__ = ["RunSummary", "write_report"]


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
    # Over the whole journal, every run so far including this one: ``runs`` and
    # ``predictions_created`` (its ``created`` records: each one was paid).
    totals: dict[str, int] = field(default_factory=dict)
    # Journaled jobs that this manifest no longer has (edited or removed since); None
    # when the run stopped before it read the whole manifest.
    earlier_manifest_jobs: int | None = None
    output_dir: str | None = None  # absolute
    journal: str | None = None  # absolute

    @property
    def exit_code(self) -> int:
        """Return 130 when interrupted, 1 when any job is not done, else 0."""
        if self.interrupted:
            return 130
        unfinished = self.failed or self.deferred or self.canceled or self.stopped_reason
        return 1 if unfinished else 0

    @property
    def throughput_per_min(self) -> float | None:
        """Return jobs this run finished per minute of wall time; None when it finished none.

        Jobs skipped as already done are not this run's work: a re-run that skips
        everything has no throughput, not thousands of jobs a minute.
        """
        finished = self.done - self.skipped_done
        if finished <= 0 or self.wall_seconds <= 0:
            return None
        return 60.0 * finished / self.wall_seconds

    def to_json(self) -> dict[str, Any]:
        """Return the machine-readable form written to ``report.json``."""
        # Shallow on purpose: asdict() deep-copies, and failed_keys may hold a million ids.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["common_errors"] = [{"error": e, "count": n} for e, n in self.common_errors]
        throughput = self.throughput_per_min
        data["throughput_per_min"] = None if throughput is None else round(throughput, 3)
        data["exit_code"] = self.exit_code
        return data


def write_report(summary: RunSummary, path: Path) -> None:
    """Write ``report.json`` durably (a reader or a crash never sees half a report)."""
    text = json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n"
    write_durably(path, text.encode())
