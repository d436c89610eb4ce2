"""Share one account's rate schedule among every worker, on every machine, through Redis.

`RedisBudget` runs `engine._limits.Budget`'s scheduled-slot algorithm in a short Lua
script, atomically, against the Redis server's clock (``TIME``): every worker of every
machine takes its slots from one schedule, so the account sees one smooth stream of
requests however many processes send them. A 429 seen by any worker sets a cooldown in
the same hash, and a low-credit answer lowers the rate there: both apply to all.

`ClusterPollPacer` spreads polling over the read budget using the in-flight count of
every worker (each reports its own with its heartbeat).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from redis.asyncio import Redis

from engine._limits import _HEADROOM, Budget, PollPacer

__all__ = ["ClusterPollPacer", "RedisBudget"]

# How many missed slots a late worker may make up. More than a local budget's 2: a slot
# taken through Redis is late by round trips on top of the event loop's own lateness. Any
# 60 s window still holds at most rate x headroom + this many, under the limit.
_CATCH_UP = 4
# Idle budgets vanish; a low-credit downgrade is remembered as long as the account is used.
_IDLE_MS = 15 * 60 * 1000

# The scheduled-slot step of `Budget.reserve`, with the server's clock. One difference:
# the next slot is due one interval after this one was *due*, even when this one is taken
# late. Locally a waiter is late by microseconds; here by a round trip to Redis and a
# sleep's overshoot, which would otherwise cost a few percent of the budget per slot. The
# catch-up bound still caps what lateness can make up (`_CATCH_UP` slots), and the
# headroom covers those. Numbers cross the Lua boundary as strings: Redis truncates Lua
# numbers to integers.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local h = redis.call('HMGET', KEYS[1], 'due', 'cooldown', 'low_rate', 'low_burst')
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local low = tonumber(h[3])
if low and low < rate then rate, burst = low, tonumber(h[4]) or 1 end
local sustained = math.max(rate - (burst - 1), rate / 2) * tonumber(ARGV[4])
local interval = 60.0 / sustained
local tolerance = (burst - 1) * interval
local due = tonumber(h[1]) or now
local cooldown = tonumber(h[2]) or 0
due = math.max(due, now - tonumber(ARGV[3]) * interval)
local start = math.max(now, due - tolerance, cooldown)
due = math.max(due, cooldown) + interval
redis.call('HSET', KEYS[1], 'due', string.format('%.6f', due))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {string.format('%.6f', start - now), string.format('%.6f', rate),
        tostring(burst)}
"""

_COOLDOWN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown')) or 0
return string.format('%.6f', cooldown - now)
"""

# ARGV: retry_after seconds (or ''), low-credit rate (or ''), its burst, idle ms.
_THROTTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] ~= '' then
  local untl = now + tonumber(ARGV[1])
  local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown')) or 0
  if untl > cooldown then
    redis.call('HSET', KEYS[1], 'cooldown', string.format('%.6f', untl))
  end
  redis.call('HINCRBY', KEYS[1], 'throttled', 1)
end
if ARGV[2] ~= '' then
  local low = tonumber(redis.call('HGET', KEYS[1], 'low_rate'))
  if not low or tonumber(ARGV[2]) < low then
    redis.call('HSET', KEYS[1], 'low_rate', ARGV[2], 'low_burst', ARGV[3])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class RedisBudget(Budget):
    """A `Budget` whose schedule, cooldown and rate live in Redis, shared by all workers.

    Same interface: `acquire` (async), `throttle` and `lower_rate` (plain calls from the
    pacing transport: they are queued and sent to Redis before this worker's next slot,
    and by `flush`). ``before_send`` runs after a slot was granted and before the request
    goes out: the cluster checks the job's fence there before a create.
    """

    def __init__(
        self, redis: Redis, key: str, name: str, rate_per_min: float, *, burst: int = 1
    ) -> None:
        super().__init__(name, rate_per_min, burst=burst)
        self._redis = redis
        self.key = key
        self._base_rate, self._base_burst = rate_per_min, burst
        self._reserve = redis.register_script(_RESERVE)
        self._cooldown = redis.register_script(_COOLDOWN)
        self._throttle = redis.register_script(_THROTTLE)
        self._pending: list[tuple[str, str, str]] = []
        self.before_send: Callable[[], Awaitable[None]] | None = None

    async def acquire(self) -> None:
        """Wait for this account's next shared slot (after any shared cooldown)."""
        async with self._turn:
            await self.flush()
            while True:
                delay = await self._take_slot()
                if delay <= 0:
                    break  # granted now: the script saw no cooldown either
                await anyio.sleep(delay)
                # A worker elsewhere may have hit a 429 while we slept: then take a new
                # slot after its cooldown, so everyone resumes paced.
                if float(await self._cooldown(keys=[self.key])) <= 0:
                    break
            self.acquired += 1
        if self.before_send is not None:
            await self.before_send()

    async def _take_slot(self) -> float:
        args: list[Any] = [self._base_rate, self._base_burst, _CATCH_UP, _HEADROOM, _IDLE_MS]
        delay, rate, burst = await self._reserve(keys=[self.key], args=args)
        rate_f, burst_i = float(rate), int(burst)
        if rate_f != self.rate_per_min or burst_i != self.burst:
            self._set_rate(rate_f, burst_i)  # a downgrade another worker saw
        return float(delay)

    def throttle(self, retry_after: float) -> None:
        """Pause every worker on this budget for ``retry_after`` seconds (sent on next use)."""
        super().throttle(retry_after)
        self._pending.append((f"{max(0.0, retry_after):.3f}", "", ""))

    def lower_rate(self, rate_per_min: float, *, burst: int = 1) -> None:
        """Lower the shared rate for every worker (the low-credit throttle); never raise it."""
        if 0 < rate_per_min < self.rate_per_min:
            self._pending.append(("", f"{rate_per_min:g}", str(burst)))
        super().lower_rate(rate_per_min, burst=burst)

    async def flush(self) -> None:
        """Send queued cooldowns and downgrades to Redis."""
        while self._pending:
            retry_after, rate, burst = self._pending[0]
            await self._throttle(keys=[self.key], args=[retry_after, rate, burst, _IDLE_MS])
            self._pending.pop(0)

    async def shared_throttled(self) -> int:
        """Return how many 429s all workers saw on this budget (for status and benches)."""
        return int(await self._redis.hget(self.key, "throttled") or 0)  # type: ignore[misc]


class ClusterPollPacer(PollPacer):
    """Divide the read budget by the in-flight predictions of every worker, not just ours.

    ``others`` is refreshed by the worker's heartbeat (the sum the other live workers
    reported).
    """

    others: int = 0

    def interval(self, age: float = 0.0) -> float:
        """Return the poll interval of a prediction ``age`` seconds old, cluster-wide."""
        mine = self.in_flight
        self.in_flight = mine + self.others
        try:
            return super().interval(age)
        finally:
            self.in_flight = mine
