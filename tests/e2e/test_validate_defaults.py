"""validate points at the defaults line when a field a model does not take came from there.

The issue's example: ``defaults: {input: {num_outputs: 1}}`` in a manifest with an LLM
job gave "unknown field" errors at lines that did not contain it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import cli_env

ENGINE = [sys.executable, "-m", "engine"]

MIXED = """\
defaults:
  input:
    num_outputs: 1
jobs:
  - id: img
    model: black-forest-labs/flux-schnell
    input: {prompt: a lighthouse}
  - id: llm
    model: meta/meta-llama-3-70b-instruct
    input: {prompt: a haiku}
"""


def validate(server: Any, tmp_path: Path, text: str, *extra: str) -> Any:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    return subprocess.run(
        [*ENGINE, *(extra or ("validate",)), str(manifest)],
        env=cli_env(server),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [("validate",), ("run", "--dry-run")])
def test_a_default_the_llm_does_not_take_is_reported_at_the_defaults_line(
    emulator_server, tmp_path, command
):
    result = validate(emulator_server, tmp_path, MIXED, *command)

    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {tmp_path / 'm.yaml'}:3: input.num_outputs: unknown field "
        "(known: max_tokens, prompt, temperature) (from the defaults)"
    ]
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


@pytest.mark.parametrize(
    "fixed",
    [
        # The job drops the default.
        MIXED.replace("input: {prompt: a haiku}", "input: {prompt: a haiku, num_outputs: null}"),
        # Defaults per model.
        MIXED.replace(
            "  input:\n    num_outputs: 1\n",
            "  models:\n    black-forest-labs/flux-schnell:\n      input: {num_outputs: 1}\n",
        ),
    ],
    ids=["job-null", "per-model"],
)
def test_a_null_or_a_per_model_default_fixes_it(emulator_server, tmp_path, fixed):
    result = validate(emulator_server, tmp_path, fixed)

    assert result.returncode == 0, result.stderr
    assert "ok: nothing was run" in result.stdout
