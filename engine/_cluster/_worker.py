"""Work a run's shared queue: the worker loop of one process (``engine worker --redis``).

The same job lifecycle as a single-machine run (`engine._worker.run_job`), with three
things swapped in: jobs come from the Redis stream (only as many as there are free
slots), the journal is a `FencedJournal` (each record is also a fenced write of the
job's shared state), and the budgets are `RedisBudget`s shared with every worker of the
account. A heartbeat renews the lease, reports the in-flight count, and carries the run's
control word (``drain``, ``interrupt``) from whoever pressed Ctrl-C.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine._cluster._fence import CURRENT_JOB, FINAL, Fence, FencedError, FencedJournal
from engine._cluster._keys import RunKeys, account_prefix
from engine._cluster._queue import Beat, Queue, Taken
from engine._cluster._schedule import ClusterPollPacer, RedisBudget
from engine._config import EngineConfig
from engine._control import RunControl, Spending
from engine._download import Downloader
from engine._events import JobEvent, JobEventKind
from engine._gateway import Gateway
from engine._journal import JobState, replay
from engine._limits import Limits
from engine._parts import is_stored
from engine._report import RunSummary, write_report
from engine._retry import RetryPolicy
from engine._stats import RunStats
from engine._stopping import cut_after_grace
from engine._worker import WorkerContext, run_job
from jobs import JobStatus

__all__ = ["ClusterOptions", "connect", "serve_worker", "worker_files"]

log = structlog.get_logger("engine.cluster")

EventHook = Callable[[JobEvent], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How a worker joins a run: where Redis is, the run's name, the lease.

    ``lease``: seconds without a heartbeat after which a worker's jobs may be claimed.
    How long after a dead owner's create was sent a claimer waits before believing the
    prediction list is `EngineConfig.settle`, as on one machine. ``max_requeues``:
    deferrals of one job before it is parked (put back by the next submission).
    """

    url: str
    run: str
    lease: float = 15.0
    max_requeues: int = 3
    block: float = 0.5
    worker_id: str | None = None


def connect(url: str) -> Redis:
    """Return a client that rides out a Redis restart of up to about 30 s."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=60)
    client: Redis = Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionError],
        socket_connect_timeout=2.0,
    )
    return client


def new_worker_id() -> str:
    """Return a worker id unique across machines and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def worker_files(config: EngineConfig, run: str, worker: str) -> tuple[Path, Path]:
    """Return a worker's local journal and report paths (one pair per worker process)."""
    base = config.output_dir / ".cluster" / run
    return base / f"{worker}.jsonl", base / f"{worker}.report.json"


async def serve_worker(
    config: EngineConfig,
    options: ClusterOptions,
    *,
    control: RunControl | None = None,
    on_event: EventHook | None = None,
) -> RunSummary:
    """Work the run's queue until every job has an outcome, or until told to stop."""
    control = control or RunControl()
    redis = connect(options.url)
    try:
        return await _Worker(redis, config, options, control, on_event).run()
    finally:
        await redis.aclose()


