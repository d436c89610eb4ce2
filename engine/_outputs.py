"""Store one prediction's outputs: skip verified files, fetch or write, embed, journal each.

Split from `engine._worker` (issue 11): the download step of a job's life.
"""

from __future__ import annotations

import time
from dataclasses import replace

from engine._errors import (
    OutputExpiredError,
)
from engine._events import JobEvent, JobEventKind
from engine._journal import JobState, JournalRecord
from engine._metadata import embed_output_metadata
from engine._parts import check_folders, is_stored
from engine._prediction import Prediction
from engine._stats import RunStats
from engine._worker_context import WorkerContext
from jobs import (
    Job,
    OutputFile,
    normalise_output,
    plan_outputs,
)

__all__ = ["store_outputs"]


async def store_outputs(
    ctx: WorkerContext, job: Job, state: JobState | None, prediction: Prediction
) -> list[OutputFile]:
    """Store every output, skipping files already verified on disk by an earlier run."""
    items = normalise_output(prediction.output)
    if not items and prediction.data_removed:
        raise OutputExpiredError(f"outputs of prediction {prediction.id} were removed")
    planned = plan_outputs(job, items)  # names, and local names inside JSON documents
    have = {f.name: f for f in (state.files if state else ())}
    stored: list[OutputFile] = []
    for item, name in ((p.item, p.name) for p in planned):
        dest = ctx.config.output_dir / name
        if "/" in name:
            check_folders(ctx.config.output_dir, name)
        known = have.get(name)
        if known is not None and is_stored(dest, known.size):
            # The journal keeps no URL: this prediction's is the file's source.
            stored.append(replace(known, url=item.url))
            continue
        started = time.monotonic()
        arrived = _Arrived(ctx.stats)
        try:
            if item.url is not None:
                result = await ctx.downloader.fetch(item.url, dest, name=name, progress=arrived)
            else:
                result = await ctx.downloader.write_inline(item.text or "", dest, name=name)
        finally:
            arrived.settle()  # DOWNLOADED counts the verified file instead
        size, sha256 = result.size, result.sha256
        if ctx.config.embed_metadata:  # before the file is journaled: its final hash
            size, sha256 = await embed_output_metadata(dest, job, prediction, (size, sha256))
        stored_file = OutputFile(name, size, sha256, item.url, result.content_type)
        ctx.stats.download_seconds.append(time.monotonic() - started)
        await ctx.journal.append(
            JournalRecord.file(job.key, output=stored_file, prediction_id=prediction.id),
            durable=False,
        )
        await ctx.emit(
            JobEvent(job.key, JobEventKind.DOWNLOADED, prediction.id, name, result.size, job=job)
        )
        stored.append(stored_file)
    return stored


class _Arrived:
    """Count one file's bytes as they arrive, into the run's stats (from any thread)."""

    __slots__ = ("count", "stats")

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self.count = 0  # one transfer at a time per file: no lock needed for this one

    def __call__(self, size: int) -> None:
        self.count += size
        self.stats.add_arriving(size)

    def settle(self) -> None:
        self.stats.add_arriving(-self.count)
        self.count = 0
