"""The progress display follows a run from its events and agrees with the summary."""

from __future__ import annotations

import io

import anyio
import pytest
from rich.console import Console

from engine import JobEvent, JobEventKind, read_manifest, run_jobs
from engine._display import Progress
from engine._runner import run_jobs_counted
from tests.e2e.helpers import FAILS, VIDEO, engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio


async def test_progress_counts_agree_with_the_summary(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [*image_jobs(6), {"id": "bad", "model": FAILS, "input": {"prompt": "x"}}],
    )
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)
    progress = Progress(total=7, create_rate=config.create_rate, live=False)

    summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=progress.record)

    snap = progress.snapshot()
    assert (snap["done"], snap["failed"], snap["in_flight"], snap["queued"]) == (6, 1, 0, 0)
    # One fold: the panel's numbers are the report's.
    assert (snap["done"], snap["failed"], snap["canceled"]) == (
        summary.done,
        summary.failed,
        summary.canceled,
    )
    assert snap["bytes_downloaded"] == summary.bytes_downloaded > 0
    assert snap["eta_seconds"] is None  # nothing left to do
    assert (snap["waiting_creates"], snap["waiting_downloads"]) == (0, 0)  # none left
    table = progress.render()
    assert table.row_count == 8  # the seven counts and what is waiting


async def test_progress_counts_the_jobs_a_resume_skips(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [*image_jobs(6), {"id": "bad", "model": FAILS, "input": {"prompt": "x"}}],
    )
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)
    await run_jobs(lambda: read_manifest(manifest), config)
    progress = Progress(total=7, create_rate=config.create_rate, live=False)

    again = await run_jobs(lambda: read_manifest(manifest), config, on_event=progress.record)

    assert (again.done, again.skipped_done, again.failed, again.predictions_created) == (6, 6, 1, 0)
    assert again.failed_keys == ["bad"]
    snap = progress.snapshot()
    assert (snap["done"], snap["failed"], snap["in_flight"], snap["queued"]) == (6, 1, 0, 0)


async def test_a_large_download_counts_its_bytes_as_they_arrive(emulator_server, tmp_path):
    emulator_server.emulator.update(video_size=64 * 1024 * 1024)
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "video", "model": VIDEO, "input": {"prompt": "waves"}}]
    )
    config = engine_config(emulator_server, tmp_path / "out")
    progress = Progress(total=1, create_rate=config.create_rate, live=False)
    seen_mid_file: list[int] = []  # bytes shown while no file was finished yet

    async def watch() -> None:
        while True:
            snap = progress.snapshot()
            if progress.stats.files_downloaded == 0 and int(snap["bytes_downloaded"] or 0) > 0:
                seen_mid_file.append(int(snap["bytes_downloaded"] or 0))
            await anyio.sleep(0.002)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        summary = await run_jobs_counted(
            lambda: read_manifest(manifest), config, stats=progress.stats
        )
        tg.cancel_scope.cancel()

    assert summary.bytes_downloaded == 64 * 1024 * 1024
    partial = [n for n in seen_mid_file if n < summary.bytes_downloaded]
    assert partial, "the bytes of the video showed only once it was done"
    assert partial == sorted(partial)  # they grow as the file arrives
    assert progress.snapshot()["bytes_downloaded"] == summary.bytes_downloaded
    assert progress.render().row_count == 8  # the seven counts and what is waiting


async def test_the_progress_line_counts_retries_as_they_happen(emulator_server, tmp_path):
    # Each create's first answer is a 429: the gateway retries it (an HTTP retry, not a
    # new prediction), and the line shown while the run goes on counts it.
    emulator_server.emulator.update(throttle_next_creates=1)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=1)
    progress = Progress(total=2, create_rate=config.create_rate, live=False)
    shown: list[int | float | str | None] = []

    def on_done(event: JobEvent) -> None:
        if event.kind is JobEventKind.DONE and not shown:
            shown.append(progress.snapshot()["retries"])

    summary = await run_jobs_counted(
        lambda: read_manifest(manifest), config, stats=progress.stats, on_event=on_done
    )

    assert shown == [1]
    assert summary.retries == {"RateLimitedError": 1}
    assert (
        emulator_server.emulator.stats.snapshot()["requests"]["models.predictions.create 429"] == 1
    )


async def test_the_progress_line_shows_the_budget_a_low_credit_answer_lowered(
    emulator_server, tmp_path
):
    emulator_server.emulator.update(throttle_next_creates=1, low_credit=True)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    config = engine_config(emulator_server, tmp_path / "out", create_rate=600.0)
    progress = Progress(total=1, create_rate=config.create_rate, live=False)
    before = progress.snapshot()["create_budget_per_min"]

    await run_jobs_counted(lambda: read_manifest(manifest), config, stats=progress.stats)

    assert (before, progress.snapshot()["create_budget_per_min"]) == (600.0, 6)
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(progress.render())
    budget = [line for line in console.export_text().splitlines() if "budget" in line]
    assert budget[0].rstrip().endswith("(6)"), budget
