"""One event, one line: a 429 or a 5xx, and a run-stopping error, are each said once."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_cli import run_cli
from tests.e2e.test_one_run import hold_lock


def lines_about(stderr: str, *words: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if any(w in line for w in words) and "run.finished" not in line
    ]


@pytest.mark.parametrize(
    ("knobs", "words"),
    [
        ({"throttle_next_creates": 1}, ("429", "throttled")),
        ({"create_5xx_first": 1, "fault_status": 503}, ("503",)),
    ],
    ids=["429", "5xx"],
)
def test_an_answer_that_is_retried_is_one_line(emulator_server, tmp_path, knobs, words):
    emulator_server.emulator.update(**knobs)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    run = run_cli("run", "m.jsonl", "--output-dir", "out", env=cli_env(emulator_server),
                  cwd=tmp_path)  # fmt: skip

    assert run.returncode == 0, run.stderr
    said = lines_about(run.stderr, *words)
    assert len(said) == 1, run.stderr  # "retry 1 in ...", or the job's own retry line


def test_more_detail_is_there_with_verbose(emulator_server, tmp_path):
    emulator_server.emulator.update(throttle_next_creates=1)
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    run = run_cli("run", "m.jsonl", "--output-dir", "out", "-v", env=cli_env(emulator_server),
                  cwd=tmp_path)  # fmt: skip

    assert run.returncode == 0, run.stderr
    assert " api.throttled " in run.stderr
    assert " api.call " in run.stderr


@pytest.mark.parametrize("quiet", [(), ("-q",)], ids=["plain", "quiet"])
def test_a_held_journal_is_said_once(emulator_server, tmp_path, quiet):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    (tmp_path / "out").mkdir()

    with hold_lock(tmp_path / "out" / "journal.jsonl") as holder:
        run = run_cli("run", "m.jsonl", "--output-dir", "out", *quiet,
                      env=cli_env(emulator_server), cwd=tmp_path)  # fmt: skip

    assert run.returncode == 2
    said = lines_about(run.stderr, f"pid {holder.pid}")
    assert len(said) == 1, run.stderr
    assert said[0].startswith("error: ")
