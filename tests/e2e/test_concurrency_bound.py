"""``--concurrency`` has an upper bound, and a large one costs only the jobs in hand.

A user's ``--concurrency 99999999999999999999`` on six jobs was killed out of memory at
24 GB: one task was started per unit of concurrency before any job arrived. Now a task
starts only for a job in hand, and a value past `MAX_CONCURRENCY` is refused from every
source, before any API call, in one line with exit 2.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from engine import ConfigError, EngineConfig, JobEvent, run_jobs
from engine._config import MAX_CONCURRENCY
from jobs import read_manifest
from tests.e2e.helpers import cli_env, engine_config, image_jobs, write_jsonl
from tests.e2e.test_refusals import assert_nothing_paid, assert_refused

ENGINE = [sys.executable, "-m", "engine"]
HUGE = "99999999999999999999"


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, "run", "m.jsonl", "--output-dir", "out", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("source", ["flag", "environment", "settings file"])
@pytest.mark.parametrize("value", [HUGE, str(MAX_CONCURRENCY + 1)])
def test_a_concurrency_past_the_bound_is_refused_before_any_call(
    emulator_server, tmp_path, source, value
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(6))
    env = cli_env(emulator_server)
    args: tuple[str, ...] = ()
    if source == "flag":
        args = ("--concurrency", value)
    elif source == "environment":
        env["REPLICATE_BATCH_CONCURRENCY"] = value
    else:
        (tmp_path / "s.yaml").write_text(f"concurrency: {value}\n")
        args = ("--config", "s.yaml")

    result = _run(tmp_path, env, *args)

    line = assert_refused(result, "concurrency", f"at most {MAX_CONCURRENCY}", value)
    assert source.split()[0] in line or "--concurrency" in line
    assert_nothing_paid(emulator_server)
    assert not (tmp_path / "out" / "journal.jsonl").exists()


def test_the_bound_is_the_library_s_too() -> None:
    with pytest.raises(ConfigError, match=f"concurrency must be 1 to {MAX_CONCURRENCY}"):
        EngineConfig(concurrency=MAX_CONCURRENCY + 1)


@pytest.mark.anyio
async def test_the_largest_concurrency_starts_a_task_per_job_in_hand_only(
    emulator_server, tmp_path
):
    # A first run does one job; the second run's producer skips it before handing out
    # the other six, and counts the tasks alive at that moment (and at every event).
    first = write_jsonl(tmp_path / "one.jsonl", image_jobs(1))
    config = engine_config(emulator_server, tmp_path / "out", concurrency=MAX_CONCURRENCY)
    assert (await run_jobs(lambda: read_manifest(first), config)).done == 1
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(7))
    peak = 0

    def count_tasks(_event: JobEvent) -> None:
        nonlocal peak
        peak = max(peak, len(asyncio.all_tasks()))

    summary = await run_jobs(lambda: read_manifest(manifest), config, on_event=count_tasks)

    assert (summary.done, summary.skipped_done) == (7, 1)
    # Six jobs, the producer, the watchers, the sweep and the HTTP pools' own tasks: tens,
    # where a worker per unit of concurrency made ten thousand.
    assert 6 < peak < 100, peak
