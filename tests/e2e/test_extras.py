"""The emulator's web stack is an extra: the engine runs without it, and says what to add."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.e2e.helpers import cli_env, image_jobs, write_jsonl

_WEB_STACK = ("starlette", "uvicorn", "trustme")
_REPO = Path(__file__).resolve().parents[2]


def _python(code: str, *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**env, "PYTHONPATH": str(_REPO)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_batch_runs_without_importing_the_web_stack(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    child = _python(
        f"""
        import json, sys
        from pathlib import Path
        import anyio
        from engine import ApiConfig, EngineConfig, read_manifest, run_jobs

        config = EngineConfig(
            api=ApiConfig.from_env(), output_dir=Path({str(tmp_path / "out")!r}), poll_interval=0.01
        )
        summary = anyio.run(run_jobs, lambda: read_manifest(Path({str(manifest)!r})), config)
        loaded = [m for m in {_WEB_STACK!r} if m in sys.modules]
        print(json.dumps({{"done": summary.done, "loaded": loaded}}))
        """,
        env=cli_env(emulator_server),
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.splitlines()[-1]) == {"done": 3, "loaded": []}


def test_emulator_without_the_extra_names_the_extra(tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    # A None entry in sys.modules makes the package unimportable, as if not installed.
    child = _python(
        f"""
        import sys
        sys.modules["uvicorn"] = None
        from engine.cli import main
        sys.exit(main(["run", {str(manifest)!r}, "--emulator"]))
        """,
        env={k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")},
        cwd=tmp_path,
    )
    assert child.returncode == 2
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'replicate-batch-engine[emulator]'" in lines[0]
    assert "uvicorn" in lines[0]
    assert not (tmp_path / "outputs").joinpath("m", "journal.jsonl").exists()
