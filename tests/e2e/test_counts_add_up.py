"""However a run ends, its rows add up to the manifest's jobs, and everyone says the same.

The summary's rows (done, failed, canceled, not started / left running) partition the
jobs: the ones a stop kept from the workers and the ones whose worker was cut count too.
report.json, the printed summary and ``status`` afterwards agree, and the exit code is
the table's (engine._cli_exits): a deadline that stopped nothing is not exit 3, a 402
stops the creates with exit 4, a disk that fills mid-run ends with the summary (exit 5).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import JobEvent, JobEventKind, RunControl, run_jobs
from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from jobs import read_manifest
from tests.e2e.helpers import (
    FAILS,
    FLUX,
    LLAMA,
    cli_env,
    engine_cli,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Long enough that a stop at the fourth create lands while predictions still run.
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=1.5)})


def cli(*args: str, env: dict[str, str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return engine_cli(cwd, env, *args, timeout=120, **kw)


def summary_rows(stdout: str) -> dict[str, str]:
    """Return the printed summary's rows (``  what  value``) by name."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"^  (\S.*?)  +(\S.*)$", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def status_counts(tmp_path: Path, env: dict[str, str]) -> dict[str, int]:
    shown = cli("status", "m.jsonl", "--output-dir", "out", "--json", env=env, cwd=tmp_path)
    counts: dict[str, int] = json.loads(shown.stdout)["by_status"]
    return counts


def assert_partition(report: dict[str, Any], status: dict[str, int], jobs: int) -> None:
    """The rows add up to the jobs, and ``status`` tells the same story as the report."""
    rows = ("done", "failed", "canceled", "deferred")
    assert report["total"] == jobs, report
    assert sum(report[row] for row in rows) == jobs, report
    assert sum(status.values()) == jobs, status
    assert (status["done"], status["failed"], status["canceled"]) == (
        report["done"],
        report["failed"],
        report["canceled"],
    ), (report, status)
    left = status["pending"] + status["creating"] + status["running"] + status["succeeded"]
    assert left == report["deferred"], (report, status)


def stop_at_created(control: RunControl, count: int, stop: Callable[[RunControl], object]):
    seen = 0

    def on_event(event: JobEvent) -> None:
        nonlocal seen
        if event.kind is JobEventKind.CREATED:
            seen += 1
            if seen == count:
                stop(control)

    return on_event


def drain(control: RunControl) -> None:
    control.escalate("SIGINT")  # the first Ctrl-C


def cancel(control: RunControl) -> None:
    control.escalate("SIGINT")
    control.escalate("SIGINT")  # the second: cancel what runs


def leave(control: RunControl) -> None:
    control.leave()  # the third Ctrl-C, or a host that left


def deadline(control: RunControl) -> None:
    control.drain("deadline reached", limit=True)  # what drain_at_deadline does


# name: (stop after N creates, how, config changes, expected rows, exit code)
ENDINGS: dict[str, tuple[int | None, Any, dict[str, Any], dict[str, int], int]] = {
    "complete": (None, None, {}, {"done": 12}, 0),
    "drained by Ctrl-C": (4, drain, {}, {"done": 4, "deferred": 8}, 130),
    "canceled": (4, cancel, {}, {"canceled": 4, "deferred": 8}, 130),
    "left running": (4, leave, {}, {"deferred": 12}, 130),
    "budget": (None, None, {"max_predictions": 4}, {"done": 4, "deferred": 8}, 3),
    "deadline that stopped jobs": (4, deadline, {}, {"done": 4, "deferred": 8}, 3),
    "deadline that stopped nothing": (12, deadline, {"concurrency": 12}, {"done": 12}, 0),
}


def test_a_deadline_that_stopped_nothing_says_so_and_exits_0(emulator_server, tmp_path):
    # Two jobs, each created at once; the deadline comes while both still run. (Two
    # creates take milliseconds; 2 s of deadline leave a loaded CI machine room for them.)
    emulator_server.emulator.update(
        model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=3.0)}
    )
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))

    run = cli("run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05",
              "--deadline", "2", env=cli_env(emulator_server), cwd=tmp_path)  # fmt: skip

    assert run.returncode == 0, run.stderr
    rows = summary_rows(run.stdout)
    assert rows["done"].startswith("2 ")
    assert rows["stopped"] == "deadline reached (after the last create: it stopped nothing)"


@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_the_rows_partition_the_jobs_however_the_run_ends(emulator_server, tmp_path, ending):
    after, stop, changes, expected, code = ENDINGS[ending]
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(12))
    config = engine_config(emulator_server, tmp_path / "out", **{"concurrency": 4, **changes})
    control = RunControl()
    hook = None if stop is None else stop_at_created(control, after, stop)

    summary = await run_jobs(
        lambda: read_manifest(manifest), config, control=control, on_event=hook
    )

    rows = {"done": 0, "failed": 0, "canceled": 0, "deferred": 0, **expected}
    got = {row: getattr(summary, row) for row in rows}
    assert got == rows
    assert summary.exit_code == code
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {row: report[row] for row in rows} == rows
    assert report["exit_code"] == code
    assert_partition(report, status_counts(tmp_path, cli_env(emulator_server)), 12)


async def test_failed_jobs_are_one_row_and_the_rest_still_adds_up(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [*image_jobs(4), *({"id": f"bad{n}", "model": FAILS, "input": {}} for n in range(2))],
    )
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)

    summary = await run_jobs(lambda: read_manifest(manifest), config)

    assert (summary.done, summary.failed, summary.deferred, summary.exit_code) == (4, 2, 0, 1)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert_partition(report, status_counts(tmp_path, cli_env(emulator_server)), 6)


