"""Nothing keeps billing: the Ctrl-C ladder names what it leaves, and ``cancel`` stops it."""

from __future__ import annotations

import json
import shlex
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from tests.e2e.helpers import (
    FLUX,
    cli_env,
    engine_cli,
    image_jobs,
    journal_records,
    run_argv,
    write_jsonl,
)


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Predictions that run far longer than any test: whatever is not canceled still runs.
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=600.0)})


class Run:
    """A ``run`` subprocess whose standard error is read line by line as it comes."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *extra: str) -> None:
        self.proc = subprocess.Popen(
            run_argv(*extra),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.01)
        raise AssertionError(f"no line with {text!r} in {timeout} s: {self.lines}")

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


def wait_for_created(journal: Path, count: int, timeout: float = 20.0) -> list[str]:
    """Wait until the run has counted ``count`` creates; return their ids in job-key order.

    Creates go out a few at once (the budget's burst), so their answers, and the journal's
    lines, may come in any order.
    """
    log = journal.parent.parent / "run.log"  # the run folds an event before logging it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count(" job.created ") >= count:
            created = [r for r in journal_records(journal) if r["e"] == "created"]
            ids = [r["p"] for r in sorted(created, key=lambda r: r["k"])]
            if len(ids) >= count:
                return ids
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} predictions were created in {timeout} s")


def server_status(server, prediction_id: str) -> str:
    answer = httpx.get(
        f"{server.base_url}/v1/predictions/{prediction_id}",
        headers={"Authorization": f"Bearer {server.token}"},
        verify=ssl.create_default_context(cafile=str(server.ca_file)),
    )
    return str(answer.json()["status"])


def test_three_ctrl_c_drain_then_cancel_then_leave_naming_the_cancel_command(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(4))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    run = Run(tmp_path, env, "--concurrency", "4")
    ids = wait_for_created(journal, 4)

    run.proc.send_signal(signal.SIGINT)
    run.wait_for_line("SIGINT: draining: 4 running, 0 downloading — Ctrl-C again to cancel them")
    # Cancels that never answer: the third Ctrl-C must not wait for them.
    emulator_server.emulator.update(latency_seconds=60.0)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for_line("SIGINT: canceling 4 running predictions on Replicate")
    run.proc.send_signal(signal.SIGINT)
    code = run.finish()

    assert code == 130, run.lines
    assert "4 predictions are still running on Replicate (and billing):" in run.lines
    for n, prediction_id in enumerate(ids):
        assert f"  p{n:04d}  https://replicate.com/p/{prediction_id}" in run.lines
    hint = run.wait_for_line("stop them with: ").removeprefix("stop them with: ")
    assert hint == "python -m engine cancel m.jsonl --output-dir out"
    assert not any(r["e"] == "canceled" for r in journal_records(journal))
    emulator_server.emulator.update(latency_seconds=0.0)
    command = shlex.split(hint)[3:]  # after "python -m engine": the exact command

    listed = engine_cli(tmp_path, env, *command, "--dry-run")

    assert listed.returncode == 0, listed.stderr
    assert "would cancel 4 predictions still running:" in listed.stderr
    for n, prediction_id in enumerate(ids):
        assert f"  p{n:04d}  https://replicate.com/p/{prediction_id}" in listed.stdout
        assert server_status(emulator_server, prediction_id) == "processing"

    canceled = engine_cli(tmp_path, env, *command)

    assert canceled.returncode == 0, canceled.stderr
    assert canceled.stdout.count("canceled  p") == 4
    assert {server_status(emulator_server, p) for p in ids} == {"canceled"}
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["requests"].get("predictions.cancel 200") == 4
    records = [r for r in journal_records(journal) if r["e"] == "canceled"]
    assert sorted((r["k"], r["p"], r["why"]) for r in records) == [
        (f"p{n:04d}", p, "cancel command") for n, p in enumerate(ids)
    ]

    again = engine_cli(tmp_path, env, *command)
    rerun = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out")

    assert again.returncode == 0
    assert "nothing is running according to" in again.stderr
    assert rerun.returncode == 1, rerun.stderr  # canceled jobs are skipped, as failed ones
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["reattached"], report["predictions_created"]) == (0, 0)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 4


def test_cancel_after_kill_9_stops_the_orphans_and_retry_failed_runs_them_again(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    run = Run(tmp_path, env, "--concurrency", "3")
    ids = wait_for_created(journal, 3)
    run.proc.kill()
    run.finish()
    status = engine_cli(tmp_path, env, "status", "m.jsonl", "--output-dir", "out")
    for n, prediction_id in enumerate(ids):
        assert f"  p{n:04d}: https://replicate.com/p/{prediction_id}" in status.stdout

    canceled = engine_cli(tmp_path, env, "cancel", "out/journal.jsonl")

    assert canceled.returncode == 0, canceled.stderr
    assert {server_status(emulator_server, p) for p in ids} == {"canceled"}
    status = engine_cli(tmp_path, env, "status", "m.jsonl", "--output-dir", "out", "--json")
    assert json.loads(status.stdout)["by_status"]["canceled"] == 3
    assert json.loads(status.stdout)["running"] == {}

    emulator_server.emulator.update(model_timings={FLUX: {"cold_start": 0.0, "run_time": 0.05}})
    retried = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out", "--retry-failed")

    assert retried.returncode == 0, retried.stderr
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 6


def test_a_job_edited_after_a_kill_cancels_the_prediction_it_left_running(
    emulator_server, tmp_path
):
    # The run is killed while both predictions run; the user then edits one job's input.
    # That job's old prediction would run (and bill) for nothing: it is canceled, and only
    # the edited job pays again. (--only: the other one's prediction runs for minutes.)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    run = Run(tmp_path, env, "--concurrency", "2")
    old_a, old_b = wait_for_created(journal, 2)
    run.proc.kill()
    run.finish()
    edited = image_jobs(2)
    edited[0]["input"] = {"prompt": "a wolf instead"}
    write_jsonl(tmp_path / "m.jsonl", edited)
    emulator_server.emulator.update(model_timings={FLUX: {"cold_start": 0.0, "run_time": 0.05}})

    again = engine_cli(tmp_path, env, "run", "m.jsonl", "--output-dir", "out", "--only", "p0000")

    assert again.returncode == 0, again.stderr
    assert server_status(emulator_server, old_a) == "canceled"
    assert server_status(emulator_server, old_b) in ("starting", "processing")  # not touched
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 3
    events = [(r["e"], r.get("p")) for r in journal_records(journal) if r["k"] == "p0000"]
    assert ("canceled", old_a) in events
    assert events[-1][0] == "done"
    assert "job.changed" in again.stderr
