"""What a user types: ``run --redis --workers K``, ``worker``, ``status --redis``, export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.emulator import EmulatorConfig, EmulatorServer
from tests.cluster.helpers import FAST_FLAGS, assert_all_done, events, run
from tests.cluster.redis_server import RedisServer
from tests.conftest import FAST_CONFIG
from tests.e2e.helpers import cli_env, image_jobs, write_jsonl
from tests.e2e.test_input_files import outside_manifest

# The emulator enforces the create limit with a burst of 8 (the real one allows 600): three
# workers pacing themselves alone would send three times the rate and be answered 429
# within the first second. The small burst absorbs what the shared schedule allows (a late
# worker makes up to 4 slots) and the arrival jitter of a loaded 2-core machine.
LIMIT = 600.0


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return FAST_CONFIG.replace(create_rate_per_min=LIMIT, create_burst=8)


def test_three_worker_processes_share_one_budget(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(30))
    out = tmp_path / "out"
    common = ("--redis", redis_server.url, "--run", "night")
    code, text = run(
        emulator_server,
        ["run", str(manifest), *common, "--output-dir", str(out), "--workers", "3",
         "--rate-limit", str(LIMIT), "--concurrency", "4", *FAST_FLAGS],
    )  # fmt: skip
    assert code == 0, text
    assert "run night: 30/30 jobs with an outcome (30 in the manifest): 30 done" in text
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 30
    assert stats["duplicates"] == {}
    # No self-provoked 429 with three processes sending creates.
    assert stats["throttled"] == 0, stats["requests"]
    reports = [json.loads(p.read_text()) for p in (out / ".cluster" / "night").glob("*.json")]
    assert len(reports) == 3  # three worker processes ran
    assert sum(r["done"] for r in reports) == 30

    code, text = run(emulator_server, ["status", *common, "--json"])
    assert code == 0, text
    status = json.loads(text)
    assert status["by_status"] == {"done": 30}
    assert status["entries_pending"] == 0

    journal = tmp_path / "exported.jsonl"
    code, text = run(emulator_server, ["journal", "export", *common, "--output", str(journal)])
    assert code == 0, text
    assert_all_done(journal, out, 30)
    # A single-machine run over the exported journal finds nothing left to do.
    code, text = run(
        emulator_server,
        ["run", str(manifest), "--output-dir", str(out), "--state", str(journal)],
    )
    assert code == 0, text
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 30


def test_a_plain_run_never_imports_redis(emulator_server: EmulatorServer, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    probe = (
        "import sys\n"
        "from engine.cli import main\n"
        f"code = main(['run', {str(manifest)!r}, '--output-dir', {str(tmp_path / 'o')!r}])\n"
        "print('redis' in sys.modules, [m for m in sys.modules if 'cluster' in m], code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=cli_env(emulator_server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    last = done.stdout.strip().splitlines()[-1]
    assert last == "False ['engine._cluster', 'engine._cluster._args'] 0", done.stderr


def test_worker_refuses_a_missing_run_name(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    code, text = run(emulator_server, ["worker", "--redis", redis_server.url])
    assert code == 2
    assert "--run" in text
    assert events(text, "worker.started") == []


def test_run_wide_budgets_are_refused_with_redis(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(2))
    code, text = run(
        emulator_server,
        ["run", str(manifest), "--redis", redis_server.url, "--run", "x",
         "--max-predictions", "1", "--deadline", "5"],
    )  # fmt: skip
    assert code == 2
    assert "--deadline, --max-predictions cannot be used with --redis" in text
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


def test_call_deadlines_and_outside_files_reach_every_worker(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    # The manifest's @../img.png lies outside its folder: sent only with the flag, and the
    # call deadlines reach the worker processes started here, not only the first.
    folder = outside_manifest(tmp_path)
    manifest, out = folder / "m.jsonl", tmp_path / "out"
    common = ("--redis", redis_server.url, "--run", "files")
    code, text = run(emulator_server, ["run", str(manifest), *common, "--output-dir", str(out)])
    assert code == 2
    assert "outside the manifest's folder" in text
    assert emulator_server.emulator.stats.snapshot()["requests"] == {}

    code, text = run(
        emulator_server,
        ["run", str(manifest), *common, "--output-dir", str(out), "--workers", "2",
         "--attempt-timeout", "7.5", "--shutdown-grace", "1.25", "--allow-outside-files",
         *FAST_FLAGS],
    )  # fmt: skip
    assert code == 0, text
    started = events(text, "worker.started")
    assert len(started) == 2
    assert {(e["attempt_timeout"], e["shutdown_grace"]) for e in started} == {(7.5, 1.25)}
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["requests"].get("files.create 201") == 1
    assert stats["predictions_created"] == 3


def test_redis_without_its_extra_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # As if redis-py were not installed: the import fails the way a missing package does.
    probe = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "from engine.cli import main\n"
        "sys.exit(main(['status', '--redis', 'redis://127.0.0.1:1/0', '--run', 'x']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --redis needs the redis extra: pip install 'replicate-batch-engine[redis]'"
    ]
