"""End-to-end runs of the batch engine against the emulator over HTTPS."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
import sniffio
import stamina

from engine import JobEventKind, open_run, read_manifest, run_jobs
from engine._journal import JournalRecord
from tests.e2e.helpers import (
    FAILS,
    FLUX,
    LLAMA,
    SDXL,
    assert_files_match_journal,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


async def test_every_output_lands_on_disk_verified_and_journaled(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "two", "model": FLUX, "input": {"prompt": "two cats", "num_outputs": 2}},
            {"id": "sdxl", "model": SDXL, "input": {"prompt": "sunset"}},
            {"id": "text", "model": LLAMA, "input": {"prompt": "haiku about llamas"}},
            *image_jobs(5),
        ],
    )
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed, summary.exit_code) == (8, 0, 0)
    assert (out / "two_0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "two_1.png").exists()
    text = (out / "text.txt").read_text()
    assert text.strip()
    assert text.endswith("\n")
    assert not text.endswith("\n\n")
    assert assert_files_match_journal(out, config.journal_path) == 9
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 8
    assert stats["duplicates"] == {}
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 8
    assert report["predictions_created"] == 8


async def test_second_run_of_a_finished_manifest_creates_nothing(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    config = engine_config(emulator_server, tmp_path / "out")
    await run_jobs(lambda: read_manifest(manifest), config)
    created = emulator_server.emulator.stats.snapshot()["predictions_created"]

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == created == 6
    assert (again.done, again.skipped_done, again.predictions_created) == (6, 6, 0)


async def test_a_deleted_output_is_fetched_again_without_a_new_prediction(
    emulator_server, tmp_path
):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    await run_jobs(lambda: read_manifest(manifest), config)
    (out / "p0001.png").unlink()

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert (out / "p0001.png").exists()
    assert again.predictions_created == 0
    assert again.reattached == 1
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3


async def test_two_hundred_jobs_complete_under_injected_faults(emulator_server, tmp_path):
    emulator_server.emulator.update(
        fail_first_per_input=1,  # every job's first prediction fails transiently
        cut_first_downloads=1,  # every file's first download is cut halfway
        create_5xx_first=5,
        get_5xx_first=10,
        throttle_next_creates=5,
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(200))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, concurrency=32)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed) == (200, 0)
    assert assert_files_match_journal(out, config.journal_path) == 200
    stats = emulator_server.emulator.stats.snapshot()
    # Exactly the failed first attempt plus the successful retry for every job: a 5xx or
    # a 429 on create never led to a second paid prediction.
    assert stats["predictions_created"] == 400
    assert set(stats["duplicates"].values()) == {2}
    assert stats["downloads_cut"] >= 200


async def test_a_permanent_failure_is_not_retried_and_others_go_on(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "bad", "model": FLUX, "input": {"num_outputs": 2}}, *image_jobs(3)],
    )
    config = engine_config(emulator_server, tmp_path / "out")

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed, summary.exit_code) == (3, 1, 1)
    assert summary.failed_keys == ["bad"]
    failed = [r for r in journal_records(config.journal_path) if r["e"] == "failed"]
    assert [(r["k"], r["perm"]) for r in failed] == [("bad", True)]
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3


async def test_a_failing_model_is_retried_prediction_retries_times(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl", [{"id": "f", "model": FAILS, "input": {"prompt": "x"}}]
    )
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=2)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert summary.failed == 1
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3
    attempts = [r["a"] for r in journal_records(config.journal_path) if r["e"] == "created"]
    assert attempts == [1, 2, 3]


async def test_failed_jobs_are_rerun_only_with_retry_failed(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(4))
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)
    emulator_server.emulator.update(fail_first_per_input=1)
    first = await run_jobs(lambda: read_manifest(manifest), config)
    assert first.failed == 4

    skipped = await run_jobs(lambda: read_manifest(manifest), config)
    assert (skipped.failed, skipped.predictions_created) == (4, 0)
    assert skipped.failed_keys == ["p0000", "p0001", "p0002", "p0003"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["failed"], report["failed_keys"]) == (4, skipped.failed_keys)

    retried = await run_jobs(
        lambda: read_manifest(manifest), dataclasses.replace(config, retry_failed=True)
    )
    assert (retried.done, retried.predictions_created) == (4, 4)


async def test_max_predictions_stops_creating_at_exactly_the_limit(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(20))
    config = engine_config(emulator_server, tmp_path / "out", max_predictions=7)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 7
    assert summary.done == 7
    assert summary.stopped_reason == "max-predictions reached"
    assert summary.exit_code == 3


async def test_open_run_streams_job_events_to_a_host_app(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    config = engine_config(emulator_server, tmp_path / "out")
    kinds: list[tuple[str, JobEventKind]] = []

    async with open_run(lambda: read_manifest(manifest), config) as run:
        async for event in run.events:
            kinds.append((event.key, event.kind))

    assert run.summary is not None
    assert run.summary.done == 3
    for key in ("p0000", "p0001", "p0002"):
        mine = [k for j, k in kinds if j == key]
        assert mine == [
            JobEventKind.CREATING,
            JobEventKind.CREATED,
            JobEventKind.SUCCEEDED,
            JobEventKind.DOWNLOADED,
            JobEventKind.DONE,
        ]


async def test_in_flight_predictions_never_exceed_concurrency(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(40))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=4)

    await run_jobs(lambda: read_manifest(manifest), config)

    assert emulator_server.emulator.stats.snapshot()["peak_concurrent"] <= 4


async def test_a_journaled_prediction_the_server_does_not_know_is_created_once_more(
    emulator_server, tmp_path
):
    # What a run leaves when its token or its (emulated) server changes before a resume:
    # a prediction id this server answers 404 for.
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    out.mkdir()
    config.journal_path.write_bytes(
        JournalRecord.run().to_line()
        + JournalRecord.created(
            "p0001", prediction_id="gone0000000000000000000000", attempt=1
        ).to_line()
    )

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed, summary.exit_code) == (3, 0, 0)
    assert (out / "p0001.png").exists()
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3
    records = [r for r in journal_records(config.journal_path) if r["k"] == "p0001"]
    assert [r["e"] for r in records] == [
        *("created", "failed"),  # the unknown prediction, given up
        *("creating", "created", "succeeded", "file", "done"),  # one new prediction
    ]
    assert records[1]["cls"] == "InvalidRequestError"
    assert records[-1]["p"] != "gone0000000000000000000000"


async def test_polls_failing_past_their_retries_defer_the_job_and_the_next_run_reattaches(
    emulator_server, tmp_path
):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, call_attempts=2)
    # 500, which the replicate client does not retry itself: only our (test-fast) retries run.
    emulator_server.emulator.update(get_5xx_first=1_000, fault_status=500)

    with stamina.set_testing(True, attempts=2):
        first = await run_jobs(lambda: read_manifest(manifest), config)

    assert (first.done, first.failed, first.deferred, first.exit_code) == (0, 0, 1, 1)
    assert not (out / "p0000.png").exists()
    emulator_server.emulator.update(get_5xx_first=0)

    second = await run_jobs(lambda: read_manifest(manifest), config)

    assert (second.done, second.reattached, second.predictions_created) == (1, 1, 0)
    assert (out / "p0000.png").exists()
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 1


def test_an_asyncio_app_runs_a_batch_and_gets_its_context_back(emulator_server, tmp_path):
    # An app on plain asyncio.run (not anyio.run, which names the library for sniffio):
    # the engine names it for its own run and leaves the app's context as it found it.
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(4))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)

    async def app() -> tuple[int, str | None, str | None]:
        before = sniffio.current_async_library_cvar.get()
        summary = await run_jobs(lambda: read_manifest(manifest), config)
        return summary.done, before, sniffio.current_async_library_cvar.get()

    assert asyncio.run(app()) == (4, None, None)
    assert assert_files_match_journal(out, config.journal_path) == 4
