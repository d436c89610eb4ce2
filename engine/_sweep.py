"""Notice completions of many in-flight predictions by sweeping the prediction list.

Polling each prediction at its share of the read budget makes the time to notice a
completion grow with the number in flight (1,000 in flight at 3,000 reads/min: one poll
each every ~22 s). One page of ``GET /v1/predictions`` holds 100 predictions, newest
first, so a sweep of ``ceil(in_flight / 100)`` pages, restricted with ``created_after``
to the window since the oldest watched creation, sees every one of them at 1/100 of the
cost. A terminal entry hands its prediction to the waiting worker; a GET follows only
when the entry lacks what a GET has (``output``, ``metrics``).

The window is read oldest first, in slices of one page of ours each (``created_after``
and ``created_before``, both exclusive), because predictions tend to end in the order
they started: the oldest slice (the head) is the likeliest to hold completions. It is
read again between the other slices whenever ``min_interval`` has passed, and on while
whole pages of it have ended, so the oldest are seen every ``min_interval`` plus a page
however long a whole sweep takes. Paged from the newest, the page holding the oldest
was a sweep's last: a prediction that ended just after a sweep passed it waited out a
whole sweep and then the next one's pages, and while the last of 3,000 creates still
kept the event loops busy one sweep took 4-20 s (bench/RESULTS.md, "The 3,000 tail").
Reading the head again only once a read of it had found ended predictions saved pages
while a batch's first still ran, but the sweep under way when they began to end then
read them only on its next pass (lag p95 6.6 s): the head is read on a timer instead.

Per-prediction polls stay where they are as good: while ``in_flight / reads per second``
(the budget-bound poll interval) is no longer than what one sweep costs, or the minimum
interval, the `Sweeper` stays idle and workers poll as before.

What a sweep meets on a real account, and what it does:

* predictions made by other programs or on the web (``source: web``, other models):
  only ids this run watches are looked at; the rest are skipped, never taken as ours;
* pages that shift while paging (an offset cursor with new predictions on top): the
  same id twice in one sweep is read once;
* predictions beyond what a sweep could read (other programs filled the slices up to
  its page cap): their workers poll them directly, at the pacer's interval;
* a list briefly behind a get: a watched prediction missing from a complete sweep for
  longer than ``lag_bound`` is polled directly once, then watched again.

Every page is one read of the shared budget (the gateway's transport takes it), so the
sweep waits out a 429 cooldown like every other read.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio

from engine._control import RunControl
from engine._errors import AuthenticationError, ConfigError, EngineError
from engine._gateway import Gateway
from engine._limits import Budget
from engine._logs import get_logger
from engine._prediction import Prediction

__all__ = ["Sweeper", "Watch"]

log = get_logger("engine.sweep")

_PAGE_SIZE = 100
_FAILURES_TO_STAND_DOWN = 3
# Slices meet with this overlap: ``created_before`` one side, ``created_after`` this much
# earlier the other, so no instant falls between them whatever the server's precision
# (``created_at`` has 3 to 8 decimals, shared/replicate-api.md section 3.1; Python
# keeps 6, truncated). An entry inside the overlap is read twice and counted once.
_SEAM = timedelta(microseconds=1)


class Watch:
    """One in-flight prediction as the sweep sees it; its worker waits on it."""

    __slots__ = ("_event", "beyond", "covered", "created", "due", "id", "listed", "missing_since")

    def __init__(self, prediction_id: str) -> None:
        self.id = prediction_id
        self.created: datetime | None = None  # from the first answer about it
        self.covered = False  # the sweep looks after it: its worker need not poll
        self.beyond = False  # beyond the pages a sweep could afford: polled directly
        self.due = False  # poll it directly once (missing from the list, or lacking output)
        self.listed: Prediction | None = None  # terminal, complete, as the list showed it
        self.missing_since: float | None = None
        self._event = anyio.Event()

    def saw(self, prediction: Prediction) -> None:
        """Note what an answer about this prediction said (its creation time)."""
        if self.created is None and prediction.created_at:
            self.created = _instant(prediction.created_at)

    def take(self) -> Prediction | None:
        """Return the terminal prediction the list delivered, once."""
        listed, self.listed = self.listed, None
        return listed

    def needs_get(self) -> bool:
        """Tell whether the worker should ask for the prediction itself now.

        Also while its creation time is unknown (a prediction picked up again after a
        restart): no sweep window can hold it before an answer says when it was made.
        """
        due, self.due = self.due, False
        return due or not self.covered or self.created is None

    async def wait(self) -> None:
        """Wait until the sweep has news for this prediction (or the run's state changed)."""
        await self._event.wait()

    def wake(self) -> None:
        """Wake the worker waiting on this prediction."""
        self._event.set()
        self._event = anyio.Event()


class Sweeper:
    """Share one list sweep among all in-flight predictions of a run.

    Run `run` in the run's task group; workers take a `watch` per prediction. ``share``
    is the part of the read budget sweeps may use (the rest is for the GETs that follow
    completions, direct polls and other reads).
    """

    def __init__(
        self,
        gateway: Gateway,
        read: Budget,
        control: RunControl,
        *,
        min_interval: float = 0.5,
        share: float = 0.8,
        skew: float = 1.0,
        lag_bound: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.read = read
        self.control = control
        self.min_interval = min_interval
        self.share = share
        self.skew = timedelta(seconds=skew)
        self.lag_bound = lag_bound
        self._clock = clock
        self.watches: dict[str, Watch] = {}
        self.active = False
        self.pages = 0  # pages read, for the report and the tests
        self.sweeps = 0
        self.duplicates = 0  # entries seen twice in one sweep (shifted pages)
        self.delivered = 0  # completions handed over without a GET
        self.missing = 0  # times a watched prediction was missing from a complete sweep
        self.beyond = 0  # predictions handed to direct polls: beyond what a sweep could read
        self._last_pages = 0
        self._head_read = -math.inf  # when the oldest slice was last read (clock seconds)
        self.failures = 0  # sweeps failed in a row

    @contextmanager
    def watch(self, prediction_id: str) -> Iterator[Watch]:
        """Watch ``prediction_id`` while the block runs.

        While sweeps run and succeed, a new prediction is theirs from the start: the
        next sweep's window holds it. When each was polled directly until a sweep had
        covered it, the predictions created during one long sweep (the last of 3,000, on a loaded
        machine) were polled 30 times a second, 0.6 of a 3,000/min budget, while the
        sweep read 1-2 pages a second (bench/RESULTS.md).
        """
        watch = Watch(prediction_id)
        # Only while sweeps succeed: a list that fails (and is retried for as long as
        # its policy allows) would leave it unwatched until the sweep stood down.
        watch.covered = self.active and self.sweeps > 0 and self.failures == 0
        self.watches[prediction_id] = watch
        try:
            yield watch
        finally:
            self.watches.pop(prediction_id, None)

    def reads_per_second(self) -> float:
        """Return the reads per second sweeps may use."""
        return self.share * self.read.rate_per_min / 60.0

    def worth_sweeping(self) -> bool:
        """Tell whether a sweep notices completions sooner than per-prediction polls.

        Polls come every ``max(min_interval, in_flight / reads per second)``; a sweep
        every ``max(min_interval, pages / reads per second)``. Sweep when the first is
        longer, that is when polls are bound by the budget and a sweep costs fewer reads.
        """
        n = len(self.watches)
        if n == 0:
            return False
        pages = max(self._last_pages, math.ceil(n / _PAGE_SIZE))
        rps = self.reads_per_second()
        return n / rps > max(self.min_interval, pages / rps)

    async def run(self) -> None:
        """Sweep for as long as the run lasts (cancel the task to stop it)."""
        try:
            await self._run()
        finally:
            log.debug(  # the run's own counts are its report; these are the sweep's
                "sweep.summary",
                sweeps=self.sweeps,
                pages=self.pages,
                delivered=self.delivered,
                duplicates=self.duplicates,
                missing=self.missing,
                beyond=self.beyond,
            )

    async def _run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._relay_control)
            while True:
                started = self._clock()
                if self.worth_sweeping():
                    if not self.active:
                        log.debug("sweep.started", in_flight=len(self.watches))
                    self.active = True
                    try:
                        pages = await self.sweep()
                    except (AuthenticationError, ConfigError):
                        raise  # the workers' own calls would stop the run on these too
                    except EngineError as exc:
                        # Retries spent on a list page: after a few such sweeps, hand
                        # everyone back to their own polls rather than stopping the run.
                        # Three in a row: the list is down, not busy.
                        self.failures += 1
                        log.warning("sweep.failed", error=str(exc), failures=self.failures)
                        if self.failures >= _FAILURES_TO_STAND_DOWN:
                            self._stand_down()
                        pages = self._last_pages
                    else:
                        self.failures = 0
                    period = max(self.min_interval, pages / self.reads_per_second())
                else:
                    if self.active:
                        self._stand_down()
                    period = self.min_interval
                await anyio.sleep(max(0.0, started + period - self._clock()))

    async def _relay_control(self) -> None:
        """Wake every waiting worker when the run's state changes (interrupt, drain)."""
        while True:
            await self.control.wait_changed()
            for watch in list(self.watches.values()):
                watch.wake()

    def _stand_down(self) -> None:
        """Hand every watched prediction back to its worker's own polls."""
        self.active = False
        for watch in list(self.watches.values()):
            if watch.covered:
                watch.covered = False
                watch.wake()

    async def sweep(self) -> int:
        """Read the window's slices, oldest first; deliver what changed; return pages read."""
        window = sorted(
            (w for w in self.watches.values() if w.created is not None and not w.beyond),
            key=_created,
        )
        if not window:
            return 0
        # A page cap keeps one sweep bounded when other programs fill the window: what
        # lies beyond it is polled directly.
        cap = 2 * math.ceil(len(window) / _PAGE_SIZE) + 2
        started = self._clock()
        seen: set[str] = set()
        pages = 0
        beyond: list[Watch] = []
        heads = 0  # pages spent reading the head again: outside the cap, inside the budget
        heard: set[str] = set()  # ids the head's second reads saw
        for index, piece in enumerate(self._slices(window)):
            if pages >= cap:
                beyond.extend(piece.watches)  # a slice the cap left unread
                continue
            if index > 0:
                heads += await self._reread_head(heard)
            read, reached = await self._read(piece, seen, cap - pages)
            pages += read
            if index == 0:
                self._head_read = self._clock()
            if reached is not None:  # cut at the cap: the slice's older part not reached
                beyond.extend(w for w in piece.watches if _created(w) < reached)
        pages += heads
        self.pages += pages
        self.sweeps += 1
        self._last_pages = pages
        self._cover(window, seen | heard, started, beyond)
        return pages

    async def _reread_head(self, heard: set[str]) -> int:
        """Read the oldest slice again if ``min_interval`` has passed; return pages read.

        The head is taken afresh from the watches still waiting (a worker that took its
        completion has left), and read again while a whole page of it has ended. What
        it reads goes to ``heard``, not to the sweep's own set of ids seen: an entry
        read here may have ended by the time its slice is read.
        """
        if self._clock() - self._head_read < self.min_interval:
            return 0
        pages = 0
        while True:
            waiting = [
                w
                for w in self.watches.values()
                if w.created is not None and not w.beyond and w.listed is None and not w.due
            ]
            if not waiting:
                break
            head = self._slices(heapq.nsmallest(_PAGE_SIZE + 1, waiting, key=_created))[0]
            fresh: set[str] = set()  # its own: ``skew`` may reach into what others saw
            read, _ = await self._read(head, fresh, 1)
            pages += read
            self._head_read = self._clock()
            heard |= fresh
            if not all(w.listed is not None or w.due for w in head.watches):
                break  # some still run: the ends have not gone past this page
            # Every one of them had ended: completions may run into the next page too
            # (3,000 created at once end ~200 a second, two pages per head read).
        return pages

    def _slices(self, window: list[Watch]) -> list[_Slice]:
        """Cut ``window`` (sorted by creation) into slices of one page of ours, oldest first.

        The first slice starts ``skew`` before the oldest, the last ends ``skew`` after the
        newest (predictions other programs make later are not read); neighbours meet at
        the creation time of the next slice's oldest.
        """
        slices: list[_Slice] = []
        after = _created(window[0]) - self.skew
        for start in range(0, len(window), _PAGE_SIZE):
            watches = window[start : start + _PAGE_SIZE]
            end = start + _PAGE_SIZE
            if end < len(window):
                before = _created(window[end])
            else:
                before = _created(window[-1]) + self.skew
            slices.append(_Slice(after, before, watches))
            after = before - _SEAM
        return slices

    async def _read(self, piece: _Slice, seen: set[str], cap: int) -> tuple[int, datetime | None]:
        """Page one slice (newest first within it), at most ``cap`` pages; deliver what ended.

        Return the pages read and, when the cap cut the slice short, the oldest creation
        its pages came down to (None when the slice was read to its end).
        """
        reached: datetime | None = None
        cursor: str | None = None
        pages = 0
        while pages < cap:
            page = await self.gateway.list(
                cursor, created_after=_iso(piece.after), created_before=_iso(piece.before)
            )
            pages += 1
            for entry in page.results:
                if entry.id in seen:
                    self.duplicates += 1
                    continue
                seen.add(entry.id)
                if entry.created_at:
                    created = _instant(entry.created_at)
                    reached = created if reached is None else min(reached, created)
                watch = self.watches.get(entry.id)
                if watch is None or not entry.status.terminal:
                    continue  # not ours (another program, the web), or still running
                self._deliver(watch, entry, complete=entry.id not in page.lacking)
            if page.next is None:
                return pages, None
            cursor = page.next
        return pages, reached if reached is not None else piece.before

    def _deliver(self, watch: Watch, entry: Prediction, *, complete: bool) -> None:
        if watch.listed is not None or watch.due:
            return  # delivered by an earlier sweep; its worker has not run since
        if complete:
            watch.listed = entry
            self.delivered += 1
        else:
            watch.due = True  # the list did not carry the output: the worker GETs it
        watch.wake()

    def _cover(
        self, window: list[Watch], seen: set[str], started: float, beyond: list[Watch]
    ) -> None:
        """Decide, after a sweep, who the sweep covers and who is polled directly."""
        for watch in beyond:
            if watch.listed is not None or watch.due:
                continue  # delivered in this sweep
            # Beyond the pages this sweep could afford: poll it directly from now on.
            watch.beyond = True
            self.beyond += 1
            if watch.covered:
                watch.covered = False
                watch.wake()
        for watch in window:
            if watch.beyond or watch.listed is not None or watch.due:
                continue  # polled directly, or delivered in this sweep
            if watch.id in seen:
                watch.missing_since = None
            elif watch.missing_since is None:
                watch.missing_since = started
                self.missing += 1
            elif started - watch.missing_since >= self.lag_bound:
                # The list is behind (or lost it): ask for it directly, then watch again.
                watch.missing_since = None
                watch.due = True
                watch.wake()
            if not watch.covered:
                watch.covered = True
                watch.wake()  # a worker sleeping out a poll interval can wait on us now


@dataclass(frozen=True, slots=True)
class _Slice:
    """Part of a sweep's window: ours created in (``after``, ``before``), both exclusive."""

    after: datetime
    before: datetime
    watches: list[Watch]


def _created(watch: Watch) -> datetime:
    assert watch.created is not None  # a window holds only these
    return watch.created


def _instant(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
