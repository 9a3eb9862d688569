"""Rate limits shared by every replica, in Redis: the same rolling windows as ``MemoryLimiter``.

One Lua script per ``admit`` looks at every check and counts the request in all of them or in
none, atomically; its clock is Redis' ``TIME`` (microseconds), so replicas agree whatever their
own clocks say. Keys (``<prefix>rl:...``), per scope:

    req:<window>:<scope>   sorted set, request log: member <lease>:<i>, score admitted at (µs)
    tok:<window>:<scope>   sorted set, token log: member <lease>:<i> (the prompt hold) or
                           <lease>:<i>:s (the settled total), score at (µs)
    tokn:<window>:<scope>  hash: member -> tokens, and ``#sum`` the tokens in the log
    par:<scope>            sorted set, parallel leases: member <lease>:<i>, score expiry (µs);
                           a replica that dies holding one frees it after ``lease_ttl``

    gone:<lease>           tombstone of an admit whose outcome we never heard (``lease_ttl``)

Every write refreshes the key's TTL to its window (or ``lease_ttl``), so idle scopes expire.
Redis that cannot be reached within ``timeout`` seconds (connection refused, a hung server)
is the 503 ``limits_unavailable``; ``FallbackLimiter`` (``limits/fallback.py``) turns that into per-process limits.
An admit that failed that way or was cancelled may still have run (or run later, from a
queued command): a background task revokes it (takes back whatever it counted and leaves a
tombstone, so a copy arriving later counts nothing), or a parallel slot would stay taken for
``lease_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis

from switchyard.core.limits import Admission, LimitCheck
from switchyard.errors import ServiceUnavailableError
from switchyard.limits.rates import Verdict, decide, unavailable, unique
from switchyard.limits.redis_client import open_redis

__all__ = ["RedisLimiter"]

log = logging.getLogger("switchyard.limits")

_UNREACHABLE = (rx.ConnectionError, rx.TimeoutError, rx.OutOfMemoryError, rx.ReadOnlyError,
                rx.ClusterDownError, rx.TryAgainError, OSError, TimeoutError)

_COMMON = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function pexpire(key, us)
  redis.call('PEXPIRE', key, math.ceil(us / 1000) + 1000)
end
local function add_tokens(log, tok, at, member, n, window)
  redis.call('ZADD', log, at, member)
  redis.call('HSET', tok, member, n)
  redis.call('HINCRBY', tok, '#sum', n)
  pexpire(log, window)
  pexpire(tok, window)
end
"""

