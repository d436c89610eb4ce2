"""Show a run to a person: the end-of-run table (and, on a terminal, live progress)."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

import anyio
import structlog
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine.events import JobEvent, JobEventKind
from engine.report import RunSummary

__all__ = ["Progress", "render_summary"]


def render_summary(
    summary: RunSummary,
    output_dir: Path,
    *,
    manifest_jobs: int | None = None,
    console: Console | None = None,
) -> None:
    """Print the summary table a person reads in the morning.

    ``manifest_jobs`` is the manifest's size; a stopped run reached only some of its jobs.
    """
    console = console or Console(file=sys.stdout)
    output_dir = output_dir.resolve()
    rows: list[tuple[str, str]] = [
        ("jobs", _jobs_row(summary.total, manifest_jobs)),
        ("done", f"{summary.done} ({summary.skipped_done} already done before)"),
        ("failed", str(summary.failed)),
        ("not started / left running", str(summary.deferred)),
        ("canceled", str(summary.canceled)),
        ("predictions created", str(summary.predictions_created)),
        ("re-attached after restart", str(summary.reattached)),
        ("files downloaded", f"{summary.files_downloaded} ({_size(summary.bytes_downloaded)})"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
        ("throughput", f"{summary.throughput_per_min:.1f} jobs/min"),
        ("predict time (billed)", f"{summary.predict_seconds:.1f} s"),
        (
            "prediction p50 / p95",
            f"{_secs(summary.prediction_p50)} / {_secs(summary.prediction_p95)}",
        ),
        ("download p50 / p95", f"{_secs(summary.download_p50)} / {_secs(summary.download_p95)}"),
        (
            "429 answers / time throttled",
            f"{summary.throttled_429} / {summary.throttled_seconds:.1f} s",
        ),
    ]
    if summary.retries:
        rows.append(("retries", ", ".join(f"{k} {v}" for k, v in sorted(summary.retries.items()))))
    if summary.stopped_reason:
        rows.append(("stopped", summary.stopped_reason))
    lines: list[str] = []
    if console.is_terminal:
        table = Table(title="Run summary", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        for what, value in rows:
            table.add_row(what, Text(value))
        console.print(table)
    else:
        # A log file or a mail from cron: aligned lines that never wrap or split.
        width = max(len(what) for what, _ in rows)
        lines += ["Run summary", *(f"  {what:<{width}}  {value}" for what, value in rows)]
    lines += [f"  {count} x {error}" for error, count in summary.common_errors]
    if summary.failed_keys:
        shown = ", ".join(summary.failed_keys[:20])
        more = f" (+{len(summary.failed_keys) - 20} more)" if len(summary.failed_keys) > 20 else ""
        lines.append(f"failed jobs: {shown}{more}")
    lines.append(f"outputs in {output_dir}/ ; report in {output_dir / 'report.json'}")
    for line in lines:
        console.print(Text(line), soft_wrap=True, highlight=False)


def _jobs_row(reached: int, manifest_jobs: int | None) -> str:
    if manifest_jobs is None or manifest_jobs == reached:
        return str(reached)
    return f"{manifest_jobs} ({reached} reached before the stop)"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover


class Progress:
    """Follow a run from its events; show it live on a terminal, as a log line elsewhere.

    On a terminal a rich panel refreshes in place: done / failed / in flight / queued,
    creates per minute against the budget, bytes downloaded, ETA. Log lines printed on
    ``console`` appear above it. Elsewhere (cron, CI) a ``run.progress`` log event carries
    the same numbers: the first after ``first_interval`` seconds, then every ``interval``.
    """

    def __init__(
        self,
        total: int,
        create_rate: float,
        *,
        live: bool,
        interval: float = 30.0,
        first_interval: float = 5.0,
        console: Console | None = None,
    ) -> None:
        self.total = total
        self.create_rate = create_rate
        self.live = live
        self.interval = interval
        self.first_interval = first_interval
        self.console = console
        self.started = time.monotonic()
        self.done = 0
        self.failed = 0
        self.deferred = 0
        self.in_flight = 0
        self.created = 0
        self.retries = 0
        self.bytes = 0
        self._create_times: deque[float] = deque()

    def record(self, event: JobEvent) -> None:
        """Fold one job event into the counters (the runner's ``on_event`` hook)."""
        kind = event.kind
        # Skips first: a resume can skip a million jobs before any other event.
        if kind is JobEventKind.SKIPPED:
            self.done += event.detail == "done"
            self.failed += event.detail == "failed"
        elif kind in (JobEventKind.CREATED, JobEventKind.REATTACHED):
            self.in_flight += 1
            if kind is JobEventKind.CREATED:
                self.created += 1
                self._create_times.append(time.monotonic())
        elif kind is JobEventKind.DOWNLOADED:
            self.bytes += event.size
        elif kind is JobEventKind.RETRYING:
            self.retries += 1
            if event.prediction_id is not None:
                self.in_flight -= 1
        elif kind in (JobEventKind.DONE, JobEventKind.FAILED, JobEventKind.CANCELED):
            self.done += kind is JobEventKind.DONE
            self.failed += kind is not JobEventKind.DONE
            if event.prediction_id is not None:
                self.in_flight = max(0, self.in_flight - 1)
        elif kind is JobEventKind.DEFERRED:
            self.deferred += 1
            if event.prediction_id is not None:
                self.in_flight = max(0, self.in_flight - 1)

    def snapshot(self) -> dict[str, float | int | None]:
        """Return the numbers shown, for the display and the periodic log line."""
        now = time.monotonic()
        while self._create_times and self._create_times[0] < now - 60:
            self._create_times.popleft()
        elapsed = max(now - self.started, 1e-9)
        finished = self.done + self.failed + self.deferred
        queued = max(0, self.total - finished - self.in_flight)
        rate = finished / elapsed
        eta = (self.total - finished) / rate if rate > 0 and finished < self.total else None
        window = min(60.0, elapsed)
        return {
            "done": self.done,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "queued": queued,
            "creates_per_min": round(len(self._create_times) * 60.0 / window, 1),
            "create_budget_per_min": self.create_rate,
            "retries": self.retries,
            "bytes_downloaded": self.bytes,
            "eta_seconds": None if eta is None else round(eta),
        }

    def render(self) -> Table:
        """Return the live panel."""
        s = self.snapshot()
        table = Table(show_header=False, box=None, title="replicate batch", title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("done / total", f"{s['done']} / {self.total}")
        table.add_row("failed", str(s["failed"]))
        table.add_row("in flight / queued", f"{s['in_flight']} / {s['queued']}")
        table.add_row("creates/min (budget)", f"{s['creates_per_min']} ({self.create_rate:g})")
        table.add_row("retries", str(s["retries"]))
        table.add_row("downloaded", _size(int(s["bytes_downloaded"] or 0)))
        eta = s["eta_seconds"]
        table.add_row("ETA", "-" if eta is None else f"{int(eta) // 60} min {int(eta) % 60} s")
        return table

    async def run(self) -> None:
        """Refresh until cancelled: a live panel on a terminal, a log line elsewhere."""
        if self.live:
            console = self.console or Console(stderr=True)
            # The panel is redrawn by our loop only; stray writes to sys.stdout/stderr are
            # printed above it rather than through it.
            with Live(self.render(), console=console, auto_refresh=False, transient=False) as live:
                try:
                    while True:
                        await anyio.sleep(0.25)
                        live.update(self.render(), refresh=True)
                finally:
                    # The panel left on screen shows the final counts, not the last tick's.
                    live.update(self.render(), refresh=True)
        log = structlog.get_logger("engine.progress")
        await anyio.sleep(self.first_interval)
        while True:
            log.info("run.progress", total=self.total, **self.snapshot())
            await anyio.sleep(self.interval)
