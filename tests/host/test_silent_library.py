"""A host app that configured no logging hears nothing from the engine; one that did, does.

Each case is a fresh interpreter (logging configuration is process-wide), driving the
public API only against the emulator: `run_jobs` over ten jobs, then
`ReplicateClient.run_model` and `close`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.emulator import EmulatorServer

HOST = """
import json, logging, sys
from pathlib import Path

import anyio

from engine import ApiConfig, EngineConfig, Job, ModelRef, ReplicateClient, run_jobs

if sys.argv[2] == "info":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")

    class Fields(logging.Handler):
        def emit(self, record):
            if record.name == "engine.runner" and getattr(record, "event", "") == "job.done":
                print("FIELDS", record.job, record.prediction_id, file=sys.stderr)

    logging.getLogger("engine").addHandler(Fields())

out = Path(sys.argv[1])
model = ModelRef.parse("black-forest-labs/flux-schnell")
jobs = [Job(f"j{i}", model, {"prompt": f"p{i}"}, f"j{i}") for i in range(10)]
summary = anyio.run(run_jobs, jobs, EngineConfig(api=ApiConfig.from_env(), output_dir=out))
with ReplicateClient() as client:
    urls = client.run_model(str(model), {"prompt": "x"}, use_file_output=False)
(out / "host.json").write_text(json.dumps({"done": summary.done, "urls": len(urls)}))
"""


def _host(tmp_path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", HOST, str(tmp_path / "out"), mode],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "host.json").read_text()) == {"done": 10, "urls": 1}
    return done


@pytest.mark.slow
def test_unconfigured_host_hears_nothing(replicate_env: EmulatorServer, tmp_path: Path) -> None:
    done = _host(tmp_path, "none")
    assert done.stdout == ""
    assert done.stderr == ""


@pytest.mark.slow
def test_host_with_stdlib_logging_sees_engine_records(
    replicate_env: EmulatorServer, tmp_path: Path
) -> None:
    done = _host(tmp_path, "info")
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    finished = [line for line in lines if line.startswith("INFO engine.runner job.done ")]
    assert len(finished) == 10
    assert all(" prediction_id=" in line for line in finished)
    assert any(line.startswith("INFO engine.runner run.finished ") for line in lines)
    assert any(line.startswith("INFO engine.client client.created ") for line in lines)
    # The fields are the record's attributes too, for structured handlers.
    assert sorted(line.split()[1] for line in lines if line.startswith("FIELDS ")) == sorted(
        f"j{i}" for i in range(10)
    )
    # Below the host's level (DEBUG) stays quiet: the per-create line is a debug one.
    assert not any(" job.created " in line for line in lines)