# KEYS: the lease's tombstone, then per check its key(s) (two for tokens). ARGV: lease, tokens,
# lease_ttl_us, n, then per check kind (r|t|p), limit, window_us. Returns {1 admitted | 0, then
# per check: status (1 fits, 0 wait, -1 never fits), remaining, reset_us, retry_us}; {-1}: the
# lease was revoked before this copy of its admit arrived (nothing counted, nobody listening).
_ADMIT = _COMMON + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local now = now_us()
local lease, want, ttl, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out, plan, k = {1}, {}, 2
for i = 1, n do
  local kind, limit, window = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  local key, tok = KEYS[k], nil
  local status, remaining, reset, retry = 1, 0, 0, 0
  if kind == 'r' then
    k = k + 1
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local count = redis.call('ZCARD', key)
    remaining = limit - count
    if count > 0 then reset = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + window - now end
    if limit <= 0 then status = -1
    elseif count >= limit then
      status = 0
      retry = tonumber(redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')[2]) + window - now
    end
  elseif kind == 't' then
    tok = KEYS[k + 1]
    k = k + 2
    local edge = now - window
    local old = redis.call('ZRANGEBYSCORE', key, '-inf', edge)
    for j = 1, #old, 500 do
      local part = {unpack(old, j, math.min(j + 499, #old))}
      local gone = 0
      for _, v in ipairs(redis.call('HMGET', tok, unpack(part))) do gone = gone + (tonumber(v) or 0) end
      redis.call('HDEL', tok, unpack(part))
      redis.call('HINCRBY', tok, '#sum', -gone)
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', edge)
    local used = 0
    if redis.call('ZCARD', key) == 0 then
      redis.call('DEL', tok)
    else
      used = tonumber(redis.call('HGET', tok, '#sum')) or 0
      reset = tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) + window - now
    end
    remaining = limit - used
    if want > limit then status = -1
    elseif used + want > limit then
      status, retry = 0, window
      local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local left = used
      for j = 1, #entries, 2 do
        left = left - (tonumber(redis.call('HGET', tok, entries[j])) or 0)
        if left + want <= limit then
          retry = tonumber(entries[j + 1]) + window - now
          break
        end
      end
    end
  else
    k = k + 1
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count = redis.call('ZCARD', key)
    remaining = limit - count
    if limit <= 0 then status = -1 elseif count >= limit then status, retry = 0, 1000000 end
  end
  if status ~= 1 then out[1] = 0 end
  plan[i] = {kind, key, tok, window}
  out[#out + 1] = status
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end
if out[1] == 1 then
  for i = 1, n do
    local kind, key, tok, window = plan[i][1], plan[i][2], plan[i][3], plan[i][4]
    local member = lease .. ':' .. i
    if kind == 'r' then
      redis.call('ZADD', key, now, member)
      pexpire(key, window)
    elseif kind == 't' then
      if want > 0 then add_tokens(key, tok, now, member, want, window) end
    else
      redis.call('ZADD', key, now + ttl, member)
      pexpire(key, ttl)
    end
  end
end
return out
"""

# KEYS: per token or parallel check its key(s). ARGV: lease, tokens, n, then per check its index
# at admission, kind (t|p), window_us. Frees the parallel leases, replaces each token hold by the
# real total; a second settle finds no hold and the total already there.
_SETTLE = _COMMON + """
local now = now_us()
local lease, actual, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local k = 1
for i = 1, n do
  local member = lease .. ':' .. ARGV[1 + 3 * i]
  local kind, window = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i])
  if kind == 'p' then
    redis.call('ZREM', KEYS[k], member)
    k = k + 1
  else
    local key, tok = KEYS[k], KEYS[k + 1]
    k = k + 2
    local held = tonumber(redis.call('HGET', tok, member))
    if held then
      redis.call('ZREM', key, member)
      redis.call('HDEL', tok, member)
      redis.call('HINCRBY', tok, '#sum', -held)
    end
    local done = member .. ':s'
    if actual > 0 and not redis.call('ZSCORE', key, done) then add_tokens(key, tok, now, done, actual, window) end
  end
end
return 1
"""

# KEYS: the lease's tombstone, then as admit. ARGV: lease, tombstone ms, n, then per check its kind.
# Takes back whatever an admit of this lease counted; a later copy of it counts nothing.
_REVOKE = """
local lease, n = ARGV[1], tonumber(ARGV[3])
redis.call('SET', KEYS[1], 1, 'PX', ARGV[2])
local k = 2
for i = 1, n do
  local member, kind = lease .. ':' .. i, ARGV[3 + i]
  redis.call('ZREM', KEYS[k], member)
  if kind == 't' then
    local held = tonumber(redis.call('HGET', KEYS[k + 1], member))
    if held then
      redis.call('HDEL', KEYS[k + 1], member)
      redis.call('HINCRBY', KEYS[k + 1], '#sum', -held)
    end
    k = k + 2
  else
    k = k + 1
  end
end
return 1
"""

_KIND = {"requests": "r", "tokens": "t", "parallel": "p"}
_REVOKE_TRIES = 3


class RedisLimiter:
    """Limits in Redis, exact across replicas. ``url_or_client``: a ``redis://`` URL (a client
    with ``timeout`` socket timeouts is made, and closed by ``aclose``) or a ``redis.asyncio.Redis``
    (shared: left open)."""

    def __init__(self, url_or_client: str | Redis, prefix: str = "switchyard:", lease_ttl: float = 600.0,
                 timeout: float = 0.5) -> None:
        self._owned = isinstance(url_or_client, str)
        self._redis = open_redis(url_or_client, timeout) if isinstance(url_or_client, str) else url_or_client
        self._prefix = f"{prefix}rl:"
        self._lease_ttl_us = round(lease_ttl * 1_000_000)
        self._timeout = timeout
        self._admit = self._redis.register_script(_ADMIT)
        self._settle = self._redis.register_script(_SETTLE)
        self._revoke = self._redis.register_script(_REVOKE)
        self._revoking: set[asyncio.Task[None]] = set()

    async def admit(self, checks: Sequence[LimitCheck], lease: str, tokens: int) -> Admission:
        tokens = max(0, tokens)
        todo = unique(checks)
        if not todo:
            return Admission(lease, tuple(checks))
        keys = [f"{self._prefix}gone:{lease}"]
        args: list[str | int] = [lease, tokens, self._lease_ttl_us, len(todo)]
        for c in todo:
            keys += self._keys(c)
            args += [_KIND[c.kind], c.limit, _us(c.window)]
        try:
            out = await self._run(self._admit, keys, args)
        except BaseException:  # unreachable, or cancelled: it may have counted, now or later
            task = asyncio.get_running_loop().create_task(self._revoke_lease(lease, todo, keys))
            self._revoking.add(task)
            task.add_done_callback(self._revoking.discard)
            raise
        if int(out[0]) < 0:  # this lease was revoked: the request it belonged to was given up on
            raise unavailable()
        verdicts = []
        for i, c in enumerate(todo):
            status, remaining, reset_us, retry_us = (int(x) for x in out[1 + 4 * i: 5 + 4 * i])
            retry = None if status < 0 else 0.0 if status > 0 else retry_us / 1e6
            verdicts.append(Verdict(c, remaining, reset_us / 1e6, retry))
        return decide(lease, checks, verdicts, tokens)  # the script counted it iff every check fits

    async def settle(self, admission: Admission, tokens: int) -> None:
        """Never raises: a settle Redis cannot take is logged, and its leases expire after ``lease_ttl``."""
        try:
            await self.settle_or_raise(admission, tokens)
        except Exception as exc:  # the request is over all the same
            cause = exc.__cause__ if isinstance(exc, ServiceUnavailableError) and exc.__cause__ else exc
            log.warning("rate limits: could not settle a request (%s)", type(cause).__name__)

    async def settle_or_raise(self, admission: Admission, tokens: int, *, again: bool = False) -> None:
        """``settle``, raising the 503 ``limits_unavailable`` when Redis cannot take it. ``again``:
        run it even though the admission was settled before (a replay; the script is idempotent:
        a second settle finds no hold, and the total already there)."""
        if admission.settled and not again:
            return
        admission.settled = True
        keys: list[str] = []
        args: list[str | int] = [admission.lease, max(0, tokens), 0]
        for i, c in enumerate(unique(admission.checks), start=1):
            if c.kind != "requests":
                keys += self._keys(c)
                args += [i, _KIND[c.kind], _us(c.window)]
        if not keys:
            return
        args[2] = (len(args) - 3) // 3
        await self._run(self._settle, keys, args)

    async def aclose(self) -> None:
        for task in list(self._revoking):
            task.cancel()
        await asyncio.gather(*self._revoking, return_exceptions=True)
        if self._owned:
            await self._redis.aclose()

    async def _revoke_lease(self, lease: str, checks: Sequence[LimitCheck], keys: list[str]) -> None:
        args: list[str | int] = [lease, self._lease_ttl_us // 1000 + 1000, len(checks)]
        args += [_KIND[c.kind] for c in checks]
        for attempt in range(_REVOKE_TRIES):
            try:
                async with asyncio.timeout(max(1.0, 4 * self._timeout)):
                    await self._revoke(keys=keys, args=args)
                return
            except _UNREACHABLE as exc:
                if attempt == _REVOKE_TRIES - 1:
                    log.warning("rate limits: could not revoke an unanswered admit (%s); its parallel slots "
                                "are free again after lease_ttl", type(exc).__name__)
                else:
                    await asyncio.sleep(0.5)

    def _keys(self, c: LimitCheck) -> list[str]:
        p, w = self._prefix, f"{c.window:g}"
        if c.kind == "requests":
            return [f"{p}req:{w}:{c.scope}"]
        if c.kind == "tokens":
            return [f"{p}tok:{w}:{c.scope}", f"{p}tokn:{w}:{c.scope}"]
        return [f"{p}par:{c.scope}"]

    async def _run(self, script: Any, keys: list[str], args: list[str | int]) -> list[int]:
        try:
            async with asyncio.timeout(self._timeout):
                out: list[int] = await script(keys=keys, args=args)
        except _UNREACHABLE as exc:
            raise unavailable() from exc
        return out


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)
