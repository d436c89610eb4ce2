"""Whole-run errors reach the user as one clear line, and a host app as one `EngineError`.

Each case runs three ways: `run_jobs`, `open_run` (never an exception group), and the
CLI (``error: <message>``, exit 2, no traceback). Plus: a job's failure is logged once,
and ``--only`` with ids the manifest does not have is refused, naming them.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine import EngineConfig, EngineError, Secret, open_run, run_jobs
from engine._errors import AuthenticationError, ConfigError, StorageError
from jobs import read_manifest
from tests.e2e.helpers import cli_env, engine_cli, engine_config, image_jobs, write_jsonl

pytestmark = pytest.mark.anyio


def run_cli(
    *args: str, env: dict[str, str], cwd: Path, preexec: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    # preexec: only resource limits, set before exec
    return engine_cli(cwd, env, *args, timeout=120, preexec_fn=preexec)


def _wrong_token(server: Any, tmp: Path, config: EngineConfig, env: dict[str, str]) -> Any:
    env["REPLICATE_API_TOKEN"] = "r8_wrong_secret_value_123"
    api = replace(config.api, token=Secret("r8_wrong_secret_value_123"))
    return replace(config, api=api)


def _forbidden(server: Any, tmp: Path, config: EngineConfig, env: dict[str, str]) -> Any:
    server.emulator.update(forbidden_creates=True)
    return config


def _bad_ca_file(server: Any, tmp: Path, config: EngineConfig, env: dict[str, str]) -> Any:
    env["SSL_CERT_FILE"] = str(tmp / "no-such-ca.pem")
    return replace(config, api=replace(config.api, ca_file=tmp / "no-such-ca.pem"))


def _output_folder_is_a_file(
    server: Any, tmp: Path, config: EngineConfig, env: dict[str, str]
) -> Any:
    # Works as root too (permissions do not stop root; a file in the way does).
    (tmp / "blocker").write_text("not a folder")
    env["OUTPUT_DIR"] = str(tmp / "blocker" / "out")
    return replace(config, output_dir=tmp / "blocker" / "out")


def _journal_not_writable(server: Any, tmp: Path, config: EngineConfig, env: dict[str, str]) -> Any:
    (tmp / "state.jsonl").mkdir()  # a folder where the journal file should be
    env["STATE"] = str(tmp / "state.jsonl")
    return replace(config, state_path=tmp / "state.jsonl")


CASES = {
    "401": (_wrong_token, AuthenticationError, "Replicate refused the API token (HTTP 401"),
    "403": (_forbidden, AuthenticationError, "not allowed to do this (HTTP 403"),
    "bad-ca-file": (_bad_ca_file, ConfigError, "cannot load the CA bundle"),
    "output-folder": (_output_folder_is_a_file, StorageError, "cannot write to the output folder"),
    "journal": (_journal_not_writable, StorageError, "the journal"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_run_jobs_raises_one_engine_error(emulator_server, tmp_path, case):
    setup, kind, said = CASES[case]
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    config = setup(emulator_server, tmp_path, engine_config(emulator_server, tmp_path / "o"), {})

    with pytest.raises(EngineError) as caught:
        await run_jobs(lambda: read_manifest(manifest), config)

    assert type(caught.value) is kind
    assert said in str(caught.value)
    assert "r8_wrong_secret_value_123" not in str(caught.value)
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


@pytest.mark.parametrize("case", list(CASES))
async def test_open_run_raises_the_same_error_not_a_group(emulator_server, tmp_path, case):
    setup, kind, said = CASES[case]
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(1))
    config = setup(emulator_server, tmp_path, engine_config(emulator_server, tmp_path / "o"), {})

    async def watch() -> None:
        async with open_run(lambda: read_manifest(manifest), config) as run:
            async for _event in run.events:
                pass

    with pytest.raises(EngineError) as caught:
        await watch()

    assert type(caught.value) is kind
    assert said in str(caught.value)


@pytest.mark.parametrize("case", list(CASES))
def test_the_cli_prints_one_error_line_and_exits_2(emulator_server, tmp_path, case):
    setup, _kind, said = CASES[case]
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    env = cli_env(emulator_server)
    setup(emulator_server, tmp_path, engine_config(emulator_server, tmp_path / "o"), env)
    args = ["run", str(manifest), "--output-dir", env.pop("OUTPUT_DIR", "out")]
    if "STATE" in env:
        args += ["--state", env.pop("STATE")]

    result = run_cli(*args, env=env, cwd=tmp_path)
    # The CLI refuses a --state that is a folder (click's words) and an output folder
    # under a file (check_paths) before the library sees them.
    said = {"journal": "is a directory", "output-folder": "cannot be made"}.get(case, said)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "TaskGroup" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert said in errors[0]
    assert "r8_wrong_secret_value_123" not in result.stderr + result.stdout


@pytest.mark.parametrize("case", ["401", "bad-ca-file"])
@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_validate_and_dry_run_print_one_error_line_and_exit_2(
    emulator_server, tmp_path, case, command
):
    setup, _kind, said = CASES[case]
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    env = cli_env(emulator_server)
    setup(emulator_server, tmp_path, engine_config(emulator_server, tmp_path / "o"), env)

    result = run_cli(*command, str(manifest), env=env, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert said in errors[0]


async def test_a_401_while_other_creates_connect_leaves_no_socket_behind(emulator_server, tmp_path):
    # The first 401 cancels the other workers mid-TLS-handshake; httpcore closed such a
    # stream only on errors, so each cancelled one was a ResourceWarning at the next GC.
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(16))
    config = engine_config(emulator_server, tmp_path / "o")
    config = replace(config, api=replace(config.api, token=Secret("r8_wrong")))

    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await run_jobs(lambda: read_manifest(manifest), config)
        gc.collect()  # an unclosed socket warns here; pytest turns it into a failure

    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def _small_files_only() -> None:
    import resource  # noqa: PLC0415 - in the child, before exec
    import signal  # noqa: PLC0415

    # A full disk for every file over 200 KB: writes past it fail with EFBIG instead of
    # killing the process (SIGXFSZ ignored). The journal and report stay small.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_a_full_disk_for_outputs_is_one_error_line_and_the_run_stops(emulator_server, tmp_path):
    jobs = [
        {"id": f"v{n}", "model": "kling-ai/kling-video", "input": {"prompt": f"w {n}"}}
        for n in range(3)
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)

    result = run_cli(
        "run",
        str(manifest),
        "--output-dir",
        "out",
        "--poll-interval",
        "0.01",
        env=cli_env(emulator_server),
        cwd=tmp_path,
        preexec=_small_files_only,
    )

    assert result.returncode == 5, result.stderr  # mid-run: not "nothing was sent"
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "cannot write" in errors[0]
    assert "File too large" in errors[0]
    # The paid predictions stay journaled as succeeded: the next run downloads them.
    journal = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in journal]
    assert {r["k"] for r in records if r["e"] == "succeeded"}
    assert not [r for r in records if r["e"] == "done"]


def test_the_library_gets_the_full_disk_as_a_storage_error(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "v", "model": "kling-ai/kling-video", "input": {"prompt": "w"}}],
    )
    script = f"""
