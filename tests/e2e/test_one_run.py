"""One run owns a journal at a time: a second run exits 2 at once naming the holder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import JournalLockedError, run_jobs
from engine.emulator import EmulatorConfig
from engine.emulator.config import ModelTiming
from jobs import Job, ModelRef
from tests.e2e.helpers import (
    FLUX,
    cli_env,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)
from tests.e2e.test_cli import ENGINE, run_cli

JOBS = 8


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    # Predictions long enough (1.5 s) that two runs started together overlap.
    return EmulatorConfig(model_timings={FLUX: ModelTiming(cold_start=0.05, run_time=1.5)})


def start_run(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", "--poll-interval", "0.05"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def hold_lock(journal: Path) -> Iterator[subprocess.Popen[str]]:
    """Run a process that holds ``journal``'s lock while the block runs (then SIGKILL)."""
    code = (
        "import sys, pathlib\n"
        "from engine._journal import JournalLock\n"
        "lock = JournalLock(pathlib.Path(sys.argv[1])); lock.acquire()\n"
        "print('held', flush=True); sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(journal)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "held\n"
            yield child
        finally:
            child.kill()


def created(server) -> int:
    return server.emulator.stats.snapshot()["predictions_created"]


def test_two_runs_started_together_pay_each_job_once(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(JOBS))
    env = cli_env(emulator_server)

    first, second = start_run(tmp_path, env), start_run(tmp_path, env)
    outcomes = [(p.pid, p.wait(timeout=120), p.communicate()[1]) for p in (first, second)]

    assert created(emulator_server) == JOBS
    codes = sorted(code for _, code, _ in outcomes)
    assert codes in ([0, 0], [0, 2]), outcomes
    for pid, code, stderr in outcomes:
        if code == 2:  # the loser names the winner's pid
            (winner,) = [p for p, _, _ in outcomes if p != pid]
            assert f"pid {winner} on" in stderr
            assert "in use" in stderr
            assert "Traceback" not in stderr


def test_a_held_journal_refuses_a_run_and_serves_status_and_export(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    assert (
        run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path).returncode == 0
    )
    journal = tmp_path / "out" / "journal.jsonl"
    before = journal.read_bytes()
    with hold_lock(journal) as holder:
        refused = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)
        status = run_cli("status", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)
        export = run_cli("export", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    assert refused.returncode == 2
    assert f"pid {holder.pid} on" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert journal.read_bytes() == before  # not even a run header
    assert status.returncode == 0, status.stderr
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.splitlines()) == 3
    assert created(emulator_server) == 3


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(JOBS))
    env = cli_env(emulator_server)
    journal = tmp_path / "out" / "journal.jsonl"
    run = start_run(tmp_path, env)
    deadline = time.monotonic() + 60
    while not journal.exists() or not any(r["e"] == "created" for r in journal_records(journal)):
        assert time.monotonic() < deadline
        assert run.poll() is None
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    lock = json.loads((tmp_path / "out" / "journal.jsonl.lock").read_text())
    assert lock["pid"] == run.pid  # the text outlives the holder; the kernel's lock does not

    again = run_cli("run", "m.jsonl", "--output-dir", "out", env=env, cwd=tmp_path, timeout=120)

    assert again.returncode == 0, again.stderr
    assert created(emulator_server) == JOBS  # re-attached, never paid twice
    done = {r["k"] for r in journal_records(journal) if r["e"] == "done"}
    assert len(done) == JOBS


@pytest.mark.anyio
async def test_run_jobs_raises_journal_locked_error_while_another_process_holds_it(
    emulator_server, tmp_path
):
    out = tmp_path / "out"
    with hold_lock(out / "journal.jsonl") as holder, pytest.raises(JournalLockedError) as caught:
        await run_jobs(
            [Job("x", ModelRef.parse(FLUX), {"prompt": "x"}, "x", explicit_id=True)],
            engine_config(emulator_server, out),
        )
    assert caught.value.holder is not None
    assert f"pid {holder.pid}" in caught.value.holder
    assert created(emulator_server) == 0
