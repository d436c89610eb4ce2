"""Run the user's ``--on-complete`` command once a run has ended (a notification, a sync).

The command is split like a shell would (`shlex.split`) but never run by one: the
report's path is its last argument, not text pasted into a shell line, so no manifest
name or path can inject anything. It also reads ``REPLICATE_BATCH_REPORT`` and
``REPLICATE_BATCH_EXIT_CODE``. Its failure is a warning: the run's outcome stands.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from engine._logs import get_logger

__all__ = ["ON_COMPLETE_TIMEOUT", "parse_command", "run_on_complete"]

ON_COMPLETE_TIMEOUT = 300.0  # seconds: a hung notifier must not hold the run's exit forever

log = get_logger("engine.hooks")


def parse_command(command: str) -> list[str]:
    """Split ``command`` into its words; raise ValueError when it cannot be run."""
    words = shlex.split(command)  # ValueError on unbalanced quotes
    if not words:
        raise ValueError("the command is empty")
    return words


def run_on_complete(command: str, report: Path, exit_code: int) -> str | None:
    """Run ``command REPORT``; return None, or a warning saying why it did not succeed."""
    argv = [*parse_command(command), str(report.resolve())]
    env = {
        **os.environ,
        "REPLICATE_BATCH_REPORT": str(report.resolve()),
        "REPLICATE_BATCH_EXIT_CODE": str(exit_code),
    }
    try:
        done = subprocess.run(  # noqa: S603 - the user's own command, without a shell
            argv, env=env, stdin=subprocess.DEVNULL, timeout=ON_COMPLETE_TIMEOUT, check=False
        )
    except FileNotFoundError:
        problem = f"--on-complete: {argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        problem = f"--on-complete: {argv[0]} still ran after {ON_COMPLETE_TIMEOUT:g} s; stopped"
    except OSError as exc:
        problem = f"--on-complete: {argv[0]}: {exc.strerror}"
    else:
        if done.returncode == 0:
            log.info("run.on_complete", command=argv[0], exit_code=0)
            return None
        problem = f"--on-complete: {argv[0]} exited with {done.returncode}"
    log.warning("run.on_complete_failed", command=argv[0], problem=problem)
    return problem