class _Worker:
    def __init__(
        self,
        redis: Redis,
        config: EngineConfig,
        options: ClusterOptions,
        control: RunControl,
        on_event: EventHook | None,
    ) -> None:
        self.config, self.options, self.control = config, options, control
        self.id = options.worker_id or new_worker_id()
        keys = RunKeys(options.run)
        self.queue = Queue(redis, keys, self.id, lease=options.lease)
        self.fence = Fence(redis, keys, self.id, margin=options.lease / 2)
        account = account_prefix(config.api.require_token())
        self.in_flight_key = f"{account}:inflight"
        self.create = RedisBudget(redis, f"{account}:create", "create", config.create_rate)
        self.read = RedisBudget(redis, f"{account}:read", "read", config.read_rate)
        self.create.before_send = self.fence.check_create
        self.pacer = ClusterPollPacer(self.read, min_interval=config.poll_interval)
        self.stats = RunStats()
        # Run-wide budgets are refused with --redis: only the predict time is counted here.
        self.spending = Spending(control, usage=self.stats.usage)
        self.stats.usage.prices = config.prices
        self.on_event = on_event
        self.active: dict[str, Taken] = {}
        self.freed = anyio.Event()
        self.beat: Beat | None = None
        self.fenced = 0

    async def emit(self, event: JobEvent) -> None:
        self.stats.record(event)
        if event.kind in (JobEventKind.DONE, JobEventKind.FAILED, JobEventKind.DEFERRED):
            log.info(
                f"job.{event.kind}",
                job=event.key,
                prediction_id=event.prediction_id,
                detail=event.detail or None,
            )
        if self.on_event is not None:
            result = self.on_event(event)
            if result is not None and inspect.isawaitable(result):
                await result

    async def run(self) -> RunSummary:
        config = self.config
        await self.queue.ensure_group()
        self.beat = await self.queue.heartbeat(self.in_flight_key, 0)
        journal_path, report_path = worker_files(config, self.options.run, self.id)
        journal_path.parent.mkdir(parents=True, exist_ok=True)
        log.info(
            "worker.started",
            worker=self.id,
            run=self.options.run,
            concurrency=config.concurrency,
            attempt_timeout=config.api.attempt_timeout,
            shutdown_grace=config.shutdown_grace,
        )
        limits = Limits(create=self.create, read=self.read)
        policy = RetryPolicy.from_config(config)
        api = config.api
        if config.job_timeout:
            api = replace(api, cancel_after=config.job_timeout)
        async with (
            FencedJournal(
                journal_path, self.fence, flush_interval=config.journal_flush_interval
            ) as journal,
            Gateway(api, limits, policy) as gateway,
            Downloader(
                config.api, chunk_size=config.download_chunk_size, retry=policy
            ) as downloader,
        ):
            self.stats.retry_counters += [gateway.retries, downloader.retries]  # read live
            ctx = WorkerContext(
                config=config,
                gateway=gateway,
                downloader=downloader,
                journal=journal,
                pacer=self.pacer,
                control=self.control,
                stats=self.stats,
                emit=self.emit,
                spending=self.spending,
            )
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._heartbeats)
                # As on one machine: work still running shutdown_grace seconds after an
                # interrupt stops; its entry stays unacknowledged, so a worker claims it.
                jobs_scope = anyio.CancelScope()
                outer.start_soon(cut_after_grace, self.control, jobs_scope, config.shutdown_grace)
                with jobs_scope:
                    async with anyio.create_task_group() as jobs:
                        await self._take_jobs(jobs, ctx)
                outer.cancel_scope.cancel()
        summary = self.stats.summary(
            predict_seconds=self.spending.predict_seconds,
            throttled_429=self.create.throttled + self.read.throttled,
            throttled_seconds=self.create.throttled_seconds + self.read.throttled_seconds,
            interrupted=self.control.interrupted,
            stopped_reason=self.control.stop_reason,
        )
        write_report(summary, report_path)
        numbers = summary.to_json()
        numbers["failed_keys"] = len(summary.failed_keys)
        log.info("worker.finished", worker=self.id, fenced=self.fenced, **numbers)
        if ctx.storage_error is not None:  # the disk refused: drained, and said as before
            raise ctx.storage_error
        return summary

    async def _take_jobs(self, jobs: anyio.abc.TaskGroup, ctx: WorkerContext) -> None:
        """Take jobs while there are free slots, until the run is complete or stopped."""
        block_ms = max(1, int(self.options.block * 1000))
        while not self.control.stop_creating:
            if self.beat is not None and self.beat.complete and not self.active:
                return
            free = self.config.concurrency - len(self.active)
            if free <= 0:
                with anyio.move_on_after(self.options.block):
                    await self.freed.wait()
                continue
            taken = await self.queue.claim(free)
            taken += await self.queue.read(free - len(taken), block_ms=block_ms)
            for t in taken:
                if t.job.key in self.active:
                    continue  # already ours (a duplicate entry): the running task has it
                self.active[t.job.key] = t
                jobs.start_soon(self._run_one, t, ctx)
            if not taken and self.beat is not None:
                self.beat = await self.queue.heartbeat(self.in_flight_key, self.pacer.in_flight)

    async def _run_one(self, taken: Taken, ctx: WorkerContext) -> None:
        key, epoch = taken.job.key, taken.epoch
        token = CURRENT_JOB.set((key, epoch))
        self.fence.held[key] = epoch
        self.stats.total += 1
        try:
            state = replay(taken.records).jobs.get(key) if taken.records else None
            claimed = bool(taken.previous_owner) and taken.previous_owner != self.id
            if claimed:
                log.info("job.claimed", job=key, previous_owner=taken.previous_owner, epoch=epoch)
                # A create the dead owner left unanswered is settled by run_job itself
                # (engine/_reconcile.py): the list is believed only after --settle.
            if state is not None and self._finished(state):
                final = True
            else:
                await run_job(taken.job, state, ctx)
                status = self.fence.last.get(key, state.status if state else None)
                final = status in FINAL
            await self.queue.finish(taken, final=final, max_requeues=self.options.max_requeues)
        except FencedError as exc:
            self.fenced += 1
            log.warning("job.fenced", job=key, epoch=epoch, error=str(exc))
            if exc.still_owner:  # a starved heartbeat, not a takeover: hand the job back
                with contextlib.suppress(FencedError):
                    await self.queue.finish(
                        taken, final=False, max_requeues=self.options.max_requeues
                    )
        finally:
            CURRENT_JOB.reset(token)
            self.fence.held.pop(key, None)
            self.fence.last.pop(key, None)
            self.active.pop(key, None)
            self.freed.set()
            self.freed = anyio.Event()

    def _finished(self, state: JobState) -> bool:
        """Tell whether the journaled state already is an outcome (recorded, not yet acked)."""
        if state.status is JobStatus.DONE:
            return all(is_stored(self.config.output_dir / f.name, f.size) for f in state.files)
        return state.status in (JobStatus.FAILED, JobStatus.CANCELED) and not (
            self.config.retry_failed
        )

    async def _heartbeats(self) -> None:
        """Renew the lease a few times per lease period; apply the run's control word."""
        period = self.options.lease / 3
        while True:
            try:
                self.beat = await self.queue.heartbeat(self.in_flight_key, self.pacer.in_flight)
                await self.create.flush()
                await self.read.flush()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("worker.heartbeat_failed", worker=self.id, error=str(exc))
            else:
                self.pacer.others = self.beat.others_in_flight
                word = self.beat.control
                if word == "drain":
                    self.control.drain("run drained", interrupted=True)
                elif word == "interrupt":
                    self.control.interrupt("run interrupted")
            await anyio.sleep(period)
