"""The progress display follows a run from its events and agrees with the summary."""

from __future__ import annotations

import pytest

from engine import read_manifest, run_jobs
from engine._display import Progress
from tests.e2e.helpers import FAILS, engine_config, image_jobs, write_jsonl

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
