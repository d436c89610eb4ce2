"""Show a run to a person: the end-of-run table (and, on a terminal, live progress)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from engine._control import StopStage
from engine._events import JobEvent
from engine._logs import get_logger
from engine._pricing import billing_rows
from engine._report import RunSummary
from engine._stats import RunStats
from engine._wording import plural
from jobs import ENGINE_FILES

__all__ = ["Progress", "render_summary"]


class _SummaryConsole(Console):
    """Standard output's console: a reader that went away is a `BrokenPipeError`.

    rich would exit 1 on its own; the CLI ends such a command with 141, as it says.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True  # what is left of the summary is dropped
        raise BrokenPipeError


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
    console = console or _SummaryConsole(file=sys.stdout)
    output_dir = output_dir.resolve()
    rows: list[tuple[str, str]] = [
        ("jobs", _jobs_row(summary.total, manifest_jobs)),
        ("done", f"{summary.done} ({summary.skipped_done} already done before)"),
        ("failed", str(summary.failed)),
        ("not started / left running", str(summary.deferred)),
        ("canceled", _canceled_row(summary)),
        ("predictions created", str(summary.predictions_created)),
        *_unanswered_rows(summary),
        ("re-attached after restart", str(summary.reattached)),
        *_totals_rows(summary),
        ("files downloaded", f"{summary.files_downloaded} ({_size(summary.bytes_downloaded)})"),
        ("wall time", f"{summary.wall_seconds:.1f} s"),
        ("throughput", _throughput(summary.throughput_per_min)),
        ("predict time", f"{summary.predict_seconds:.1f} s"),
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
    rows += billing_rows(summary.billing)
    if summary.retries:
        rows.append(("retries", ", ".join(f"{k} {v}" for k, v in sorted(summary.retries.items()))))
    if summary.stopped_reason:
        rows.append(("stopped", _stopped_row(summary)))
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
        lines.append(f"failed jobs ({len(summary.failed_keys)}):")
        for key in summary.failed_keys[:20]:
            link = summary.failed_links.get(key)
            lines.append(f"  {key}  {link}" if link else f"  {key}")
        if len(summary.failed_keys) > 20:
            lines.append(f"  ... and {len(summary.failed_keys) - 20} more (report.json has all)")
    for keys, what in (
        (summary.changed_keys, "changed since done, re-run (old outputs kept as *.before-*)"),
        (summary.stale_keys, "changed since done, NOT re-run (--on-changed report)"),
    ):
        if keys:
            more = f" (+{len(keys) - 20} more)" if len(keys) > 20 else ""
            lines.append(f"{what}: {', '.join(keys[:20])}{more}")
    where = output_dir.resolve()
    lines.append(f"outputs in {where}/ ; report in {where / ENGINE_FILES.report}")
    for line in lines:
        console.print(Text(line), soft_wrap=True, highlight=False)


def _stopped_row(summary: RunSummary) -> str:
    reason = summary.stopped_reason or ""
    if summary.stopped_by_limit and not summary.deferred and not summary.interrupted:
        return f"{reason} (after the last create: it stopped nothing)"
    return reason


def _canceled_row(summary: RunSummary) -> str:
    earlier = summary.skipped_canceled
    if not earlier:
        return str(summary.canceled)
    return f"{summary.canceled} ({earlier} by an earlier run, skipped: --retry-failed runs them)"


def _throughput(per_min: float | None) -> str:
    return "-" if per_min is None else f"{per_min:.1f} jobs/min"


def _unanswered_rows(summary: RunSummary) -> list[tuple[str, str]]:
    n = summary.creates_unanswered
    return [("creates sent, answer lost", f"{n} (may be billed)")] if n else []


def _totals_rows(summary: RunSummary) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    runs = summary.totals.get("runs", 1)
    if runs > 1:
        created = summary.totals.get("predictions_created", summary.predictions_created)
        rows.append((f"predictions created, all {runs} runs", str(created)))
    earlier = summary.earlier_manifest_jobs
    if earlier:
        rows.append(("in the journal, not in this manifest", f"{earlier} (earlier versions)"))
    return rows


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


def waiting_text(numbers: Mapping[str, float | int | str | None]) -> str:
    """Say what the run is waiting on: "3 creates, 1 download (oldest 42 s)" or "-"."""
    parts = [
        plural(n, what)
        for what, n in (
            ("create", int(numbers["waiting_creates"] or 0)),
            ("download", int(numbers["waiting_downloads"] or 0)),
        )
        if n
    ]
    if not parts:
        return "-"
    return f"{', '.join(parts)} (oldest {numbers['oldest_wait_seconds']:.0f} s)"


class Progress:
    """Show a run live on a terminal, as a log line elsewhere: a view of `RunStats`.

    On a terminal a rich panel refreshes in place: done / failed / in flight / queued,
    creates per minute against the budget, bytes downloaded, ETA; log lines printed on
    ``console`` appear above it. Elsewhere (cron, CI) a ``run.progress`` log event carries
    the same numbers: the first after ``first_interval`` seconds, then every ``interval``.
    The counting is `RunStats`'s (``record`` is its fold), so the panel and the report agree.
    """

    def __init__(
        self,
        total: int,
        create_rate: float,
        *,
        live: bool,
        interval: float = 30.0,
        stats: RunStats | None = None,
        first_interval: float = 5.0,
        console: Console | None = None,
    ) -> None:
        self.total = total
        self.create_rate = create_rate
        self.live = live
        self.interval = interval
        self.stats = stats if stats is not None else RunStats()
        self.first_interval = first_interval
        self.console = console
        self.stage: StopStage | None = None  # how far Ctrl-C went, set by the signal handler

    def record(self, event: JobEvent) -> None:
        """Fold one job event into the stats (the runner's ``on_event`` hook)."""
        self.stats.record(event)

    def snapshot(self) -> dict[str, float | int | str | None]:
        """Return the numbers shown: the stats' snapshot, plus queued and the ETA."""
        s = self.stats.snapshot()
        elapsed = max(float(s["elapsed"]), 1e-9)
        finished = int(s["done"] + s["failed"] + s["canceled"] + s["deferred"])
        in_flight = int(s["in_flight"])
        queued = max(0, self.total - finished - in_flight)
        rate = finished / elapsed
        eta = (self.total - finished) / rate if rate > 0 and finished < self.total else None
        return {
            "done": s["done"],
            "failed": s["failed"],
            "canceled": s["canceled"],
            "in_flight": in_flight,
            "queued": queued,
            "creates_per_min": s["creates_per_min"],
            "create_budget_per_min": self.budget_per_min(),
            "retries": s["retries"],
            "bytes_downloaded": s["bytes_downloaded"],
            "eta_seconds": None if eta is None else round(eta),
            "stopping": self.stage_line(),
            "waiting_creates": s["waiting_creates"],
            "waiting_downloads": s["waiting_downloads"],
            "oldest_wait_seconds": s["oldest_wait_seconds"],
        }

    def budget_per_min(self) -> float:
        """Return the create budget now: the run's (a low-credit answer lowers it), else
        the configured one."""
        live = self.stats.create_rate
        return self.create_rate if live is None else live()

    def stage_line(self) -> str | None:
        """Say where the stop stands and what the next Ctrl-C does (None while running)."""
        stage = self.stage
        if stage is None:
            return None
        downloading = len(self.stats.downloading)
        running = max(0, self.stats.in_flight - downloading)
        if stage is StopStage.DRAINING:
            return (
                f"draining: {running} running, {downloading} downloading"
                " — Ctrl-C again to cancel them"
            )
        if stage is StopStage.CANCELING:
            return (
                f"canceling {plural(running, 'running prediction')} on Replicate"
                " — Ctrl-C again to exit now and leave them running"
            )
        return f"exiting now: {plural(running, 'running prediction')} stay in the journal"

    def render(self) -> Table:
        """Return the live panel."""
        s = self.snapshot()
        table = Table(show_header=False, box=None, title="replicate batch", title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("done / total", f"{s['done']} / {self.total}")
        table.add_row("failed / canceled", f"{s['failed']} / {s['canceled']}")
        table.add_row("in flight / queued", f"{s['in_flight']} / {s['queued']}")
        budget = float(s["create_budget_per_min"] or 0)
        table.add_row("creates/min (budget)", f"{s['creates_per_min']} ({budget:g})")
        table.add_row("waiting", waiting_text(s))
        table.add_row("retries", str(s["retries"]))
        table.add_row("downloaded", _size(int(s["bytes_downloaded"] or 0)))
        eta = s["eta_seconds"]
        table.add_row("ETA", "-" if eta is None else f"{int(eta) // 60} min {int(eta) % 60} s")
        return table

    def view(self) -> RenderableType:
        """Return the panel, and under it, once Ctrl-C was pressed, the stop stage's line."""
        line = self.stage_line()
        if line is None:
            return self.render()
        return Group(self.render(), Text(f"stopping: {line}", style="bold yellow"))

    async def run(self) -> None:
        """Refresh until cancelled: a live panel on a terminal, a log line elsewhere."""
        if self.live:
            console = self.console or Console(stderr=True)
            # The panel is redrawn by our loop only; stray writes to sys.stdout/stderr are
            # printed above it rather than through it.
            with Live(self.view(), console=console, auto_refresh=False, transient=False) as live:
                try:
                    while True:
                        await anyio.sleep(0.25)
                        live.update(self.view(), refresh=True)
                finally:
                    # The panel left on screen shows the final counts, not the last tick's.
                    live.update(self.view(), refresh=True)
        log = get_logger("engine.progress")
        await anyio.sleep(self.first_interval)
        while True:
            numbers = self.snapshot()
            if numbers["stopping"] is None:
                del numbers["stopping"]
            log.info("run.progress", total=self.total, waiting=waiting_text(numbers), **numbers)
            await anyio.sleep(self.interval)