import anyio
from pathlib import Path
from engine import EngineError, run_jobs
from jobs import read_manifest
from tests.e2e.helpers import engine_config

class Server:
    token = {emulator_server.token!r}
    base_url = {emulator_server.base_url!r}
    ca_file = {str(emulator_server.ca_file)!r}

config = engine_config(Server, Path({str(tmp_path / "out")!r}))
try:
    anyio.run(run_jobs, lambda: read_manifest(Path({str(manifest)!r})), config)
except EngineError as exc:
    print(type(exc).__name__, str(exc))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_small_files_only,
    )

    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]  # structlog unconfigured prints to stdout
    assert last.startswith("StorageError cannot write"), result.stdout
    assert "File too large" in last


def test_a_failed_job_is_logged_once(emulator_server, tmp_path):
    jobs = [
        {"id": "typo", "model": "black-forest-labs/flux-schnel", "input": {"prompt": "x"}},
        {"id": "fine", "model": "black-forest-labs/flux-schnell", "input": {"prompt": "x"}},
    ]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    logs = tmp_path / "logs.jsonl"

    result = run_cli(
        "run",
        str(manifest),
        "--output-dir",
        "out",
        "--json-logs",
        str(logs),
        env=cli_env(emulator_server),
        cwd=tmp_path,
    )

    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in logs.read_text().splitlines()]
    about_typo = [
        line
        for line in lines
        if line.get("level") in ("warning", "error") and "flux-schnel" in json.dumps(line)
    ]
    assert len(about_typo) == 1, about_typo
    assert about_typo[0]["event"] == "job.failed"
    assert "cannot run black-forest-labs/flux-schnel" in about_typo[0]["detail"]
    assert "python -m engine validate" in about_typo[0]["detail"]


def test_only_with_unknown_ids_exits_2_naming_them_with_a_close_match(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))

    result = run_cli(
        "run",
        str(manifest),
        "--only",
        "p0001,p00002",
        "--only",
        "zzz",
        env=cli_env(emulator_server),
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert "'p00002' (did you mean 'p0002'?)" in line
    assert "'zzz'" in line
    assert "p0001" not in line
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}


def test_only_with_known_ids_runs_just_those(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))

    result = run_cli(
        "run",
        str(manifest),
        "--output-dir",
        "out",
        "--only",
        "p0002",
        env=cli_env(emulator_server),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").glob("p*.png")] == ["p0002.png"]
