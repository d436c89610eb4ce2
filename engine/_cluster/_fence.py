"""Fence every write of a job's shared state with its owner and epoch (compare-and-set).

Each job's hash holds ``status``, ``prediction_id``, ``attempt``, ``input_digest``,
``owner`` and ``epoch``; its list holds the journal lines written so far (replayed, they
give the very `JobState` a local journal would). Taking a job bumps its epoch. Every write
(`FencedJournal.append`) and the check just before a create (`Fence.check_create`) is a
Lua script that refuses unless owner and epoch still match: a worker paused past its lease
(SIGSTOP, a long GC, a partition) learns it lost the job the moment it tries to act, and
acts no more (`FencedError`).
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any

import anyio
from redis.asyncio import Redis

from engine._cluster._keys import RunKeys
from engine._durable import write_durably
from engine._journal import Journal, JournalEvent, JournalRecord
from jobs import JobStatus

__all__ = ["CURRENT_JOB", "Fence", "FencedError", "FencedJournal", "export_journal"]

# The job (key, epoch) the running task works on: the create budget checks its fence
# right before sending, without the gateway knowing about clusters.
CURRENT_JOB: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "engine_cluster_job", default=None
)

_STATUS = {
    JournalEvent.CREATING: JobStatus.CREATING,
    JournalEvent.CREATED: JobStatus.RUNNING,
    JournalEvent.SUCCEEDED: JobStatus.SUCCEEDED,
    JournalEvent.DONE: JobStatus.DONE,
    JournalEvent.FAILED: JobStatus.FAILED,
    JournalEvent.CANCELED: JobStatus.CANCELED,
}
FINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELED})

# ARGV: prefix, key, me, epoch, line, status, prediction id, attempt, input digest.
_WRITE = """
local p, key, me, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local st = p .. ':job:' .. key
local h = redis.call('HMGET', st, 'owner', 'epoch', 'status')
if h[1] ~= me or h[2] ~= epoch then return 0 end
redis.call('RPUSH', p .. ':rec:' .. key, ARGV[5])
local status = ARGV[6]
if status ~= '' and status ~= h[3] then
  redis.call('HSET', st, 'status', status)
  redis.call('HINCRBY', p .. ':meta', 'n:' .. (h[3] or 'pending'), -1)
  redis.call('HINCRBY', p .. ':meta', 'n:' .. status, 1)
end
if ARGV[7] ~= '' then redis.call('HSET', st, 'prediction_id', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', st, 'attempt', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', st, 'input_digest', ARGV[9]) end
return 1
"""

# ARGV: prefix, key, me, epoch, margin ms. A create may go out only while this worker owns
# the job and its lease has more than the margin left: nobody can claim it meanwhile.
_CHECK_CREATE = """
local p, key, me, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = redis.call('HMGET', p .. ':job:' .. key, 'owner', 'epoch')
if h[1] ~= me or h[2] ~= epoch then return 0 end
if redis.call('PTTL', p .. ':lease:' .. me) <= tonumber(ARGV[5]) then return -1 end
return 1
"""


class FencedError(Exception):
    """This worker may not act on the job: another took it, or its own lease ran short.

    ``still_owner`` is True in the second case: nobody else holds the job yet, so the
    worker can put it back in the queue instead of leaving it to a claim.
    """

    def __init__(self, message: str, *, still_owner: bool = False) -> None:
        super().__init__(message)
        self.still_owner = still_owner


class Fence:
    """Fenced writes of one worker to the shared state of the jobs it holds."""

    def __init__(self, redis: Redis, keys: RunKeys, worker: str, *, margin: float) -> None:
        self.keys = keys
        self.worker = worker
        self.margin_ms = int(margin * 1000)
        self._write = redis.register_script(_WRITE)
        self._check = redis.register_script(_CHECK_CREATE)
        self.held: dict[str, int] = {}  # job key -> epoch this worker holds
        self.last: dict[str, JobStatus] = {}  # job key -> last status it wrote

    async def write(self, record: JournalRecord) -> None:
        """Append ``record`` to the job's shared state; raise `FencedError` if not ours."""
        epoch = self.held.get(record.key)
        if epoch is None:
            raise FencedError(f"job {record.key!r} is not held by worker {self.worker}")
        status = _STATUS.get(record.event)
        args: list[Any] = [
            self.keys.prefix,
            record.key,
            self.worker,
            str(epoch),
            record.to_line().rstrip(b"\n"),
            status.value if status else "",
            record.prediction_id or "" if record.event is not JournalEvent.FILE else "",
            "" if record.attempt is None else str(record.attempt),
            record.input_digest or "",
        ]
        if not await self._write(args=args):
            self.held.pop(record.key, None)
            raise FencedError(f"job {record.key!r} was taken over (epoch {epoch} is stale)")
        if status is not None:
            self.last[record.key] = status

    async def check_create(self) -> None:
        """Raise `FencedError` unless the current task's job may still be created."""
        current = CURRENT_JOB.get()
        if current is None:
            return  # not a job's create (none today): nothing to fence
        key, epoch = current
        args: list[Any] = [self.keys.prefix, key, self.worker, str(epoch), self.margin_ms]
        answer = await self._check(args=args)
        if answer == 0:
            raise FencedError(f"create of job {key!r} refused: taken over")
        if answer != 1:
            raise FencedError(f"create of job {key!r} refused: lease too short", still_owner=True)


class FencedJournal(Journal):
    """A local `Journal` whose every record is first written, fenced, to Redis.

    The worker's context takes it where it takes a `Journal`: the job lifecycle is
    unchanged, and a refused write raises `FencedError` out of `run_job`.
    """

    def __init__(self, path: Path, fence: Fence, *, flush_interval: float = 0.02) -> None:
        super().__init__(path, flush_interval=flush_interval)
        self.fence = fence

    async def append(self, record: JournalRecord, *, durable: bool = False) -> None:
        """Write ``record`` to the job's shared state (fenced), then to the local journal."""
        if record.event is not JournalEvent.RUN:  # the local file's header is no job's
            await self.fence.write(record)
        await super().append(record, durable=durable)


async def export_journal(redis: Redis, keys: RunKeys, path: Path) -> int:
    """Write a standard journal of the whole run at ``path`` (atomically); return its jobs.

    The lines are the very records the workers wrote, job by job, after one run header:
    a replay folds each job's lines alone, so it gives every job the state it has in
    Redis. A single-machine ``run`` with that journal (``--state``) finishes what the
    cluster started: it re-attaches running predictions and reconciles creates in flight.
    """
    lines: list[bytes] = [JournalRecord.run().to_line()]
    jobs = 0
    async for key, _job in redis.hscan_iter(keys.jobs):
        records = await redis.lrange(keys.records(key.decode()), 0, -1)  # type: ignore[misc]
        if records:
            jobs += 1
            lines.extend(line if line.endswith(b"\n") else line + b"\n" for line in records)
    await anyio.to_thread.run_sync(write_durably, path, b"".join(lines))
    return jobs