def test_a_budget_run_prints_rows_that_add_up_and_exits_3(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(8))
    env = cli_env(emulator_server)

    run = cli(
        "run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05",
        "--concurrency", "2", "--max-predictions", "3", env=env, cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 3, run.stderr
    rows = summary_rows(run.stdout)
    assert rows["jobs"] == "8"
    assert rows["done"].startswith("3 ")
    assert (rows["failed"], rows["canceled"]) == ("0", "0")
    assert rows["not started / left running"] == "5"
    assert rows["stopped"] == "max-predictions reached"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert_partition(report, status_counts(tmp_path, env), 8)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3


async def test_a_rerun_reports_canceled_jobs_as_canceled_not_failed(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=4)
    control = RunControl()
    await run_jobs(
        lambda: read_manifest(manifest),
        config,
        control=control,
        on_event=stop_at_created(control, 4, cancel),
    )
    env = cli_env(emulator_server)

    rerun = cli("run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05", env=env,
                cwd=tmp_path)  # fmt: skip

    assert rerun.returncode == 1, rerun.stderr  # the table: "were canceled"
    rows = summary_rows(rerun.stdout)
    assert rows["failed"] == "0"
    assert rows["canceled"] == "4 (4 by an earlier run, skipped: --retry-failed runs them)"
    assert rows["done"].startswith("2 ")
    assert "failed jobs" not in rerun.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["canceled"], report["skipped_canceled"], report["failed"]) == (4, 4, 0)
    assert_partition(report, status_counts(tmp_path, env), 6)


def test_a_402_stops_the_creates_keeps_the_jobs_pending_and_exits_4(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    env = cli_env(emulator_server)
    emulator_server.emulator.update(insufficient_credit=True)

    run = cli("run", "m.jsonl", "--output-dir", "out", "--concurrency", "3", env=env,
              cwd=tmp_path)  # fmt: skip

    assert run.returncode == 4, run.stderr
    assert "Traceback" not in run.stderr
    said = [
        line for line in run.stderr.splitlines() if "credit" in line and "run.finished" not in line
    ]
    assert said == [
        "stopped: the account has no credit (402); 6 jobs not started stay pending: add "
        "credit and run the same command again"
    ], run.stderr
    rows = summary_rows(run.stdout)
    assert (rows["failed"], rows["not started / left running"]) == ("0", "6")
    status = status_counts(tmp_path, env)
    assert status["pending"] == 6
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == 4
    assert_partition(report, status, 6)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def _small_files_only() -> None:
    import resource  # noqa: PLC0415 - in the child, before exec
    import signal  # noqa: PLC0415

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_disk_full_mid_run_ends_with_the_summary_and_exit_5(emulator_server, tmp_path):
    jobs = [
        {"id": f"v{n}", "model": "kling-ai/kling-video", "input": {"prompt": f"w {n}"}}
        for n in range(3)
    ]
    write_jsonl(tmp_path / "m.jsonl", jobs)
    env = cli_env(emulator_server)

    run = cli("run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.01", env=env,
              cwd=tmp_path, preexec_fn=_small_files_only)  # fmt: skip

    assert run.returncode == 5, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    assert "File too large" in errors[0]
    rows = summary_rows(run.stdout)
    assert rows["stopped"].startswith("storage error: ")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == 5
    assert_partition(report, status_counts(tmp_path, env), 3)
    # Paid and succeeded: the next run downloads them, so none is "failed".
    assert report["failed"] == 0
    assert not [r for r in journal_records(tmp_path / "out" / "journal.jsonl") if r["e"] == "done"]


def _tiny_files_only() -> None:
    import resource  # noqa: PLC0415 - in the child, before exec
    import signal  # noqa: PLC0415

    # The journal outgrows 6 KB after a dozen jobs, while predictions still run.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))


def test_a_journal_the_disk_refuses_mid_run_names_what_still_runs_and_how_to_cancel(
    emulator_server, tmp_path
):
    emulator_server.emulator.update(
        model_timings={LLAMA: ModelTiming(cold_start=0.05, run_time=0.5)}
    )
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": f"t{n}", "model": LLAMA, "input": {"prompt": f"hi {n}"}} for n in range(40)],
    )
    env = cli_env(emulator_server)

    run = cli("run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05",
              "--concurrency", "8", env=env, cwd=tmp_path,
              preexec_fn=_tiny_files_only)  # fmt: skip

    assert run.returncode == 5, run.stderr
    assert "Traceback" not in run.stderr
    said = (line for line in run.stderr.splitlines() if "run.finished" not in line)
    errors = [line for line in said if "too large" in line and "gallery" not in line]
    assert errors == [
        f"error: cannot write the journal {Path('out') / 'journal.jsonl'}: File too large"
    ], run.stderr
    rows = summary_rows(run.stdout)
    status = status_counts(tmp_path, env)
    assert status["running"] > 0  # journaled as running: the ones the notice names
    assert f"{status['running']} predictions are still running on Replicate" in run.stderr
    assert "stop them with: " in run.stderr
    assert " cancel m.jsonl --output-dir out" in run.stderr
    assert int(rows["not started / left running"]) == 40 - status["done"]
    assert rows["done"].startswith(f"{status['done']} ")
