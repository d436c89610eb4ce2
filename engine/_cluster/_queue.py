"""Hand jobs out through a Redis Streams consumer group, with leases and claims.

A worker reads at most as many entries as it has free slots (``XREADGROUP ... COUNT``).
Taking an entry (a Lua script) makes the worker the job's owner and bumps its epoch, so
the fence (`engine._cluster._fence`) refuses whoever held it before. An entry stays
pending until the job's outcome is recorded: ``done`` (or a final failure) acknowledges
it; a job deferred (interrupted, an error that outlasted its retries) goes back at the
end of the stream. A worker proves it is alive with a lease key it renews by heartbeat;
another worker claims the pending entries of a worker whose lease lapsed
(``XAUTOCLAIM``) and gives back at once those whose owner is still alive.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine._cluster._fence import FencedError
from engine._cluster._keys import GROUP, RunKeys
from jobs import Job, ModelRef

__all__ = ["Beat", "Queue", "Taken", "job_from_json", "job_to_json"]

# Shared by the take and claim scripts: make ``me`` the owner of entry ``id`` (job ``key``).
_TAKE_FN = """
local function take(p, stream, id, key, me)
  local st = p .. ':job:' .. key
  local h = redis.call('HMGET', st, 'final', 'owner', 'entry')
  if h[1] == '1' then redis.call('XACK', stream, 'workers', id); return {'final'} end
  local owner = h[2]
  if owner and owner ~= '' then
    if owner == me then
      if h[3] ~= id then redis.call('XACK', stream, 'workers', id); return {'dup'} end
      -- Ours already: a retried script whose answer was lost, or our own idle entry.
      -- Hand it out again (the worker skips a job it is running) so it is never stranded.
      local job = redis.call('HGET', p .. ':jobs', key) or ''
      local recs = redis.call('LRANGE', p .. ':rec:' .. key, 0, -1)
      return {'ok', id, key, redis.call('HGET', st, 'epoch'), job, '', recs}
    end
    if redis.call('EXISTS', p .. ':lease:' .. owner) == 1 then
      if h[3] == id then
        redis.call('XCLAIM', stream, 'workers', owner, 0, id, 'JUSTID')
        return {'busy'}
      end
      redis.call('XACK', stream, 'workers', id); return {'dup'}
    end
  end
  local epoch = redis.call('HINCRBY', st, 'epoch', 1)
  redis.call('HSET', st, 'owner', me, 'entry', id)
  local job = redis.call('HGET', p .. ':jobs', key) or ''
  local recs = redis.call('LRANGE', p .. ':rec:' .. key, 0, -1)
  return {'ok', id, key, tostring(epoch), job, owner or '', recs}
end
"""

# ARGV: prefix, me, then entry id and job key pairs (fresh from XREADGROUP).
_TAKE = (
    _TAKE_FN
    + """
local out = {}
for i = 3, #ARGV, 2 do
  local r = take(ARGV[1], ARGV[1] .. ':stream', ARGV[i], ARGV[i + 1], ARGV[2])
  if r[1] == 'ok' then table.insert(out, r) end
end
return out
"""
)

# ARGV: prefix, me, min idle ms, count.
_CLAIM = (
    _TAKE_FN
    + """
local stream = ARGV[1] .. ':stream'
local res = redis.call('XAUTOCLAIM', stream, 'workers', ARGV[2], ARGV[3], '0-0',
                       'COUNT', ARGV[4])
local out = {}
for _, e in ipairs(res[2]) do
  local id, fields = e[1], e[2]
  if fields and fields[2] then
    local r = take(ARGV[1], stream, id, fields[2], ARGV[2])
    if r[1] == 'ok' then table.insert(out, r) end
  else
    redis.call('XACK', stream, 'workers', id)
  end
end
return out
"""
)

# ARGV: prefix, key, me, epoch, entry, mode (final | requeue), max requeues.
_FINISH = """
local p, key, me, epoch, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local st = p .. ':job:' .. key
local h = redis.call('HMGET', st, 'owner', 'epoch', 'final')
if h[1] ~= me or h[2] ~= epoch then return 0 end
local stream = p .. ':stream'
redis.call('HSET', st, 'owner', '')
redis.call('XACK', stream, 'workers', id)
if ARGV[6] == 'final' then
  if h[3] ~= '1' then
    redis.call('HSET', st, 'final', '1')
    redis.call('HINCRBY', p .. ':meta', 'finished', 1)
  end
  return 1
