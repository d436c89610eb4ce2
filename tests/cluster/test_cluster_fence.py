"""The fence and the queue at the Redis level: take, claim, refuse, acknowledge, requeue."""

from __future__ import annotations

import anyio
import pytest

from engine._cluster._fence import CURRENT_JOB, Fence, FencedError
from engine._cluster._keys import RunKeys
from engine._cluster._queue import Queue
from engine._cluster._worker import connect
from engine._journal import JournalRecord, replay
from jobs import Job, JobStatus, ModelRef
from tests.cluster.redis_server import RedisServer

pytestmark = pytest.mark.anyio

LEASE = 0.2  # seconds: short, so a lapse takes a moment


def job(key: str) -> Job:
    return Job(key, ModelRef.parse("black-forest-labs/flux-schnell"), {"prompt": key}, key)


async def test_a_claimed_job_refuses_its_old_owner(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    keys = RunKeys("fence")
    a, b = Queue(redis, keys, "a", lease=LEASE), Queue(redis, keys, "b", lease=LEASE)
    fence_a = Fence(redis, keys, "a", margin=LEASE / 2)
    fence_b = Fence(redis, keys, "b", margin=LEASE / 2)
    await a.enqueue([job("j1")])
    await a.heartbeat("inflight", 0)
    [taken] = await a.read(5, block_ms=10)
    fence_a.held["j1"] = taken.epoch
    await fence_a.write(JournalRecord.creating("j1", attempt=1, input_digest="d"))
    token = CURRENT_JOB.set(("j1", taken.epoch))
    await fence_a.check_create()  # its lease is fresh: the create may go out

    assert await b.claim(5) == []  # not idle long enough, and a's lease is alive
    await anyio.sleep(LEASE * 1.5)  # a is "paused": no heartbeat, its lease lapses
    await b.heartbeat("inflight", 0)
    [claimed] = await b.claim(5)
    assert claimed.previous_owner == "a"
    assert claimed.epoch == taken.epoch + 1
    state = replay(claimed.records).jobs["j1"]
    assert state.status is JobStatus.CREATING  # b must reconcile before creating

    await a.heartbeat("inflight", 0)  # a wakes up and renews its lease: too late
    with pytest.raises(FencedError):
        await fence_a.check_create()
    with pytest.raises(FencedError):
        await fence_a.write(JournalRecord.created("j1", prediction_id="p1", attempt=1))
    with pytest.raises(FencedError):
        await a.finish(taken, final=True, max_requeues=3)
    CURRENT_JOB.reset(token)

    fence_b.held["j1"] = claimed.epoch
    await fence_b.write(JournalRecord.created("j1", prediction_id="p2", attempt=1))
    await b.finish(claimed, final=True, max_requeues=3)
    assert await redis.hget(keys.state("j1"), "prediction_id") == b"p2"  # type: ignore[misc]
    assert await redis.hget(keys.meta, "finished") == b"1"  # type: ignore[misc]
    assert await b.claim(5) == []
    assert await b.read(5, block_ms=10) == []
    await redis.aclose()


async def test_enqueue_is_once_per_key_and_a_deferred_job_comes_back(
    redis_server: RedisServer,
) -> None:
    redis = connect(redis_server.url)
    keys = RunKeys("queue")
    q = Queue(redis, keys, "w", lease=5.0)
    assert await q.enqueue([job("a"), job("b")]) == 2
    assert await q.enqueue([job("a"), job("b"), job("c")]) == 1
    taken = await q.read(10, block_ms=10)
    assert sorted(t.job.key for t in taken) == ["a", "b", "c"]
    deferred = next(t for t in taken if t.job.key == "a")
    await q.finish(deferred, final=False, max_requeues=1)  # back at the end of the stream
    [again] = await q.read(10, block_ms=10)
    assert again.job == deferred.job
    assert again.epoch == deferred.epoch + 1
    await q.finish(again, final=False, max_requeues=1)  # deferred too often: parked
    assert await q.read(10, block_ms=10) == []
    await q.end_submission()
    beat = await q.heartbeat("inflight", 0)
    assert (beat.total, beat.finished, beat.parked) == (3, 0, 1)
    assert await q.start_submission() == 1  # a new submission puts it back
    [back] = await q.read(10, block_ms=10)
    assert back.job.key == "a"
    await redis.aclose()


async def test_a_create_is_refused_when_the_lease_runs_short(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    keys = RunKeys("short")
    q = Queue(redis, keys, "w", lease=LEASE)
    fence = Fence(redis, keys, "w", margin=LEASE / 2)
    await q.enqueue([job("j")])
    await q.heartbeat("inflight", 0)
    [taken] = await q.read(5, block_ms=10)
    token = CURRENT_JOB.set(("j", taken.epoch))
    await anyio.sleep(LEASE * 0.75)  # no heartbeat: less than the margin is left
    with pytest.raises(FencedError) as refused:
        await fence.check_create()
    assert refused.value.still_owner  # nobody else has it: the worker may requeue it
    CURRENT_JOB.reset(token)
    await q.finish(taken, final=False, max_requeues=3)
    [again] = await q.read(5, block_ms=10)
    assert again.job.key == "j"
    await redis.aclose()
