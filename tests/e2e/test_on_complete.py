"""``--on-complete CMD``: once at the end, with the report's path, never through a shell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl

ENGINE = [sys.executable, "-m", "engine"]

# Writes what it was given: its arguments and the two variables.
RECORDER = """
import json, os, sys
with open(sys.argv[1], "w") as out:
    json.dump({"argv": sys.argv[2:], "report": os.environ["REPLICATE_BATCH_REPORT"],
               "code": os.environ["REPLICATE_BATCH_EXIT_CODE"]}, out)
sys.exit(int(os.environ.get("RECORDER_EXIT", "0")))
"""


def run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ENGINE, "run", "m.jsonl", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_on_complete_gets_the_report_path_as_an_argument_with_no_shell(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    (tmp_path / "recorder.py").write_text(RECORDER)
    seen = tmp_path / "seen.json"
    # An output folder whose name a shell would run as a second command.
    out = "out; touch pwned"
    command = f"{sys.executable} recorder.py '{seen}'"

    result = run(tmp_path, cli_env(emulator_server), "--output-dir", out, "--on-complete", command)

    assert result.returncode == 0, result.stderr
    report = str((tmp_path / out / "report.json").resolve())
    assert json.loads(seen.read_text()) == {"argv": [report], "report": report, "code": "0"}
    assert not (tmp_path / "pwned").exists()
    assert "warning" not in result.stderr


def test_a_failing_on_complete_is_a_warning_and_the_exit_code_stands(emulator_server, tmp_path):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    (tmp_path / "recorder.py").write_text(RECORDER)
    env = {**cli_env(emulator_server), "RECORDER_EXIT": "7"}

    failing = run(tmp_path, env, "--on-complete", f"{sys.executable} recorder.py seen.json")
    missing = run(tmp_path, env, "--on-complete", "no-such-notifier --flag")

    assert failing.returncode == 0, failing.stderr
    assert "warning: --on-complete: " in failing.stderr
    assert failing.stderr.rstrip().endswith("exited with 7")
    assert (tmp_path / "seen.json").exists()
    assert missing.returncode == 0, missing.stderr
    assert "warning: --on-complete: no-such-notifier: command not found" in missing.stderr


def test_an_on_complete_that_cannot_be_split_is_a_usage_error_before_any_call(
    emulator_server, tmp_path
):
    write_jsonl(tmp_path / "m.jsonl", image_jobs(1))

    result = run(tmp_path, cli_env(emulator_server), "--on-complete", "notify 'unbalanced")

    assert result.returncode == 2
    assert result.stderr.startswith("error: --on-complete: ")
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}