end
if redis.call('HINCRBY', st, 'requeues', 1) > tonumber(ARGV[7]) then
  if redis.call('SADD', p .. ':parked', key) == 1 then
    redis.call('HINCRBY', p .. ':meta', 'parked', 1)
  end
  return 2
end
redis.call('XADD', stream, '*', 'k', key)
return 1
"""

# ARGV: prefix, me, lease ms, in-flight hash of the account, in-flight count.
_HEARTBEAT = """
local p, me, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('SET', p .. ':lease:' .. me, '1', 'PX', lease)
redis.call('SADD', p .. ':workers', me)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', ARGV[4], me, ARGV[5] .. ':' .. string.format('%d', now + lease))
local others = 0
local all = redis.call('HGETALL', ARGV[4])
for i = 1, #all, 2 do
  local c, exp = string.match(all[i + 1], '(%d+):(%d+)')
  if tonumber(exp) < now then redis.call('HDEL', ARGV[4], all[i])
  elseif all[i] ~= me then others = others + tonumber(c) end
end
redis.call('PEXPIRE', ARGV[4], lease * 10)
local m = redis.call('HMGET', p .. ':meta', 'control', 'total', 'finished', 'parked',
                     'submitted')
return {tostring(others), m[1] or '', m[2] or '0', m[3] or '0', m[4] or '0', m[5] or '0'}
"""

# ARGV: prefix, then job key and job JSON pairs. A job already enqueued is not added again.
_ENQUEUE = """
local p, n = ARGV[1], 0
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', p .. ':jobs', ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('XADD', p .. ':stream', '*', 'k', ARGV[i])
    n = n + 1
  end
end
redis.call('HINCRBY', p .. ':meta', 'total', n)
redis.call('HINCRBY', p .. ':meta', 'n:pending', n)
return n
"""

# Put parked jobs (deferred too often) back in the stream for a new submission.
_UNPARK = """
local p = ARGV[1]
local keys = redis.call('SMEMBERS', p .. ':parked')
for _, key in ipairs(keys) do
  redis.call('HSET', p .. ':job:' .. key, 'requeues', 0)
  redis.call('XADD', p .. ':stream', '*', 'k', key)
end
redis.call('DEL', p .. ':parked')
redis.call('HSET', p .. ':meta', 'parked', 0)
return #keys
"""


def job_to_json(job: Job) -> str:
    """Return the job as the JSON a worker rebuilds it from.

    ``@path`` inputs are absolute `Path` values at any depth of the input: they travel as
    strings, with the place of each in ``files`` (a list of key/index paths), so a worker
    uploads them as files and a string input that looks like a path stays a string.
    """
    files: list[list[str | int]] = []
    return json.dumps(
        {
            "key": job.key,
            "model": str(job.model),
            "input": _paths_out(job.input, [], files),
            "files": files,
            "output": job.output,
            "index": job.index,
            "source": job.source,
            "line": job.line,
        },
        separators=(",", ":"),
    )


def job_from_json(text: str | bytes) -> Job:
    """Rebuild a job written by `job_to_json`."""
    obj = json.loads(text)
    job_input = obj["input"]
    for place in obj.get("files", ()):
        holder = job_input
        for step in place[:-1]:
            holder = holder[step]
        holder[place[-1]] = Path(holder[place[-1]])
    return Job(
        key=obj["key"],
        model=ModelRef.parse(obj["model"]),
        input=job_input,
        output=obj["output"],
        source=obj.get("source", "<redis>"),
        line=obj.get("line", 0),
        index=obj.get("index", 0),
    )


def _paths_out(value: Any, place: list[str | int], files: list[list[str | int]]) -> Any:
    """Return ``value`` with every `Path` as a string, its place appended to ``files``."""
    if isinstance(value, Path):
        files.append(place)
        return str(value)
    if isinstance(value, list):
        return [_paths_out(v, [*place, i], files) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _paths_out(v, [*place, k], files) for k, v in value.items()}
    return value


@dataclass(frozen=True, slots=True)
class Taken:
    """A job this worker now owns: its stream entry, epoch and journaled lines so far."""

    entry: str
    job: Job
    epoch: int
    previous_owner: str
    records: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned: others' in-flight count, the control word, progress."""

    others_in_flight: int
    control: str
    total: int
    finished: int
    parked: int
    submitted: bool

    @property
    def complete(self) -> bool:
        """Return True once every job of a fully submitted run has an outcome."""
        return self.submitted and self.finished + self.parked >= self.total


