"""The budget ledger shared by every replica, in Redis (semantics in ``limits/budgets.py``).

Each (scope, period) is three keys under the prefix, ``budget:<scope>:<period>:`` then
``b`` (hash: ``spent`` and ``reserved``, micro-dollars), ``h`` (hash: lease -> held) and ``z``
(sorted set: lease -> hold expiry, server time in ms). One Lua script checks and holds across
every budget of a request, so the check-and-hold is atomic between replicas. Holds expire
``hold_ttl`` seconds after they were made (a replica that crashed mid-request frees its holds),
so ``hold_ttl`` must exceed the longest request. Counters are seeded from the database with
HSETNX semantics (the first replica's seed wins; the others agree with it) and expire after
their period ends plus a margin (``total`` counters after 90 days unused): the next use seeds
them again from the database. A settle whose counter has vanished (Redis restarted, period long
over) records nothing there: the database has the request, and seeding picks it up.
A reserve cancelled or cut off in flight (client gone, timeout) may have held without our
hearing of it: a background task takes the hold back and leaves a tombstone for the lease
(``hold_ttl``), so a copy of the reserve that reaches Redis later holds nothing. A settle that
Redis did not answer (down, or hung past the timeout) is made again once it is back
(``settle_late``, through ``FallbackLedger``), and counted once whichever copy arrives first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from switchyard.core.limits import BudgetCheck, Reservation
from switchyard.limits.budgets import (
    MICRO,
    Clock,
    Held,
    LedgerUnavailableError,
    Period,
    SpentSource,
    exhausted,
    period_of,
    periods_for,
    seed,
    to_micro,
    utcnow,
)
from switchyard.limits.redis_client import open_redis

__all__ = ["RedisLedger"]

log = logging.getLogger("switchyard.budgets")

_TOTAL_TTL = 90 * 86400  # seconds a total budget's counter lives unused

_PURGE = """
local function purge(b, h, z, now, counted)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 500)
  if #gone == 0 then return end
  local drop = 0
  for _, v in ipairs(redis.call('HMGET', h, unpack(gone))) do drop = drop + (tonumber(v) or 0) end
  redis.call('HDEL', h, unpack(gone))
  redis.call('ZREM', z, unpack(gone))
  if counted and drop > 0 then redis.call('HINCRBY', b, 'reserved', -drop) end
