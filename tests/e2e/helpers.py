"""Build manifests, configs and checks shared by the end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine import EngineConfig
from tests.support import api_config, sha256_of

FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl"
LLAMA = "meta/meta-llama-3-70b-instruct"
VIDEO = "kling-ai/kling-video"
FAILS = "emulator/fails"


def write_jsonl(path: Path, jobs: Iterable[Mapping[str, Any]]) -> Path:
    """Write a JSONL manifest, one job per line."""
    path.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    return path


def image_jobs(n: int, *, model: str = FLUX, prefix: str = "p") -> list[dict[str, Any]]:
    """Return ``n`` distinct image jobs with explicit ids."""
    return [
        {"id": f"{prefix}{i:04d}", "model": model, "input": {"prompt": f"{prefix} {i}"}}
        for i in range(n)
    ]


def engine_config(server: Any, out: Path, **changes: Any) -> EngineConfig:
    """Return a config pointed at ``server``, tuned for fast tests (short polls)."""
    settings: dict[str, Any] = {
        "api": api_config(server),
        "output_dir": out,
        "poll_interval": 0.01,
        "journal_flush_interval": 0.002,
        "create_rate": 60_000.0,
        "read_rate": 600_000.0,
        "concurrency": 16,
        # The emulator's list is never behind unless a test sets ``list_lag`` (and then
        # its own settle): a create whose answer was lost is believed absent at once.
        "settle": 0.5,
    }
    settings.update(changes)
    return EngineConfig(**settings)


def cli_env(server: Any) -> dict[str, str]:
    """Return an environment that points a subprocess's engine at ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    env.update(
        REPLICATE_API_TOKEN=server.token,
        REPLICATE_BASE_URL=server.base_url,
        SSL_CERT_FILE=str(server.ca_file),
        # The emulator's list is never behind unless a test says so (``list_lag``; such a
        # test passes --settle): a lost create is looked for again after half a second,
        # not after the 30 s a real account needs.
        REPLICATE_BATCH_SETTLE="0.5",
    )
    return env


def journal_records(path: Path) -> list[dict[str, Any]]:
    """Return every complete journal line as a dict."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def assert_files_match_journal(out: Path, journal: Path) -> int:
    """Check every journaled file exists with its recorded size and sha256; return count."""
    files = {r["n"]: r for r in journal_records(journal) if r["e"] == "file"}
    for name, record in files.items():
        path = out / name
        assert path.stat().st_size == record["sz"], name
        assert sha256_of(path) == record["sha"], name
    assert not list(out.rglob("*.part")), "a .part file was left behind"
    return len(files)


ENGINE = [sys.executable, "-m", "engine"]


def engine_cli(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 60, **popen: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engine ARGS`` in ``cwd`` to its end (``timeout`` s at most), output
    captured; ``popen`` goes to `subprocess.run` (e.g. ``preexec_fn``)."""
    return subprocess.run(
        [*ENGINE, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


def run_argv(*extra: str) -> list[str]:
    """Return the argv of a long ``run`` of ``m.jsonl`` into ``out`` that tests interrupt:
    short polls, debug events in ``run.log``."""
    return [
        *ENGINE,
        "run",
        "m.jsonl",
        "--output-dir",
        "out",
        "--poll-interval",
        "0.05",
        "-v",
        "--log-file",
        "run.log",
        *extra,
    ]
