"""A resume skips journaled jobs without keeping a copy of anything per skipped job."""

from __future__ import annotations

import tracemalloc

import pytest

from engine import JobEvent, JobEventKind, read_manifest, run_jobs
from engine._journal import JournalRecord
from tests.e2e.helpers import engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio

JOBS = 20_000


async def test_skipped_failed_jobs_cost_a_pointer_each_not_a_key(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(JOBS))
    config = engine_config(emulator_server, tmp_path / "out")
    config.output_dir.mkdir()
    with config.journal_path.open("wb") as journal:
        journal.write(JournalRecord.run().to_line())
        for i, job in enumerate(image_jobs(JOBS)):
            journal.write(
                JournalRecord.failed(
                    job["id"],
                    prediction_id=f"p{i}",
                    error="bad input",
                    error_class="ModelError",
                    permanent=True,
                    attempt=1,
                ).to_line()
            )
    skips = 0
    traced: list[int] = []

    def measure(event: JobEvent) -> None:
        nonlocal skips
        assert event.kind is JobEventKind.SKIPPED
        skips += 1
        if skips in (1, JOBS):
            traced.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        # trust_earlier_check=True as the CLI reads a manifest it checked: no duplicate index grows.
        summary = await run_jobs(
            lambda: read_manifest(manifest, trust_earlier_check=True), config, on_event=measure
        )
    finally:
        tracemalloc.stop()

    assert (summary.failed, summary.predictions_created) == (JOBS, 0)
    assert summary.failed_keys == sorted(job["id"] for job in image_jobs(JOBS))
    # The report lists every skipped failed key: a pointer to the replay's own string
    # (8 bytes, list slack included) is all a skip may keep, not a copy of the key
    # parsed from the manifest (57 bytes) nor a dict entry.
    assert (traced[1] - traced[0]) / (JOBS - 1) < 16
