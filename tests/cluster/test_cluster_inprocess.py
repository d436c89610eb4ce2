"""Several workers in one event loop share one queue, one budget and the job state."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from engine._cluster._submit import export_run_journal, run_status, submit_jobs
from engine._cluster._worker import ClusterOptions, serve_worker
from engine._journal import load_journal
from engine.emulator import EmulatorServer
from jobs import JobStatus, read_manifest
from tests.cluster.redis_server import RedisServer
from tests.e2e.helpers import engine_config, image_jobs, write_jsonl
from tests.support import sha256_of

pytestmark = pytest.mark.anyio


async def test_three_workers_share_the_queue(
    emulator_server: EmulatorServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    manifest = write_jsonl(tmp_path / "m.jsonl", image_jobs(24))
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, concurrency=4)
    options = ClusterOptions(redis_server.url, "r1", lease=2.0, block=0.05)
    added = await submit_jobs(redis_server.url, "r1", read_manifest(manifest))
    assert added == 24
    summaries = []

    async def one() -> None:
        summaries.append(await serve_worker(config, options))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    stats = emulator_server.emulator.stats.snapshot()
    assert stats["predictions_created"] == 24
    assert stats["duplicates"] == {}
    assert sum(s.done for s in summaries) == 24
    status = await run_status(redis_server.url, "r1")
    assert status["finished"] == 24
    assert status["by_status"] == {"done": 24}
    assert status["entries_pending"] == 0
    exported = await export_run_journal(redis_server.url, "r1", out / "journal.jsonl")
    assert exported == 24
    replay = load_journal(out / "journal.jsonl")
    assert {s.status for s in replay.jobs.values()} == {JobStatus.DONE}
    for state in replay.jobs.values():
        for f in state.files:
            assert sha256_of(out / f.name) == f.sha256
