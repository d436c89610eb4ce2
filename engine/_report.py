"""Write down what a run did: `RunSummary` (frozen) and ``report.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import aiofiles.os

from engine._durable import write_durably

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NO_CREDIT",
    "EXIT_OK",
    "EXIT_STOPPED",
    "EXIT_STORAGE",
    "EXIT_USAGE",
    "RunSummary",
    "store_report",
    "write_report",
]

# Why a run stopped, as its exit code: the CLI's contract, decided by `RunSummary.exit_code`.
EXIT_OK = 0  # every job done
EXIT_FAILED = 1  # some jobs failed or were canceled
EXIT_USAGE = 2  # usage, manifest or configuration error: nothing was sent
EXIT_STOPPED = 3  # stopped by a budget (--max-*) or the --deadline before every job ran
EXIT_NO_CREDIT = 4  # a create was refused for insufficient credit (402): creates stopped
EXIT_STORAGE = 5  # the disk refused a write mid-run: the run drained and stopped
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM
EXIT_BROKEN_PIPE = 141  # the reader of standard output went away (``export | head``)


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
    # Explicit ids whose model or input changed since the journal saw them: re-run
    # (``changed_keys``, old outputs kept aside) or only reported (``stale_keys``).
    changed_keys: list[str] = field(default_factory=list)
    stale_keys: list[str] = field(default_factory=list)

    stopped_by_limit: bool = False  # a budget or the deadline stopped the creates
    # Creates sent whose answer was lost and that the prediction list did not show before
    # the run ended: each may exist and bill. Not in ``predictions_created`` (no id is
    # known); the next run or ``cancel`` finds them by listing.
    creates_unanswered: int = 0
    stopped_by_credit: bool = False  # a 402 (insufficient credit) stopped the creates
    storage_error: str | None = None  # the disk refused a write mid-run: the run stopped
    # Of ``canceled``: canceled by an earlier run, skipped (``--retry-failed`` runs them).
    skipped_canceled: int = 0
    creates_sent: int = 0  # creates sent (answered or not): a stop after one sent something
    # failed in this run -> its last prediction's web page (``status`` links earlier ones)
    failed_links: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """Return why the run stopped: 130 interrupted, 5 the disk refused mid-run (2 if
        nothing was sent yet), 4 no credit, 3 a budget or the deadline left jobs undone,
        1 some jobs not done, 0 every job done (the ``EXIT_*`` constants). A deadline or
        budget reached after the last create stopped nothing: the jobs' outcome decides."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.storage_error is not None:
            # Before anything was sent (the first create's record refused), as a folder
            # refused at the start: nothing was sent.
            sent = self.creates_sent or self.predictions_created or self.reattached
            return EXIT_STORAGE if sent else EXIT_USAGE
        if self.stopped_by_credit:
            return EXIT_NO_CREDIT
        if self.stopped_by_limit and self.deferred:
            return EXIT_STOPPED
        unfinished = self.failed or self.deferred or self.canceled or self.stale_keys
        return EXIT_FAILED if unfinished else EXIT_OK

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
    write_durably(path, _report_bytes(summary))


# One trip to aiofiles' executor for the whole write, fsync and rename, as for small outputs
# (engine._download): a trip per system call trades the GIL with the loop each time.
_write_off_loop = aiofiles.os.wrap(write_durably)


async def store_report(summary: RunSummary, path: Path) -> None:
    """Write ``report.json`` durably from the event loop, through aiofiles' executor.

    A slow disk or a network file system then stalls a thread, not the loop (a draining
    run's display and signal handling keep going).
    """
    await _write_off_loop(path, _report_bytes(summary))


def _report_bytes(summary: RunSummary) -> bytes:
    return (json.dumps(summary.to_json(), indent=2, sort_keys=True) + "\n").encode()
