"""The Redis engines with the real Redis behind a proxy that stops passing bytes (a hung Redis,
or a network that drops everything), and with a server that accepts connections and never
answers. A call waits at most the engine's timeout, the circuit falls back, and what ended a
request while Redis was away (a settle, a release) reaches Redis once it is back, counted once.

Each call is guarded by ``asyncio.wait_for`` with a generous bound: a hang fails the test; no
assertion is made on how long anything took.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import pytest
import redis

from switchyard.core.limits import BudgetCheck, LimitCheck
from switchyard.errors import RateLimitError
from switchyard.limits.budgets import Held, MemoryLedger, period_of
from switchyard.limits.budgets_redis import RedisLedger
from switchyard.limits.fallback import FallbackLedger, FallbackLimiter
from switchyard.limits.rates import MemoryLimiter
from switchyard.limits.rates_redis import RedisLimiter
from tests.fakes.tcp import PausableProxy, SilentServer

T = TypeVar("T")
REDIS_PORT = 6379
TIMEOUT = 0.2  # s: the engines' wait for Redis (the server's default is 50 ms; this machine is shared)
PROBE = 0.2  # s between probes while degraded
KEY = BudgetCheck("key:k1", 1.00, "monthly")


async def guard(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, 10.0)


@pytest.fixture
def proxy() -> Iterator[PausableProxy]:
    with PausableProxy(REDIS_PORT) as p:
        yield p


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"sy-test-{uuid.uuid4().hex}:"
    yield p
    with redis.Redis(port=REDIS_PORT) as r:
        for key in r.scan_iter(match=p + "*", count=1000):
            r.delete(key)


async def until(predicate: object, what: str) -> None:
    for _ in range(200):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_a_settle_redis_did_not_take_frees_the_parallel_slot_once_it_is_back(
        proxy: PausableProxy, prefix: str) -> None:
    checks = [LimitCheck("key:k", "parallel", 1, 0.0)]
    other = [LimitCheck("key:other", "requests", 100, 60.0)]
    slots = f"{prefix}rl:par:key:k"

    async def main() -> None:
        lim = FallbackLimiter(RedisLimiter(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, timeout=TIMEOUT),
                              MemoryLimiter(), probe_interval=PROBE)
        try:
            a = await guard(lim.admit(checks, "a", 0))  # on Redis: its slot is taken there
            proxy.pause()
            await guard(lim.settle(a, 0))  # no answer: the request ends all the same
            assert lim.degraded
            with redis.Redis(port=REDIS_PORT) as r:
                assert r.zcard(slots) == 1  # still taken in Redis
            b = await guard(lim.admit(checks, "b", 0))  # on this process' own slots meanwhile
            await guard(lim.settle(b, 0))
            proxy.resume()
            await asyncio.sleep(PROBE * 2)
            await guard(lim.admit(other, "probe", 0))  # a probe finds Redis back
            assert not lim.degraded
            with redis.Redis(port=REDIS_PORT) as r:
                await until(lambda: r.zcard(slots) == 0, "the late settle freed the slot")
            c = await guard(lim.admit(checks, "c", 0))  # on Redis, the slot free again
            with pytest.raises(RateLimitError):
                await guard(lim.admit(checks, "d", 0))  # and the limit is Redis' again
            await guard(lim.settle(c, 0))
        finally:
            await lim.aclose()

    asyncio.run(main())


def _budget_counters(prefix: str) -> tuple[int, dict[bytes, bytes]]:
    period = period_of("monthly", datetime.now(UTC)).id
    base = f"{prefix}budget:{KEY.scope}:{period}:"
    with redis.Redis(port=REDIS_PORT) as r:
        return int(r.hget(base + "b", "spent") or 0), r.hgetall(base + "h")  # type: ignore[arg-type]


def test_a_settle_redis_did_not_take_is_spent_there_once_it_is_back(proxy: PausableProxy, prefix: str) -> None:
    async def main() -> None:
        primary = RedisLedger(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, socket_timeout=TIMEOUT)
        ledger = FallbackLedger(primary, MemoryLedger(), retry_interval=PROBE, timeout=2.0)
        try:
            held = await guard(ledger.reserve([KEY], "a", 0.5))
            assert isinstance(held, Held) and held.owner is primary
            released = await guard(ledger.reserve([KEY], "r", 0.1))
            proxy.pause()
            await guard(ledger.settle(held, 0.25))  # no answer: counted here meanwhile
            await guard(ledger.release(released))
            assert ledger.degraded and held.done and released.done
            assert _budget_counters(prefix) == (0, {b"a": b"500000", b"r": b"100000"})  # still held there
            proxy.resume()
            await asyncio.sleep(PROBE * 2)
            assert await guard(ledger.available([KEY])) < 1.0  # the probe: Redis answers
            assert not ledger.degraded
            await until(lambda: _budget_counters(prefix) == (250_000, {}), "the late settle and release")
            assert await guard(ledger.available([KEY])) == 0.75

            # once only: the same settle replayed again, or its first try reaching Redis only now
            await guard(primary.settle_late(held, 0.25))
            await guard(primary.settle(dataclasses.replace(held, done=False), 0.25))
            assert _budget_counters(prefix) == (250_000, {})
        finally:
            await ledger.aclose()

    asyncio.run(main())


def test_a_settle_whose_first_try_lands_before_its_replay_counts_once(proxy: PausableProxy, prefix: str) -> None:
    async def main() -> None:
        primary = RedisLedger(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, socket_timeout=TIMEOUT)
        try:
            held = await guard(primary.reserve([KEY], "a", 0.5))
            await guard(primary.settle(held, 0.25))  # it did reach Redis
            await guard(primary.settle_late(held, 0.25))  # and is replayed all the same
            assert _budget_counters(prefix) == (250_000, {})
        finally:
            await primary.aclose()

    asyncio.run(main())


def test_a_redis_that_never_answers_gives_per_process_limits_and_budgets() -> None:
    checks = [LimitCheck("key:k", "requests", 2, 60.0)]

    async def main() -> None:
        with SilentServer() as silent:
            url = f"redis://127.0.0.1:{silent.port}/0"
            lim = FallbackLimiter(RedisLimiter(url, timeout=0.05), MemoryLimiter(), probe_interval=60)
            ledger = FallbackLedger(RedisLedger(url, socket_timeout=0.05), MemoryLedger(), retry_interval=60)
            try:
                first = await guard(lim.admit(checks, "a", 0))
                assert lim.degraded and silent.accepted >= 1  # Redis was asked, and never answered
                await guard(lim.admit(checks, "b", 0))
                with pytest.raises(RateLimitError):  # per-process, and exact
                    await guard(lim.admit(checks, "c", 0))
                await guard(lim.settle(first, 0))
                held = await guard(ledger.reserve([KEY], "r", 0.25))
                assert ledger.degraded and isinstance(held, Held) and held.owner is not None
                assert await guard(ledger.available([KEY])) == 0.75
                await guard(ledger.settle(held, 0.25))
            finally:
                await lim.aclose()
                await ledger.aclose()

    asyncio.run(main())


def test_many_requests_at_once_on_a_redis_that_never_answers_all_complete() -> None:
    """No pool to wait for: each admit that finds the circuit closed opens its own connection
    (or gets the fallback), and every one returns."""
    checks = [LimitCheck("key:k", "requests", 1000, 60.0), LimitCheck("key:k", "parallel", 1000, 0.0)]

    async def main() -> None:
        with SilentServer() as silent:
            url = f"redis://127.0.0.1:{silent.port}/0"
            lim = FallbackLimiter(RedisLimiter(url, timeout=0.05), MemoryLimiter(), probe_interval=60)
            ledger = FallbackLedger(RedisLedger(url, socket_timeout=0.05), MemoryLedger(), retry_interval=60,
                                    timeout=None)
            try:
                admitted = await guard(asyncio.gather(*(lim.admit(checks, f"l{i}", 0) for i in range(50))))
                held = await guard(asyncio.gather(*(ledger.reserve([KEY], f"r{i}", 0.01) for i in range(50))))
                assert len(admitted) == len(held) == 50 and lim.degraded and ledger.degraded
                await guard(asyncio.gather(*(lim.settle(a, 0) for a in admitted),
                                           *(ledger.settle(h, 0.01) for h in held)))
                assert await guard(ledger.available([KEY])) == pytest.approx(0.5)
            finally:
                await lim.aclose()
                await ledger.aclose()

    asyncio.run(main())
