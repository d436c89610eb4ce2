"""A FastAPI-style host: its own tasks run beside `open_run` in one event loop.

The app's task group holds a ticker (standing in for request handlers) and a batch task
that opens the run and hands its events to a consumer task of the app. The run finishes
while the app goes on; cancelling the batch's scope stops the run and leaves nothing
behind: no task, no open journal, and a journal the next run resumes without paying twice.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest
from anyio.abc import TaskGroup

from engine import (
    EngineConfig,
    EngineError,
    Job,
    JobEvent,
    JobEventKind,
    ModelRef,
    RunHandle,
    open_run,
    run_jobs,
)
from engine.emulator import EmulatorServer
from tests.support import api_config

pytestmark = pytest.mark.anyio

FLUX = ModelRef.parse("black-forest-labs/flux-schnell")


def _jobs(count: int) -> list[Job]:
    return [Job(f"job-{i}", FLUX, {"prompt": f"p{i}"}, f"job-{i}") for i in range(count)]


def _open_files(path: Path) -> list[str]:
    """Return this process's descriptors open on ``path``."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if fd.readlink() == path:
                found.append(fd.name)
        except OSError:
            continue  # closed while listing
    return found


class App:
    """The host: a ticker that must keep ticking, and the tasks it started."""

    def __init__(self) -> None:
        self.ticks = 0
        self.ticker: asyncio.Task[object] | None = None

    async def tick(self) -> None:
        self.ticker = asyncio.current_task()
        while True:
            self.ticks += 1
            await anyio.sleep(0.001)

    async def still_ticking(self) -> bool:
        before = self.ticks
        with anyio.move_on_after(1):
            while self.ticks == before:
                await anyio.sleep(0.001)
        return self.ticks > before


async def consume(
    run: RunHandle, seen: list[JobEvent], done: anyio.Event, journal: Path, open_fds: list[str]
) -> None:
    async for event in run.events:
        if not seen:
            open_fds += _open_files(journal)  # while the run is on, the journal is open
        seen.append(event)
    done.set()


async def test_the_run_finishes_beside_the_hosts_tasks(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    baseline = asyncio.all_tasks()
    app = App()
    config = EngineConfig(api=api_config(emulator_server), output_dir=tmp_path, concurrency=4)
    seen: list[JobEvent] = []
    consumed = anyio.Event()
    open_fds: list[str] = []

    async def batch(tg: TaskGroup) -> None:
        async with open_run(_jobs(12), config) as run:
            tg.start_soon(consume, run, seen, consumed, config.journal_path, open_fds)
            summary = await run.wait()
            await consumed.wait()  # the stream ends with the run; it closes with the block
        assert summary.done == 12

    async with anyio.create_task_group() as tg:
        tg.start_soon(app.tick)
        await batch(tg)
        assert await app.still_ticking()
        assert asyncio.all_tasks() - baseline == {app.ticker}
        tg.cancel_scope.cancel()

    assert sum(e.kind is JobEventKind.DONE for e in seen) == 12
    assert len(open_fds) == 1
    assert _open_files(config.journal_path) == []


async def test_cancelling_the_hosts_scope_stops_the_run_cleanly(
    emulator_server: EmulatorServer, tmp_path: Path
) -> None:
    baseline = asyncio.all_tasks()
    app = App()
    config = EngineConfig(api=api_config(emulator_server), output_dir=tmp_path, concurrency=2)
    handles: list[RunHandle] = []
    done_seen = 0

    watched: list[Exception] = []
    watcher_done = anyio.Event()

    async def watch(run: RunHandle) -> None:  # another app task, outside the batch's scope
        try:
            await run.wait()
        except EngineError as exc:
            watched.append(exc)
        watcher_done.set()

    async def batch(scope: anyio.CancelScope, tg: TaskGroup) -> None:
        nonlocal done_seen
        with scope:
            async with open_run(_jobs(20), config) as run:
                handles.append(run)
                tg.start_soon(watch, run)
                async for event in run.events:
                    if event.kind is JobEventKind.DONE:
                        done_seen += 1
                        if done_seen == 2:
                            scope.cancel()  # e.g. the app shutting down its batch

    async with anyio.create_task_group() as tg:
        tg.start_soon(app.tick)
        host_scope = anyio.CancelScope()
        await batch(host_scope, tg)
        assert host_scope.cancel_called
        assert handles[0].summary is None  # cancelled, not finished
        await watcher_done.wait()
        assert [str(e) for e in watched] == ["the run was cancelled before it ended"]
        assert await app.still_ticking()
        assert asyncio.all_tasks() - baseline == {app.ticker}
        assert _open_files(config.journal_path) == []
        tg.cancel_scope.cancel()

    # The journal is whole: the next run finishes the batch, paying once per job.
    summary = await run_jobs(_jobs(20), config)
    assert summary.done == 20
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 20
