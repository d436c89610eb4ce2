"""A journal the user named and is not there is an error naming their path (exit 2).

Named as the argument, by ``--state`` or by ``--output-dir``: status, export, gallery and
cancel all say so with the path given, never a default folder the user did not name. A
manifest that never ran, with its default folder, is not an error (test_never_run.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_cli import run_cli

COMMANDS = ("status", "export", "gallery", "cancel")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_journal_path_that_is_not_there_is_named_as_given(emulator_server, tmp_path, command):
    given = tmp_path / "x" / "none" / "journal.jsonl"

    result = run_cli(command, str(given), env=cli_env(emulator_server), cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: no journal at {given}\n"
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_output_dir_is_an_error_naming_it(emulator_server, tmp_path, command):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    env = cli_env(emulator_server)
    ran = run_cli("run", "m.jsonl", "--output-dir", "out", env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr

    result = run_cli(command, "m.jsonl", "--output-dir", "outt", env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: no journal in outt (--output-dir): no run has written there\n"
    assert result.stdout == ""
    assert not (tmp_path / "outt").exists()
    assert (
        emulator_server.emulator.stats.snapshot()["requests"].get("predictions.cancel 200") is None
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_state_is_an_error_naming_it(emulator_server, tmp_path, command):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    result = run_cli(command, "m.jsonl", "--state", "nowhere.jsonl",
                     env=cli_env(emulator_server), cwd=tmp_path)  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stderr == "error: no journal at nowhere.jsonl (--state): no run has written it\n"
    assert not Path(tmp_path / "outputs").exists()
