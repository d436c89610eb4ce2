"""Submit a manifest to a run, report its status, export its journal (the run's edges)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine._cluster._fence import export_journal
from engine._cluster._keys import RunKeys
from engine._cluster._queue import Queue
from engine._cluster._worker import connect
from jobs import Job, JobStatus

__all__ = ["export_run_journal", "run_status", "set_run_control", "submit_jobs"]


async def submit_jobs(url: str, run: str, jobs: Iterable[Job]) -> int:
    """Enqueue the jobs of ``run`` not enqueued before; return how many were new.

    Clears a previous drain and puts parked jobs back first, so submitting again resumes.
    """
    redis = connect(url)
    try:
        queue = Queue(redis, RunKeys(run), "submitter", lease=1.0)
        await queue.start_submission()
        added = await queue.enqueue(jobs)
        await queue.end_submission()
        return added
    finally:
        await redis.aclose()


async def set_run_control(url: str, run: str, word: str) -> None:
    """Tell every worker of ``run`` to ``drain`` or ``interrupt`` at its next heartbeat."""
    redis = connect(url)
    try:
        await Queue(redis, RunKeys(run), "submitter", lease=1.0).set_control(word)
    finally:
        await redis.aclose()


async def run_status(url: str, run: str) -> dict[str, Any]:
    """Return the whole run's counts: jobs by status, outcomes, live workers, stream."""
    redis = connect(url)
    keys = RunKeys(run)
    try:
        meta = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.meta)).items()}  # type: ignore[misc]
        workers = sorted(m.decode() for m in await redis.smembers(keys.workers))  # type: ignore[misc]
        live = [w for w in workers if await redis.exists(keys.lease(w))]
        pending = 0
        if await redis.exists(keys.stream):
            info = await redis.xpending(keys.stream, "workers")
            pending = int(info["pending"])
        by_status = {
            s.value: int(meta.get(f"n:{s.value}", 0)) for s in JobStatus if meta.get(f"n:{s.value}")
        }
        return {
            "run": run,
            "total": int(meta.get("total", 0)),
            "finished": int(meta.get("finished", 0)),
            "parked": int(meta.get("parked", 0)),
            "submitted": meta.get("submitted") == "1",
            "control": meta.get("control") or None,
            "by_status": {k: v for k, v in by_status.items() if v},
            "workers_live": live,
            "workers_seen": len(workers),
            "entries_pending": pending,
        }
    finally:
        await redis.aclose()


async def export_run_journal(url: str, run: str, path: Path) -> int:
    """Write the run's standard journal at ``path``; return how many jobs it holds."""
    redis = connect(url)
    try:
        return await export_journal(redis, RunKeys(run), path)
    finally:
        await redis.aclose()
