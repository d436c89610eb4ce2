"""What every worker of a run shares: `WorkerContext`.

Split from `engine._worker` (issue 11); `engine._worker` re-exports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine._config import EngineConfig
from engine._control import RunControl, Spending
from engine._download import Downloader
from engine._durable import GroupCommit
from engine._errors import (
    StorageError,
)
from engine._events import JobEvent
from engine._gateway import Gateway
from engine._journal import Journal
from engine._limits import PollPacer
from engine._stats import RunStats
from engine._sweep import Sweeper
from jobs import (
    Job,
)

__all__ = ["WorkerContext"]


@dataclass(slots=True)
class WorkerContext:
    """What every worker shares: gateway, downloader, journal, pacer, control and counters.

    ``sweeper`` notices completions from the prediction list when many are in flight; a
    context without one (a cluster worker: the list sweep is one process's view of the
    account) polls every prediction on its own.
    """

    config: EngineConfig
    gateway: Gateway
    downloader: Downloader
    journal: Journal
    pacer: PollPacer
    control: RunControl
    stats: RunStats
    emit: Callable[[JobEvent], Awaitable[None]]
    spending: Spending
    sweeper: Sweeper | None = None
    in_flight: dict[str, Job] = field(default_factory=dict)  # prediction id -> job
    # The first disk refusal: the run drains, then ends with it (a whole-run error).
    storage_error: StorageError | None = None
    sidecars: GroupCommit = field(default_factory=GroupCommit)  # their fsyncs share hops

    def storage_refused(self, exc: StorageError) -> None:
        """The disk refused a write: keep the first refusal and stop creating.

        Creating more would pay for outputs that cannot be kept; the run drains, ends with
        its summary and raises this error (`engine._runner`).
        """
        if self.storage_error is None:
            self.storage_error = exc
        self.control.drain(f"storage error: {exc}")