class Queue:
    """One worker's (or the submitter's) view of a run's queue."""

    def __init__(self, redis: Redis, keys: RunKeys, worker: str, *, lease: float) -> None:
        self.redis = redis
        self.keys = keys
        self.worker = worker
        self.lease_ms = max(1, int(lease * 1000))
        self._take = redis.register_script(_TAKE)
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._unpark = redis.register_script(_UNPARK)

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if they do not exist yet."""
        try:
            await self.redis.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, jobs: Iterable[Job], *, batch: int = 500) -> int:
        """Add the jobs not enqueued before; return how many were new."""
        await self.ensure_group()
        added = 0
        chunk: list[Any] = []
        for job in jobs:
            chunk += [job.key, job_to_json(job)]
            if len(chunk) >= 2 * batch:
                added += int(await self._enqueue(args=[self.keys.prefix, *chunk]))
                chunk = []
        if chunk:
            added += int(await self._enqueue(args=[self.keys.prefix, *chunk]))
        return added

    async def start_submission(self) -> int:
        """Clear a previous stop and put parked jobs back; return how many were parked."""
        await self.ensure_group()
        await self.redis.hset(self.keys.meta, mapping={"submitted": 0, "control": ""})  # type: ignore[misc]
        return int(await self._unpark(args=[self.keys.prefix]))

    async def end_submission(self) -> None:
        """Mark the manifest fully enqueued: workers may stop once every job has an outcome."""
        await self.redis.hset(self.keys.meta, "submitted", "1")  # type: ignore[misc]

    async def set_control(self, word: str) -> None:
        """Tell every worker to ``drain`` or ``interrupt`` (read at their next heartbeat)."""
        await self.redis.hset(self.keys.meta, "control", word)  # type: ignore[misc]

    async def read(self, count: int, *, block_ms: int) -> list[Taken]:
        """Take up to ``count`` fresh entries (waiting up to ``block_ms`` for one)."""
        if count <= 0:
            return []
        answer = await self.redis.xreadgroup(
            GROUP, self.worker, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        args: list[Any] = [self.keys.prefix, self.worker]
        for _stream, entries in answer or ():
            for entry_id, fields in entries:
                key = fields.get(b"k")
                if key is None:
                    await self.redis.xack(self.keys.stream, GROUP, entry_id)
                    continue
                args += [entry_id, key]
        if len(args) == 2:
            return []
        return _taken(await self._take(args=args))

    async def claim(self, count: int) -> list[Taken]:
        """Take up to ``count`` entries whose owner's lease lapsed."""
        if count <= 0:
            return []
        args: list[Any] = [self.keys.prefix, self.worker, self.lease_ms, count]
        return _taken(await self._claim(args=args))

    async def finish(self, taken: Taken, *, final: bool, max_requeues: int) -> None:
        """Acknowledge a job with an outcome, or requeue a deferred one.

        Raise `FencedError` when the job was taken over meanwhile (nothing is changed).
        """
        args: list[Any] = [
            self.keys.prefix,
            taken.job.key,
            self.worker,
            str(taken.epoch),
            taken.entry,
            "final" if final else "requeue",
            max_requeues,
        ]
        if int(await self._finish(args=args)) == 0:
            key = taken.job.key
            raise FencedError(f"job {key!r} was taken over before its outcome was recorded")

    async def heartbeat(self, in_flight_key: str, in_flight: int) -> Beat:
        """Renew this worker's lease, report its in-flight count, read the run's state."""
        args: list[Any] = [self.keys.prefix, self.worker, self.lease_ms, in_flight_key, in_flight]
        others, control, total, finished, parked, submitted = await self._heartbeat(args=args)
        return Beat(
            int(others),
            _text(control),
            int(total),
            int(finished),
            int(parked),
            int(submitted) == 1,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _taken(rows: Sequence[Sequence[Any]]) -> list[Taken]:
    return [
        Taken(
            entry=_text(entry),
            job=job_from_json(job),
            epoch=int(epoch),
            previous_owner=_text(owner),
            records=tuple(records),
        )
        for _ok, entry, _key, epoch, job, owner, records in rows
    ]
