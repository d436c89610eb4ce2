"""Fold a run's job events once: `RunStats`, read by the report and the live display."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine._events import FOUND_AFTER_RESTART, UNANSWERED, JobEvent, JobEventKind
from engine._prediction import web_url
from engine._pricing import Usage
from engine._report import RunSummary

__all__ = ["RunStats", "error_kind", "percentile"]

# What makes two messages of one error differ: Replicate prediction ids (base-32, 26
# characters), version ids and digests (hex), UUIDs, our job keys and URLs.
_VARYING = re.compile(
    r"https?://\S+"
    r"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b(?=[a-z0-9]*\d)[a-z0-9]{20,}\b"
    r"|\b[a-z2-7]{26}\b"  # a prediction id may be all letters (base-32)
    r"|\bj[0-9a-f]{16}\b",
    re.IGNORECASE,
)


def error_kind(detail: str) -> str:
    """Return ``detail`` (``Class: message``) with the ids and URLs in it masked.

    500 failures of one kind differ only in their prediction ids: grouped by this, the
    report's most common errors say "500 x ModelError: prediction <id> failed: ...",
    not 500 lines of "1 x".
    """
    return _VARYING.sub("<id>", detail)[:200]


_FINAL = frozenset(
    {JobEventKind.DONE, JobEventKind.FAILED, JobEventKind.CANCELED, JobEventKind.DEFERRED}
)
_RATE_WINDOW = 60.0  # seconds of creates behind ``creates_per_min``


def percentile(values: list[float], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


@dataclass(slots=True)
class RunStats:
    """Accumulate a run's numbers from job events and timings, on the run's event loop.

    The one exception is `add_arriving`: downloads call it from their transfer threads
    with the bytes of each chunk, under a lock, so a 2 GB file counts as it arrives.

    The one fold of job events: the report's `RunSummary` and the live display's
    `snapshot` both read it, so they cannot count by different rules. A run's job keys
    are unique (the manifest reader refuses duplicates), so a skipped job needs no entry
    in ``final``: a done one is only counted, a failed one only listed for the report. A
    resume can skip a million of them.
    """

    started: float = field(default_factory=time.monotonic)
    total: int = 0
    skipped_done: int = 0
    predictions_created: int = 0
    creates_sent: int = 0  # CREATING events: sent, whether or not an answer came
    reattached: int = 0
    found_after_restart: int = 0  # created by an earlier run, found by listing: paid then
    unanswered: int = 0  # creates sent, answer lost, not in the list yet: may be billed
    journaled_seen: int = 0  # jobs of this manifest the journal knew at the start
    read_all_jobs: bool = False  # the producer reached the manifest's end
    bytes_downloaded: int = 0
    files_downloaded: int = 0
    in_flight: int = 0  # predictions created or re-attached and not yet finished
    prediction_seconds: list[float] = field(default_factory=list)
    download_seconds: list[float] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    final: dict[str, JobEventKind] = field(default_factory=dict)  # of the jobs that ran
    finals: Counter[JobEventKind] = field(default_factory=Counter)  # ``final``, counted
    skipped_failed: list[str] = field(default_factory=list)
    skipped_canceled: int = 0  # canceled by an earlier run, skipped without --retry-failed
    changed: list[str] = field(default_factory=list)  # re-run after a change
    stale: list[str] = field(default_factory=list)  # changed, only reported
    # Failed in this run: key -> prediction id. A resume's skipped failures are not kept
    # (a million of them would cost a dict entry each); ``status`` links those.
    failed_ids: dict[str, str] = field(default_factory=dict)
    recent_creates: deque[float] = field(default_factory=deque)  # monotonic, last minute
    # What each job is waiting on now, and since when: "create" (sent, no answer yet) or
    # "download" (succeeded, files coming). O(in flight): a job leaves at its next step.
    waiting: dict[str, tuple[str, float]] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    # The gateway's and the downloader's own counters of HTTP retries, read live: the
    # progress line counts them as they happen, not only at the end of the run.
    retry_counters: list[Counter[str]] = field(default_factory=list)
    # The create budget per minute now (a low-credit answer lowers it mid-run); None
    # before the run has its budget.
    create_rate: Callable[[], float] | None = None
    downloading: set[str] = field(default_factory=set)  # keys whose outputs are arriving
    _arriving: int = 0  # bytes of files not yet verified (any thread, under _lock)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_arriving(self, size: int) -> None:
        """Count ``size`` bytes received of a file still downloading (thread-safe).

        The worker takes them back (a negative ``size``) when the file ends, as DOWNLOADED
        counts the file itself.
        """
        with self._lock:
            self._arriving += size

    def all_retries(self) -> Counter[str]:
        """Return the retries so far: new predictions for a job, and HTTP attempts again."""
        total = Counter(self.retries)
        for counter in self.retry_counters:
            total.update(counter)
        return total

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
            elif event.detail == "canceled":
                self.skipped_canceled += 1
            return
        if kind is JobEventKind.CREATING:
            self.creates_sent += 1
            self.waiting[event.key] = ("create", time.monotonic())
            return
        if kind is JobEventKind.SUCCEEDED:
            self.waiting[event.key] = ("download", time.monotonic())
        elif kind is not JobEventKind.DOWNLOADED:
            self.waiting.pop(event.key, None)
        if kind is JobEventKind.CREATED:
            self.predictions_created += 1
            self.in_flight += 1
            now = time.monotonic()
            creates = self.recent_creates
            creates.append(now)
            while creates[0] < now - _RATE_WINDOW:
                creates.popleft()
        elif kind is JobEventKind.REATTACHED:
            self.reattached += 1
            self.in_flight += 1
            if event.detail == FOUND_AFTER_RESTART:
                self.found_after_restart += 1
        elif kind is JobEventKind.CHANGED:
            (self.stale if event.detail.startswith("report") else self.changed).append(event.key)
        elif kind is JobEventKind.SUCCEEDED:
            self.downloading.add(event.key)
        elif kind is JobEventKind.DOWNLOADED:
            self.files_downloaded += 1
            self.bytes_downloaded += event.size
        elif kind is JobEventKind.RETRYING:
            self.retries[event.detail.split(":", 1)[0] or "unknown"] += 1
            self.downloading.discard(event.key)
            if event.prediction_id is not None:
                self.in_flight = max(0, self.in_flight - 1)
        elif kind in _FINAL:
            self.unanswered += kind is JobEventKind.DEFERRED and event.detail == UNANSWERED
            self.downloading.discard(event.key)
            if event.prediction_id is not None:
                self.in_flight = max(0, self.in_flight - 1)
            previous = self.final.get(event.key)
            if previous is not None:
                self.finals[previous] -= 1
            self.final[event.key] = kind
            self.finals[kind] += 1
            if kind is JobEventKind.FAILED:
                self.errors[error_kind(event.detail)] += 1
                if event.prediction_id is not None:
                    self.failed_ids[event.key] = event.prediction_id

    def snapshot(self) -> dict[str, int | float]:
        """Return the counts so far, for the live display and the periodic log line.

        ``done`` and ``failed`` include the jobs a resume skipped, as the summary does.
        """
        now = time.monotonic()
        creates = self.recent_creates
        while creates and creates[0] < now - _RATE_WINDOW:
            creates.popleft()
        window = min(_RATE_WINDOW, max(now - self.started, 1e-9))
        return {
            "done": self.finals[JobEventKind.DONE] + self.skipped_done,
            "failed": self.finals[JobEventKind.FAILED] + len(self.skipped_failed),
            "canceled": self.finals[JobEventKind.CANCELED] + self.skipped_canceled,
            "deferred": self.finals[JobEventKind.DEFERRED],
            "in_flight": self.in_flight,
            "downloading": len(self.downloading),
            "creates_per_min": round(len(creates) * 60.0 / window, 1),
            "retries": sum(self.all_retries().values()),
            "bytes_downloaded": self.bytes_downloaded + max(0, self._arriving),
            "elapsed": now - self.started,
            **self._waiting(now),
        }

    def _waiting(self, now: float) -> dict[str, int | float]:
        """Count the creates and downloads awaited now, and the oldest wait in seconds."""
        counts = Counter(what for what, _ in self.waiting.values())
        since = min((t for _, t in self.waiting.values()), default=now)
        return {
            "waiting_creates": counts["create"],
            "waiting_downloads": counts["download"],
            "oldest_wait_seconds": round(now - since, 1),
        }

    def summary(
        self,
        *,
        predict_seconds: float,
        throttled_429: int,
        throttled_seconds: float,
        interrupted: bool,
        stopped_reason: str | None,
        journal_at_start: tuple[int, int, int] = (0, 0, 0),
        output_dir: str | None = None,
        journal: str | None = None,
        stopped_by_limit: bool = False,
        stopped_by_credit: bool = False,
        storage_error: str | None = None,
        partition: bool = False,
    ) -> RunSummary:
        """Freeze the counters into a `RunSummary`.

        ``partition`` (a run of one manifest, whose ``total`` is every job it was given):
        whatever did not end done, failed or canceled is deferred, so the rows add up to
        ``total``. A Redis worker's ``total`` counts the jobs it took, some of them
        settled by another (fenced, found done): only its own deferrals count there.

        ``journal_at_start`` is (runs, ``created`` records, jobs) of the journal as this
        run found it: the totals add this run's numbers to them.
        """
        runs, created, journaled = journal_at_start
        totals = {
            "runs": runs + 1,
            "predictions_created": created + self.predictions_created + self.found_after_restart,
        }
        earlier = journaled - self.journaled_seen if self.read_all_jobs else None
        finals = self.finals
        done = finals[JobEventKind.DONE] + self.skipped_done
        canceled = finals[JobEventKind.CANCELED] + self.skipped_canceled
        failed_keys = [k for k, v in self.final.items() if v is JobEventKind.FAILED]
        failed_keys += self.skipped_failed
        failed_keys.sort()
        failed = set(failed_keys) if self.failed_ids else set()
        return RunSummary(
            total=self.total,
            done=done,
            skipped_done=self.skipped_done,
            failed=len(failed_keys),
            # The rows partition the jobs: whatever did not end done, failed or canceled
            # was not started or is left running (deferred; jobs the stop kept from the
            # workers, and jobs whose worker was cut, never sent an event of their own).
            deferred=max(0, self.total - done - len(failed_keys) - canceled)
            if partition
            else finals[JobEventKind.DEFERRED],
            canceled=canceled,
            skipped_canceled=self.skipped_canceled,
            creates_sent=self.creates_sent,
            predictions_created=self.predictions_created,
            # Deferred unanswered, and creates a stop cut while their answer was awaited.
            creates_unanswered=self.unanswered
            + sum(what == "create" for what, _ in self.waiting.values()),
            reattached=self.reattached,
            retries=dict(self.all_retries()),
            bytes_downloaded=self.bytes_downloaded,
            files_downloaded=self.files_downloaded,
            wall_seconds=round(time.monotonic() - self.started, 3),
            predict_seconds=round(predict_seconds, 3),
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
            totals=totals,
            earlier_manifest_jobs=earlier,
            output_dir=output_dir,
            journal=journal,
            changed_keys=sorted(self.changed),
            stale_keys=sorted(self.stale),
            stopped_by_limit=stopped_by_limit,
            stopped_by_credit=stopped_by_credit,
            storage_error=storage_error,
            failed_links={k: web_url(p) for k, p in self.failed_ids.items() if k in failed}
            if self.failed_ids
            else {},
        )
