"""Steering a run: subsets, deadlines, budgets, and a report that matches the server."""

from __future__ import annotations

import json

import pytest

from engine import read_manifest, run_jobs
from engine._display import Progress
from tests.e2e.helpers import FLUX, engine_config, image_jobs, journal_records, write_jsonl

pytestmark = pytest.mark.anyio


async def test_only_runs_the_named_jobs(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(5))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, only=frozenset({"p0001", "p0003"}))

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.total, summary.done) == (2, 2)
    assert sorted(p.name for p in out.glob("*.png")) == ["p0001.png", "p0003.png"]
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 2


async def test_job_timeout_cancels_the_prediction_on_the_server(emulator_server, tmp_path):
    emulator_server.emulator.update(
        time_scale=1.0, model_timings={FLUX: {"cold_start": 0.0, "run_time": 30.0}}
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    config = engine_config(emulator_server, tmp_path / "out", job_timeout=0.3)
    progress = Progress(total=1, create_rate=config.create_rate, live=False)

    summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=progress.record)

    assert (summary.canceled, summary.done, summary.exit_code) == (1, 0, 1)
    snap = progress.snapshot()  # the panel counts a canceled job as the report does
    assert (snap["canceled"], snap["failed"], snap["queued"]) == (1, 0, 0)
    canceled = [r for r in journal_records(config.journal_path) if r["e"] == "canceled"]
    assert [(r["k"], r["why"]) for r in canceled] == [("p0000", "timeout")]
    requests = emulator_server.emulator.stats.snapshot()["requests"]
    assert requests.get("predictions.cancel 200") == 1


async def test_deadline_stops_creating_and_drains_what_runs(emulator_server, tmp_path):
    emulator_server.emulator.update(
        time_scale=1.0, model_timings={FLUX: {"cold_start": 0.0, "run_time": 0.2}}
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(30))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=2, deadline=0.5)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    created = emulator_server.emulator.stats.snapshot()["predictions_created"]
    assert summary.stopped_reason == "deadline reached"
    assert 0 < created < 30
    assert summary.done == created  # everything created before the deadline finished
    assert summary.exit_code == 3


async def test_max_predict_seconds_stops_creating_once_spent(emulator_server, tmp_path):
    emulator_server.emulator.update(
        time_scale=1.0, model_timings={FLUX: {"cold_start": 0.0, "run_time": 0.1}}
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(20))
    config = engine_config(
        emulator_server, tmp_path / "out", concurrency=1, max_predict_seconds=0.35
    )

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    spent = [r["pt"] for r in journal_records(config.journal_path) if r["e"] == "done"]
    assert summary.stopped_reason == "max-predict-seconds reached"
    # One at a time: creation stops with the first prediction that reaches the budget.
    assert sum(spent[:-1]) < 0.35 <= sum(spent)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == len(spent)


async def test_the_report_counts_what_the_emulator_counted(emulator_server, tmp_path):
    emulator_server.emulator.update(throttle_next_creates=3, fail_first_per_input=1)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(10))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)

    await run_jobs(lambda: read_manifest(manifest), config)

    report = json.loads((out / "report.json").read_text())
    stats = emulator_server.emulator.stats.snapshot()
    assert report["predictions_created"] == stats["predictions_created"] == 20
    assert report["throttled_429"] == stats["throttled"] == 3
    # Each image fits the first ranged read: one request per file.
    assert report["files_downloaded"] == stats["requests"]["outputs.get 206"] == 10
    assert report["retries"]["RateLimitedError"] == 3
    assert report["retries"]["ModelError"] == 10
    assert report["done"] == 10
    pt = [r["pt"] for r in journal_records(config.journal_path) if r.get("pt") is not None]
    assert report["predict_seconds"] == pytest.approx(sum(pt), abs=0.01)
