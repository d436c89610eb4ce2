"""Show a run to a person: the end-of-run table (and, on a terminal, live progress)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine.report import RunSummary

__all__ = ["render_summary"]


def render_summary(
    summary: RunSummary, output_dir: Path, *, console: Console | None = None
) -> None:
    """Print the summary table a person reads in the morning."""
    console = console or Console(file=sys.stdout)
    table = Table(title="Run summary", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("jobs", str(summary.total)),
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
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    for error, count in summary.common_errors:
        console.print(f"  {count} x {error}")
    if summary.failed_keys:
        shown = ", ".join(summary.failed_keys[:20])
        more = f" (+{len(summary.failed_keys) - 20} more)" if len(summary.failed_keys) > 20 else ""
        console.print(f"failed jobs: {shown}{more}")
    console.print(f"outputs in {output_dir}/ ; report in {output_dir / 'report.json'}")


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"  # pragma: no cover
