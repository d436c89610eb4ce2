"""Start cluster runs and workers as real processes; read what they left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine._journal import load_journal
from engine.emulator import EmulatorServer
from jobs import JobStatus
from tests.e2e.helpers import cli_env
from tests.support import sha256_of

# Fast and still faithful: short leases, polls and a settle shorter than any test.
FAST_FLAGS = ("--lease", "1.5", "--settle", "1.0", "--poll-interval", "0.02")


def engine_command(*args: str) -> list[str]:
    """Return the command line of ``python -m engine ARGS``."""
    return [sys.executable, "-m", "engine", *args]


def start(server: EmulatorServer, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m engine ARGS`` against the emulator, logging to ``log``."""
    with log.open("wb") as handle:  # the child keeps its own descriptor
        process = subprocess.Popen(
            engine_command(*args), env=cli_env(server), stdout=handle, stderr=subprocess.STDOUT
        )
    _LOGS[process.pid] = log
    return process


_LOGS: dict[int, Path] = {}


def log_tail(process: subprocess.Popen[bytes], chars: int = 4000) -> str:
    """Return the end of the log of a process started by `start`."""
    log = _LOGS.get(process.pid)
    return log.read_text(errors="replace")[-chars:] if log is not None else "(no log)"


def run(server: EmulatorServer, args: Sequence[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m engine ARGS`` to its end; return exit code and output."""
    done = subprocess.run(
        engine_command(*args),
        env=cli_env(server),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def events(text: str, name: str) -> list[dict[str, Any]]:
    """Return the JSON log lines of event ``name`` in ``text``."""
    found = []
    for line in text.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            obj = json.loads(line)
            if obj.get("event") == name:
                found.append(obj)
    return found


def assert_all_done(journal: Path, out: Path, jobs: int) -> None:
    """Check that ``journal`` has every job done, each file on disk with its checksum."""
    replay = load_journal(journal)
    assert len(replay.jobs) == jobs
    assert {s.status for s in replay.jobs.values()} == {JobStatus.DONE}
    for state in replay.jobs.values():
        assert state.files
        for f in state.files:
            assert sha256_of(out / f.name) == f.sha256
