"""Ctrl-C on a long run: drain and exit 130, then cancel on the second, then resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from tests.e2e.helpers import (
    FLUX,
    VIDEO,
    cli_env,
    image_jobs,
    journal_records,
    run_argv,
    write_jsonl,
)

ENGINE = [sys.executable, "-m", "engine"]


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Predictions long enough (3 s) that a signal lands while they run.
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=3.0)})


def start_run(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_argv(*extra),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_created(journal: Path, count: int, timeout: float = 20.0) -> None:
    """Wait until the run has counted ``count`` creates (its debug job.created lines)."""
    log = journal.parent.parent / "run.log"  # the run folds an event before logging it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(" job.created ") >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} predictions were created in {timeout} s")


def test_first_sigint_drains_what_runs_and_exits_130_with_nothing_left_running(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    proc = start_run(tmp_path, env, "--concurrency", "3")
    wait_for_created(journal, 3)

    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 130, stderr
    assert "SIGINT: draining: 3 running, 0 downloading — Ctrl-C again to cancel them" in stderr
    assert "still running on Replicate" not in stderr  # the drain waited for all of them
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["interrupted"], report["done"], report["exit_code"]) == (True, 3, 130)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3
    assert not any(r["e"] == "canceled" for r in journal_records(journal))

    resumed = subprocess.run(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (final["skipped_done"], final["predictions_created"]) == (3, 3)
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 6
    assert stats["duplicates"] == {}


def test_cancel_on_exit_cancels_on_the_first_sigint(emulator_server, tmp_path):
    # More jobs than workers: the producer waits on a full queue when the workers stop.
    write_jsonl(tmp_path / "m.jsonl", image_jobs(12))
    journal = tmp_path / "out" / "journal.jsonl"
    proc = start_run(tmp_path, cli_env(emulator_server), "--cancel-on-exit", "--concurrency", "4")
    wait_for_created(journal, 4)

    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "SIGINT: canceling 4 running predictions on Replicate" in stderr
    canceled = {r["k"] for r in journal_records(journal) if r["e"] == "canceled"}
    assert canceled == {"p0000", "p0001", "p0002", "p0003"}
    requests = emulator_server.emulator.stats.snapshot()["requests"]
    assert requests.get("predictions.cancel 200") == 4


def test_a_second_sigint_during_the_drain_cancels_running_predictions(emulator_server, tmp_path):
    # A big video keeps the first drain busy downloading while the flux jobs still run.
    emulator_server.emulator.update(video_size=400 * 1024 * 1024)
    write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "video", "model": VIDEO, "input": {"prompt": "waves"}}, *image_jobs(3)],
    )
    journal = tmp_path / "out" / "journal.jsonl"
    proc = start_run(tmp_path, cli_env(emulator_server), "--concurrency", "4")
    deadline = time.monotonic() + 20
    while not (journal.exists() and any(r["e"] == "succeeded" for r in journal_records(journal))):
        assert time.monotonic() < deadline, "the video never succeeded"
        time.sleep(0.01)

    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)  # let the first signal land before the second: two stages, not one
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)

    assert proc.returncode == 130, stderr
    assert "SIGINT: draining: 3 running, 1 downloading" in stderr
    assert "SIGINT: canceling 3 running predictions on Replicate" in stderr
    canceled = {r["k"] for r in journal_records(journal) if r["e"] == "canceled"}
    assert canceled == {"p0000", "p0001", "p0002"}
    requests = emulator_server.emulator.stats.snapshot()["requests"]
    assert requests.get("predictions.cancel 200") == 3