end
"""

# KEYS: b, h, z per budget, then the lease's tombstone. ARGV: lease, amount, hold ms, mode
# ('hold' or 'peek'), then per budget: limit, seed ('' = not known yet), key ttl (s).
# Returns {-2}: the lease was cancelled (nothing written); {-1, i...}: budgets i need a seed
# (nothing written); {0, i, used}: budget i has no room (nothing held); {1, room...}: held (or,
# for 'peek', only measured), room left in each.
_RESERVE = _PURGE + """
local lease, amount, hold_ms, peek = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == 'peek'
local n = (#KEYS - 1) / 3
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {-2} end
local missing = {}
for i = 1, n do
  if ARGV[3 * i + 3] == '' and redis.call('HEXISTS', KEYS[3 * i - 2], 'spent') == 0 then
    missing[#missing + 1] = i
  end
end
if #missing > 0 then return {-1, unpack(missing)} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local used = {}
for i = 1, n do
  local b, h, z = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, seed, ttl = tonumber(ARGV[3 * i + 2]), ARGV[3 * i + 3], ARGV[3 * i + 4]
  if redis.call('HEXISTS', b, 'spent') == 0 then
    purge(b, h, z, now, false)
    local held = 0
    for _, v in ipairs(redis.call('HVALS', h)) do held = held + tonumber(v) end
    redis.call('HSET', b, 'spent', seed, 'reserved', held)
    redis.call('EXPIRE', b, ttl)
  else
    purge(b, h, z, now, true)
  end
  local v = redis.call('HMGET', b, 'spent', 'reserved')
  used[i] = tonumber(v[1]) + (tonumber(v[2]) or 0) - (tonumber(redis.call('HGET', h, lease)) or 0)
  if not peek and used[i] + amount > limit then return {0, i, used[i]} end
end
local room = {1}
for i = 1, n do
  local b, h, z = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, ttl = tonumber(ARGV[3 * i + 2]), ARGV[3 * i + 4]
  if peek then
    room[i + 1] = limit - used[i]
  else
    local prev = tonumber(redis.call('HGET', h, lease)) or 0
    redis.call('HINCRBY', b, 'reserved', amount - prev)
    redis.call('HSET', h, lease, amount)
    redis.call('ZADD', z, now + hold_ms, lease)
    redis.call('EXPIRE', b, ttl)
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', z, ttl)
    room[i + 1] = limit - used[i] - amount
  end
end
return room
"""

# KEYS: b, h, z per budget, then the lease's tombstone. ARGV: lease, actual (micro-dollars; 0 to
# release), tombstone ms (0: none; else a reserve of this lease arriving later holds nothing),
# then '1' for a late settle. A late settle counts the spend only where the hold is still there,
# and leaves the tombstone: if the first try reached Redis after all, before it or after it,
# the spend is counted once (a finish that finds the tombstone does nothing).
_FINISH = """
local lease, actual, tomb_ms, late = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {0} end
if tomb_ms > 0 then redis.call('SET', KEYS[#KEYS], 1, 'PX', tomb_ms) end
for i = 1, (#KEYS - 1) / 3 do
  local b, h, z = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local held = tonumber(redis.call('HGET', h, lease))
  if held then
    redis.call('HDEL', h, lease)
    redis.call('ZREM', z, lease)
  end
  if redis.call('HEXISTS', b, 'spent') == 1 then
    if held then redis.call('HINCRBY', b, 'reserved', -held) end
    if actual > 0 and (held or not late) then redis.call('HINCRBY', b, 'spent', actual) end
  end
end
return {1}
"""


class RedisLedger:
    """Budgets in Redis, shared by every replica. ``url_or_client``: a redis:// URL (the ledger
    opens a client with short socket timeouts, and closes it in ``aclose``) or a client (shared:
    left open). Either way a script call that gets no answer within ``socket_timeout`` seconds
    (Redis down, or hung: accepting connections and never answering) is ``LedgerUnavailableError``."""

    def __init__(self, url_or_client: str | Redis, prefix: str = "switchyard:", hold_ttl: float = 900.0,
                 spent_source: SpentSource | None = None, clock: Clock = utcnow, *,
                 socket_timeout: float = 0.5, seed_cache_s: float = 2.0) -> None:
        self._owned = isinstance(url_or_client, str)
        self._redis = open_redis(url_or_client, socket_timeout) if isinstance(url_or_client, str) else url_or_client
        self._timeout = socket_timeout  # each script call waits at most this long for Redis
        self._prefix = prefix
        self._hold_ms = max(1, round(hold_ttl * 1000))
        self._margin = math.ceil(hold_ttl) + 3600  # a period's counters outlive it by this (s)
        self._source = spent_source
        self._clock = clock
        self._seed_cache_s = seed_cache_s
        self._seeds: dict[tuple[str, str], tuple[float, int]] = {}  # (scope, period) -> (when, micro)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        self._reserve: AsyncScript = self._redis.register_script(_RESERVE)
        self._finish: AsyncScript = self._redis.register_script(_FINISH)

    def _keys(self, checks: Sequence[BudgetCheck], periods: Sequence[Period], lease: str) -> list[str]:
        keys: list[str] = []
        for check, period in zip(checks, periods, strict=True):
            base = f"{self._prefix}budget:{check.scope}:{period.id}:"
            keys += (base + "b", base + "h", base + "z")
        return [*keys, f"{self._prefix}budget-cancelled:{lease}"]

    def _ttl(self, period: Period, now: datetime) -> int:
        if period.end is None:
            return _TOTAL_TTL
        return max(1, math.ceil((period.end - now).total_seconds())) + self._margin

    async def _run(self, script: AsyncScript, keys: list[str], args: list[str | int]) -> list[int]:
        try:  # (a wait of our own too: a pooled connection's socket timeout is not ours to trust)
            async with asyncio.timeout(self._timeout):
                return list(await script(keys=keys, args=args))
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            raise LedgerUnavailableError(str(exc) or type(exc).__name__) from exc

    async def _seed(self, scope: str, period: Period) -> int:
        """What the database says was spent, fetched once per process per ``seed_cache_s``."""
        key = (scope, period.id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._seeds.get(key)
            if cached is None or time.monotonic() - cached[0] > self._seed_cache_s:
                assert self._source is not None
                cached = (time.monotonic(), to_micro(await seed(self._source, scope, period.start)))
                if len(self._seeds) > 10_000:
                    self._seeds = {k: v for k, v in self._seeds.items()
                                   if time.monotonic() - v[0] <= self._seed_cache_s}
                self._seeds[key] = cached
        self._locks.pop(key, None)
        return cached[1]

    async def _measure(self, checks: Sequence[BudgetCheck], periods: Sequence[Period], lease: str,
                       amount: int, mode: str) -> list[int]:
        now = self._clock()
        keys = self._keys(checks, periods, lease)
        seeds: dict[int, int] = {}
        while True:
            args: list[str | int] = [lease, amount, self._hold_ms, mode]
            for i, (check, period) in enumerate(zip(checks, periods, strict=True)):
                seed = seeds.get(i, 0 if self._source is None else None)
                args += (to_micro(check.limit_usd), "" if seed is None else seed, self._ttl(period, now))
            result = await self._run(self._reserve, keys, args)
            if result[0] != -1:
                return result
            for i in result[1:]:
                seeds[i - 1] = await self._seed(checks[i - 1].scope, periods[i - 1])

    async def available(self, checks: Sequence[BudgetCheck]) -> float:
        if not checks:
            return math.inf
        now = self._clock()
        room = await self._measure(checks, [period_of(c.period, now) for c in checks], "", 0, "peek")
        return max(0, min(room[1:])) / MICRO

    async def reserve(self, checks: Sequence[BudgetCheck], lease: str, amount_usd: float) -> Reservation:
        now = self._clock()
        periods = tuple(period_of(c.period, now) for c in checks)
        amount = to_micro(amount_usd)
        held = Held(lease, tuple(checks), amount / MICRO, periods=periods, owner=self, micro=amount)
        if not checks:
            return held
        try:
            result = await self._measure(checks, periods, lease, amount, "hold")
        except (asyncio.CancelledError, LedgerUnavailableError):
            # the hold may have been made without our hearing of it: take it back, and make sure
            # a reserve still on its way holds nothing when it arrives
            self._cleanup(self._keys(checks, periods, lease), lease)
            raise
        if result[0] == -2:
            raise RuntimeError(f"lease {lease} was cancelled")
        if result[0] == 0:
            raise exhausted(checks[result[1] - 1], result[2])
        held.remaining_usd = {c.scope: max(0, r) / MICRO for c, r in zip(checks, result[1:], strict=True)}
        return held

    async def _done(self, reservation: Reservation, actual: int, *, late: bool = False) -> None:
        if reservation.done and not late:
            return
        reservation.done = True
        if reservation.checks:
            keys = self._keys(reservation.checks, periods_for(reservation, self._clock), reservation.lease)
            await self._run(self._finish, keys, [reservation.lease, actual, self._hold_ms if late else 0,
                                                 1 if late else 0])

    def _cleanup(self, keys: list[str], lease: str) -> None:
        async def cancel() -> None:
            try:
                await self._run(self._finish, keys, [lease, 0, self._hold_ms, 0])
            except Exception as exc:  # unreachable: the hold expires on its own
                log.debug("could not cancel budget hold %s: %s", lease, exc)

        task = asyncio.get_running_loop().create_task(cancel())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        await self._done(reservation, to_micro(actual_usd))

    async def release(self, reservation: Reservation) -> None:
        await self._done(reservation, 0)

    async def settle_late(self, reservation: Reservation, actual_usd: float) -> None:
        """A settle (``actual_usd``; 0: a release) that Redis could not take when the request
        ended, made once it is back: the hold becomes the spend only if it is still there, so it
        counts once even if the first try reached Redis after all. A hold that expired meanwhile
        (Redis away for longer than ``hold_ttl``) counts nothing here: the database has the
        request, and the counter is seeded from it again after its period."""
        await self._done(reservation, to_micro(actual_usd), late=True)

    async def aclose(self) -> None:
        if self._cleanups:  # give hold cancellations in flight a moment, then drop them (they expire)
            _, late = await asyncio.wait(self._cleanups, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._owned:
            await self._redis.aclose()
