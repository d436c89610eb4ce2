"""Readable output names end to end: files land where the template says, or nothing runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import run_jobs
from jobs import ENGINE_FILES, read_manifest
from tests.e2e.helpers import FLUX, cli_env, engine_config, write_jsonl

pytestmark = pytest.mark.anyio

TEMPLATE = "{model_path}/{input.prompt:12}-{input.seed}"


async def test_files_land_under_the_inputs_slugs_and_the_model_path(
    emulator_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"model": model, "input": {"prompt": "An Owl at Dusk", "seed": 1}, "output": TEMPLATE}
            for model in ("deployments/emulator/flux", FLUX)
        ],
    )

    summary = await run_jobs(lambda: read_manifest(manifest), engine_config(emulator_server, out))

    assert summary.done == 2
    for folder in ("deployments/emulator/flux", "black-forest-labs/flux-schnell"):
        files = sorted(p.name for p in (out / folder).iterdir())
        assert files == [ENGINE_FILES.sidecar("an-owl-at-du-1"), "an-owl-at-du-1.png"]
        sidecar = json.loads((out / folder / ENGINE_FILES.sidecar("an-owl-at-du-1")).read_text())
        assert sidecar["input"]["prompt"] == "An Owl at Dusk"


@pytest.mark.parametrize(
    ("template", "jobs", "fragment"),
    [
        (
            "{input.prompt:10}",
            [
                {"model": FLUX, "input": {"prompt": "A portrait of a cat"}},
                {"model": FLUX, "input": {"prompt": "A portrait of a dog"}},
            ],
            "m.jsonl:2: output: output 'a-portrait' is also the output of the job at line 1",
        ),
        (
            "{model_name}/{id}",
            [
                {"model": "emulator/flux", "id": "m", "input": {"prompt": "x"}},
                {"model": "deployments/emulator/flux", "id": "d", "input": {"prompt": "x"}},
            ],
            "m.jsonl:2: output: output folder 'flux' would hold a deployment",
        ),
    ],
)
def test_names_that_would_meet_stop_the_run_before_any_api_call(
    emulator_server: Any, tmp_path: Path, template: str, jobs: list[dict[str, Any]], fragment: str
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", [{**j, "output": template} for j in jobs])
    out = tmp_path / "out"

    result = subprocess.run(
        [sys.executable, "-m", "engine", "run", str(manifest), "--output-dir", str(out)],
        cwd=tmp_path,
        env=cli_env(emulator_server),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr, result.stderr
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0
    assert not (out / ENGINE_FILES.journal).exists()
