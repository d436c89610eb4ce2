"""The report and status tell the truth across runs and manifest edits.

report.json keeps this run's numbers and the totals over the whole journal; a create
answered 5xx and found by listing was paid, so it counts as created; the most common
errors are grouped by error, ids masked; a run that only skipped has no throughput;
paths are absolute; status and the report count this manifest's jobs and report the
journal's other jobs apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import run_jobs
from jobs import read_manifest
from tests.e2e.helpers import FAILS, FLUX, cli_env, engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio

ENGINE = [sys.executable, "-m", "engine"]


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def report(out: Path) -> dict:  # type: ignore[type-arg]
    data: dict = json.loads((out / "report.json").read_text())  # type: ignore[type-arg]
    return data


async def test_the_report_keeps_totals_over_every_run_of_the_journal(emulator_server, tmp_path):
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    first = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    await run_jobs(lambda: read_manifest(first), config)
    grown = write_jsonl(tmp_path / "m.jsonl", image_jobs(5))

    second = await run_jobs(lambda: read_manifest(grown), config)

    assert (second.predictions_created, second.skipped_done, second.done) == (2, 3, 5)
    assert second.totals == {"runs": 2, "predictions_created": 5}
    written = report(out)
    assert written["predictions_created"] == 2
    assert written["totals"] == {"runs": 2, "predictions_created": 5}
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 5


async def test_a_prediction_found_after_a_kill_counts_once_in_the_totals(emulator_server, tmp_path):
    out = tmp_path / "out"
    config = engine_config(emulator_server, out)
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    await run_jobs(lambda: read_manifest(manifest), config)
    # What a kill between sending the create and journaling its id leaves behind.
    lines = config.journal_path.read_text().splitlines(keepends=True)
    creating = next(n for n, line in enumerate(lines) if json.loads(line)["e"] == "creating")
    config.journal_path.write_text("".join(lines[: creating + 1]))
    (out / "p0000.png").unlink()

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert (again.done, again.predictions_created, again.reattached) == (1, 0, 1)
    assert again.totals["predictions_created"] == 1
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 1


async def test_a_create_answered_5xx_then_found_by_listing_counts_as_created(
    emulator_server, tmp_path
):
    # The server stores the prediction, then answers 500: paid, its answer lost.
    emulator_server.emulator.update(
        create_5xx_first=1, create_5xx_after_store=True, fault_status=500
    )
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    config = engine_config(emulator_server, tmp_path / "out")

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 1
    assert (summary.done, summary.predictions_created, summary.reattached) == (1, 1, 0)
    assert summary.totals["predictions_created"] == 1


async def test_most_common_errors_group_failures_of_one_kind(emulator_server, tmp_path):
    jobs = [{"id": f"f{n}", "model": FAILS, "input": {"prompt": f"x {n}"}} for n in range(5)]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert summary.failed == 5
    assert len(summary.common_errors) == 1, summary.common_errors
    error, count = summary.common_errors[0]
    assert count == 5
    assert error.startswith("ModelError: prediction <id> failed: ")
    assert "always fails" in error
    assert report(tmp_path / "out")["common_errors"] == [{"error": error, "count": 5}]


async def test_a_run_that_only_skipped_has_no_throughput(emulator_server, tmp_path):
    out = tmp_path / "out"
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(4))
    config = engine_config(emulator_server, out)
    first = await run_jobs(lambda: read_manifest(manifest), config)
    assert first.throughput_per_min is not None
    assert first.throughput_per_min > 0

    again = await run_jobs(lambda: read_manifest(manifest), config)

    assert (again.done, again.skipped_done) == (4, 4)
    assert again.throughput_per_min is None
    assert report(out)["throughput_per_min"] is None


def test_the_summary_names_absolute_paths(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    result = cli(
        "run", str(manifest), "--output-dir", "out", env=cli_env(emulator_server), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    where = tmp_path / "out"
    flat = result.stdout.replace("\n", "")  # the table's console wraps long lines
    assert f"outputs in {where}/" in flat
    assert f"report in {where / 'report.json'}" in flat
    written = report(where)
    assert written["output_dir"] == str(where)
    assert written["journal"] == str(where / "journal.jsonl")


def test_status_counts_this_manifests_jobs_and_the_journals_others_apart(emulator_server, tmp_path):
    env = cli_env(emulator_server)
    # Jobs without ids: editing one's input gives it a new key.
    jobs = [{"model": FLUX, "input": {"prompt": f"p {n}"}} for n in range(3)]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    assert cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path).returncode == 0
    jobs[1]["input"] = {"prompt": "p 1, edited"}
    write_jsonl(manifest, jobs)

    before = cli("status", str(manifest), "--output-dir", "out", "--json", env=env, cwd=tmp_path)
    text = cli("status", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    counts = json.loads(before.stdout)
    assert counts["jobs"] == 3
    assert counts["by_status"]["done"] == 2
    assert counts["by_status"]["pending"] == 1
    assert counts["earlier_manifest_jobs"] == 1
    # The table (engine._cli_exits): a pending job has not run, so it needs no look.
    assert before.returncode == 0
    assert "1 from earlier versions of the manifest" in text.stdout

    ran = cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)
    after = cli("status", str(manifest), "--output-dir", "out", "--json", env=env, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert report(tmp_path / "out")["earlier_manifest_jobs"] == 1
    assert report(tmp_path / "out")["total"] == 3
    counts = json.loads(after.stdout)
    assert (counts["jobs"], counts["by_status"]["done"], counts["earlier_manifest_jobs"]) == (
        3,
        3,
        1,
    )
    assert after.returncode == 0
