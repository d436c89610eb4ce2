"""One account's schedule, cooldown, downgrade and in-flight count, shared through Redis."""

from __future__ import annotations

import itertools

import pytest

from engine._cluster._keys import RunKeys, account_prefix
from engine._cluster._queue import Queue
from engine._cluster._schedule import ClusterPollPacer, RedisBudget
from engine._cluster._worker import connect
from engine._config import Secret
from tests.cluster.redis_server import RedisServer

pytestmark = pytest.mark.anyio

TOKEN = Secret("r8_not_a_real_token_0123456789")


def test_the_account_key_is_a_hash_never_the_token() -> None:
    prefix = account_prefix(TOKEN)
    assert TOKEN.reveal() not in prefix
    assert prefix == account_prefix(Secret(TOKEN.reveal()))
    assert prefix != account_prefix(Secret("r8_another_token"))


async def test_workers_take_successive_slots_of_one_schedule(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    key = f"{account_prefix(TOKEN)}:create"
    workers = [RedisBudget(redis, key, "create", 60.0) for _ in range(3)]
    # Nine slots taken round-robin by three workers: each one interval after the one before.
    delays = [await workers[i % 3]._take_slot() for i in range(9)]
    interval = workers[0].min_interval
    gaps = [b - a for a, b in itertools.pairwise(delays)]
    assert delays[0] <= 0
    assert all(0.9 * interval < g <= interval + 1e-6 for g in gaps), (gaps, interval)
    await redis.aclose()


async def test_one_workers_429_pauses_every_worker(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    key = f"{account_prefix(TOKEN)}:create"
    mine, theirs = (RedisBudget(redis, key, "create", 6000.0) for _ in range(2))
    mine.throttle(30.0)
    await mine.flush()
    assert await theirs._take_slot() > 29.0  # their next slot comes after the cooldown
    assert await theirs.shared_throttled() == 1
    await redis.aclose()


async def test_a_low_credit_downgrade_applies_to_all(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    key = f"{account_prefix(TOKEN)}:create"
    mine, theirs = (RedisBudget(redis, key, "create", 600.0) for _ in range(2))
    mine.lower_rate(6.0, burst=1)
    await mine.flush()
    await theirs._take_slot()
    assert theirs.rate_per_min == 6.0
    assert theirs.min_interval == pytest.approx(60.0 / (6.0 * 0.98))
    await redis.aclose()


async def test_poll_pacing_counts_every_workers_in_flight(redis_server: RedisServer) -> None:
    redis = connect(redis_server.url)
    keys = RunKeys("pace")
    inflight = f"{account_prefix(TOKEN)}:inflight"
    a, b = Queue(redis, keys, "a", lease=5.0), Queue(redis, keys, "b", lease=5.0)
    read = RedisBudget(redis, f"{account_prefix(TOKEN)}:read", "read", 600.0)
    pacer = ClusterPollPacer(read, min_interval=0.0)
    await b.heartbeat(inflight, 90)
    beat = await a.heartbeat(inflight, 0)
    assert beat.others_in_flight == 90
    pacer.others = beat.others_in_flight
    with pacer.track():  # 91 in flight in all: 91 polls share 0.9 x 10 reads/s
        assert pacer.interval() == pytest.approx(91 / 9.0)
    await redis.aclose()
