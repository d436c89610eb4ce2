"""The host-app handle: `open_run` starts a run beside the caller's code, `RunHandle` is it.

Split from `engine._runner` (issue 11); the run itself is `run_jobs`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from anyio import CancelScope
from anyio.streams.memory import MemoryObjectReceiveStream

from engine._config import EngineConfig
from engine._control import RunControl
from engine._errors import EngineError
from engine._events import JobEvent
from engine._logs import get_logger
from engine._report import RunSummary
from engine._runner import JobSource, run_jobs

__all__ = ["RunHandle", "open_run"]

log = get_logger("engine.runner")


@dataclass(slots=True, eq=False)
class RunHandle:
    """A run in progress, started by `open_run`.

    ``events`` streams the run's `JobEvent`s; reading it is optional. ``await wait()``
    returns the `RunSummary` (also kept in ``summary``) or raises what `run_jobs` would.
    ``control`` stops the run (``drain``, ``interrupt``, ``cancel``). ``dropped_events``
    counts the events a full buffer could not take (see `open_run`); ``error`` is the
    run's error once it failed.
    """

    control: RunControl
    events: MemoryObjectReceiveStream[JobEvent]
    summary: RunSummary | None = None
    dropped_events: int = 0
    error: Exception | None = field(default=None, repr=False)
    _finished: anyio.Event = field(default_factory=anyio.Event, repr=False)

    async def wait(self) -> RunSummary:
        """Wait for the run to end; return its summary or raise its `EngineError`."""
        await self._finished.wait()
        if self.error is not None:
            raise self.error
        if self.summary is None:  # seen from a task outside the cancelled scope
            raise EngineError("the run was cancelled before it ended")
        return self.summary


@asynccontextmanager
async def open_run(
    jobs: JobSource, config: EngineConfig, *, buffer: int = 1024, events: bool = True
) -> AsyncIterator[RunHandle]:
    """Start a run beside the caller's code, in its event loop; yield a handle to it.

    ::

        async with open_run(jobs, config) as run:
            async for event in run.events:  # optional
                ...
            summary = await run.wait()

    The run never waits for the host: events go to a buffer of ``buffer`` events, and an
    event the full buffer cannot take is dropped and counted in ``run.dropped_events``
    (one ``run.events_dropped`` warning at the end says how many). A host that does not
    read them passes ``events=False``: nothing is buffered, ``run.events`` is empty. A
    host that needs every event, with backpressure, passes ``on_event`` to `run_jobs`.
    The stream ends when the run does and is closed when the block ends: a task of the
    host's that reads it should finish inside the block.

    Errors are the ones `run_jobs` raises: when the run fails, the block is interrupted
    and `open_run` raises that error (``wait()`` raises it too). An exception raised in
    the block, or leaving it before the run ends, interrupts the run (no new creates,
    running predictions journaled for the next run), waits for it to stop and re-raises
    the block's exception as it was. Cancelling the caller's scope cancels the run; the
    journal, connections and files are closed before the cancellation goes on.
    """
    control = RunControl()
    send, receive = anyio.create_memory_object_stream[JobEvent](buffer if events else 0)
    handle = RunHandle(control=control, events=receive)
    if not events:
        send.close()

    def forward(event: JobEvent) -> None:
        try:
            send.send_nowait(event)
        except anyio.WouldBlock:
            handle.dropped_events += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the host stopped listening; the run goes on to a clean stop

    async def drive(scope: CancelScope) -> None:
        try:
            with send:
                handle.summary = await run_jobs(
                    jobs, config, control=control, on_event=forward if events else None
                )
            if handle.dropped_events:
                log.warning("run.events_dropped", dropped=handle.dropped_events, buffer=buffer)
        except Exception as exc:  # noqa: BLE001 - handed to the host as run_jobs would raise it
            handle.error = exc
            scope.cancel()  # end the host's block: open_run raises the error
        finally:
            handle._finished.set()

    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(drive, tg.cancel_scope)
        try:
            yield handle
        except Exception as exc:  # noqa: BLE001 - the host's error: stop the run, re-raise it
            failure = exc
        finally:
            if handle.summary is None:
                control.interrupt("host left the run")
            receive.close()
    if failure is not None:
        raise failure
    if handle.error is not None:
        raise handle.error
