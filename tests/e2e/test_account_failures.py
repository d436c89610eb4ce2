"""Failures about the account or the network, not the job, are retried by a plain re-run."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
import stamina

from engine import run_jobs
from jobs import read_manifest
from tests.e2e.helpers import (
    FAILS,
    cli_env,
    engine_config,
    image_jobs,
    journal_records,
    write_jsonl,
)
from tests.e2e.test_cli import run_cli

pytestmark = pytest.mark.anyio


def created(server) -> int:
    return server.emulator.stats.snapshot()["predictions_created"]


def test_insufficient_credit_stops_creating_and_a_plain_rerun_finishes(emulator_server, tmp_path):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(5))
    env = cli_env(emulator_server)
    emulator_server.emulator.update(insufficient_credit=True)

    broke = run_cli(
        "run", str(manifest), "--output-dir", "out", "--concurrency", "1", env=env, cwd=tmp_path
    )

    assert broke.returncode == 4, broke.stderr  # no credit: creates stopped
    assert created(emulator_server) == 0
    failed = [r for r in journal_records(tmp_path / "out" / "journal.jsonl") if r["e"] == "failed"]
    assert failed, "the refused create is journaled"
    assert all(r["perm"] is False and r["p"] is None for r in failed)
    # Drained after the first 402: not one create per job against an empty account.
    assert len(failed) == 1
    assert "insufficient credit" in broke.stderr
    emulator_server.emulator.update(insufficient_credit=False)

    again = run_cli("run", str(manifest), "--output-dir", "out", env=env, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert created(emulator_server) == 5
    assert len(list((tmp_path / "out").glob("p*.png"))) == 5


async def test_connection_refused_then_back_finishes_without_retry_failed(
    emulator_server, tmp_path
):
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(3))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, call_attempts=2)
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = replace(config, api=replace(config.api, base_url=f"https://127.0.0.1:{port}"))

    with stamina.set_testing(True, attempts=2):
        first = await run_jobs(lambda: read_manifest(manifest), down)
    # A create that provably never left is left for the next run (deferred), not failed.
    assert (first.done, first.failed + first.deferred) == (0, 3)
    assert created(emulator_server) == 0

    second = await run_jobs(lambda: read_manifest(manifest), config)

    assert (second.done, second.exit_code) == (3, 0)
    assert created(emulator_server) == 3


async def test_a_failed_prediction_still_waits_for_retry_failed(emulator_server, tmp_path):
    jobs = [{"id": "bad", "model": FAILS, "input": {"prompt": "x"}}]
    manifest = write_jsonl(tmp_path / "m.jsonl", jobs)
    config = engine_config(emulator_server, tmp_path / "out", prediction_retries=0)

    first = await run_jobs(lambda: read_manifest(manifest), config)
    second = await run_jobs(lambda: read_manifest(manifest), config)

    assert first.failed == 1
    assert second.predictions_created == 0
    assert second.failed_keys == ["bad"]
    assert created(emulator_server) == 1
