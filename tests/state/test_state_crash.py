"""Kill a process mid-append with SIGKILL: every acknowledged record survives the replay."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine._journal import load_journal
from jobs.model import JobStatus

CHILD = Path(__file__).with_name("journal_child.py")
ROOT = Path(__file__).parents[2]


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_loses_no_acknowledged_record(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    path = tmp_path / "j.jsonl"
    acked: list[str] = []
    rounds = 2  # the second run reopens (and repairs) what the first kill left
    for n in range(rounds):
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(path), f"r{n}"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 40)):
            acked.append(child.stdout.readline().strip())
        time.sleep(rng.random() / 200)  # up to 5 ms more: land anywhere in a write
        child.send_signal(signal.SIGKILL)
        # Anything printed before the kill was acknowledged too.
        acked.extend(line.strip() for line in child.stdout.read().splitlines())
        child.stdout.close()
        assert child.wait() == -signal.SIGKILL
    result = load_journal(path)
    missing = [key for key in acked if key not in result.jobs]
    assert not missing, f"acknowledged but lost (seed {seed}): {missing}"
    assert all(result.jobs[key].status is JobStatus.RUNNING for key in acked)
    assert result.corrupt_lines == 0, f"seed {seed}"
    assert result.torn_lines <= rounds
    assert result.runs == rounds
