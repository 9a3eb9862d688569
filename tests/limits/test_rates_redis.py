"""Rate limits in Redis (the shared 127.0.0.1:6379, a unique key prefix per test), and the
fallback to per-process limits when Redis dies (a redis-server of our own, killed and restarted)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from redis.asyncio import Redis

from switchyard.core.limits import Admission, LimitCheck, LimitState, RateLimits
from switchyard.errors import RateLimitError, ServiceUnavailableError
from switchyard.limits.fallback import FallbackLimiter
from switchyard.limits.rates import MemoryLimiter
from switchyard.limits.rates_redis import RedisLimiter
from tests.harness import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"sy-test-{uuid.uuid4().hex}:"
    yield p
    with redis.Redis(host="127.0.0.1", port=6379) as r:
        for key in r.scan_iter(match=f"{p}*"):
            r.delete(key)


def keys_of(prefix: str, port: int = 6379) -> dict[str, int]:
    """The limiter's keys and their TTLs (ms)."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as r:
        return {k.decode(): int(r.pttl(k)) for k in r.scan_iter(match=f"{prefix}*")}


def run(prefix: str, scenario: Callable[[RedisLimiter], Awaitable[T]], **kwargs: float) -> T:
    async def main() -> T:
        lim = RedisLimiter(REDIS_URL, prefix=prefix, **kwargs)
        try:
            return await scenario(lim)
        finally:
            await lim.aclose()

    return asyncio.run(main())


async def refused(lim: RedisLimiter | FallbackLimiter, checks: Sequence[LimitCheck], lease: str = "x",
                  tokens: int = 0) -> RateLimitError:
    with pytest.raises(RateLimitError) as info:
        await lim.admit(checks, lease, tokens)
    return info.value


RPM5 = [LimitCheck("key:k", "requests", 5, 60.0)]


def test_exactly_the_limit_then_429_with_retry_after_and_headers(prefix: str) -> None:
    async def scenario(lim: RedisLimiter) -> None:
        for i in range(5):
            got = await lim.admit(RPM5, f"l{i}", 0)
            assert got.requests is not None and got.requests.remaining == 4 - i
            assert 59.0 < got.requests.reset_s <= 60.0
        err = await refused(lim, RPM5)
        assert err.message == "Rate limit reached for key k: 5 requests per minute. Try again in 60s."
        assert err.retry_after == 60.0
        assert err.headers["x-ratelimit-limit-requests"] == "5"
        assert err.headers["x-ratelimit-remaining-requests"] == "0"
        assert re.fullmatch(r"59\.\d{1,3}s|1m0s", err.headers["x-ratelimit-reset-requests"])

    run(prefix, scenario)
    ttls = keys_of(prefix)
    assert list(ttls) == [f"{prefix}rl:req:60:key:k"]
    assert 59_000 < ttls[f"{prefix}rl:req:60:key:k"] <= 61_000  # an idle scope expires


def test_rolling_window_on_redis_time(prefix: str) -> None:
    checks = [LimitCheck("key:k", "requests", 3, 2.0)]

    async def scenario(lim: RedisLimiter) -> None:
        t0 = time.monotonic()
        await lim.admit(checks, "a", 0)
        await lim.admit(checks, "b", 0)
        await asyncio.sleep(1.0)
        await lim.admit(checks, "c", 0)
        err = await refused(lim, checks)
        assert err.retry_after == 1.0
        assert re.fullmatch(r"\d{1,3}ms|1s", err.headers["x-ratelimit-reset-requests"])
        await asyncio.sleep(t0 + 2.3 - time.monotonic())
        await lim.admit(checks, "d", 0)  # a and b have left the window; c has not
        await lim.admit(checks, "e", 0)
        await refused(lim, checks)
        await asyncio.sleep(t0 + 3.3 - time.monotonic())
        await lim.admit(checks, "f", 0)

    run(prefix, scenario)


def test_requests_per_hour_and_per_day(prefix: str) -> None:
    checks = RateLimits(rph=2, rpd=3).checks("team:t")

    async def scenario(lim: RedisLimiter) -> None:
        await lim.admit(checks, "a", 0)
        got = await lim.admit(checks, "b", 0)
        assert got.requests is not None and got.requests.limit == 2 and got.requests.remaining == 0
        err = await refused(lim, checks)
        assert err.message == "Rate limit reached for team t: 2 requests per hour. Try again in 3600s."
        assert err.retry_after == 3600.0
        assert re.fullmatch(r"59m59\.\d{1,3}s|1h0m0s", err.headers["x-ratelimit-reset-requests"])

    run(prefix, scenario)
    ttls = keys_of(prefix)
    assert 3_599_000 < ttls[f"{prefix}rl:req:3600:team:t"] <= 3_601_000
    assert 86_399_000 < ttls[f"{prefix}rl:req:86400:team:t"] <= 86_401_000


def test_refusal_by_one_check_counts_nothing_in_the_others(prefix: str) -> None:
    key = [LimitCheck("key:k", "requests", 10, 60.0), LimitCheck("key:k", "parallel", 5, 0.0),
           LimitCheck("key:k", "tokens", 1000, 60.0)]
    team = [LimitCheck("team:t", "requests", 2, 60.0)]

    async def scenario(lim: RedisLimiter) -> None:
        await lim.admit(key + team, "a", 100)
        await lim.admit(key + team, "b", 100)
        for i in range(3):
            err = await refused(lim, key + team, f"c{i}", 100)
            assert err.message.startswith("Rate limit reached for team t: 2 requests per minute.")
            assert err.headers["x-ratelimit-remaining-requests"] == "0"
            assert err.headers["x-ratelimit-remaining-tokens"] == "800"
        got = await lim.admit(key, "d", 100)
        assert got.requests is not None and got.requests.remaining == 7
        assert got.tokens == LimitState(1000, 700, 60.0)
        await lim.admit(key, "e", 0)
        await lim.admit(key, "f", 0)  # a, b, d, e, f: five parallel slots, no more
        err = await refused(lim, key, "g")
        assert err.message == "Rate limit reached for key k: 5 parallel requests. Try again in 1s."

    run(prefix, scenario)


def test_parallel_slots_shared_by_replicas_and_settled_once(prefix: str) -> None:
    checks = RateLimits(max_parallel=2).checks("key:k")

    async def main() -> None:
        one = RedisLimiter(REDIS_URL, prefix=prefix)
        shared = Redis(host="127.0.0.1", port=6379, decode_responses=True)  # a client it is given stays open
        two = RedisLimiter(shared, prefix=prefix)
        try:
            a = await one.admit(checks, "a", 0)
            await two.admit(checks, "b", 0)
            err = await refused(two, checks, "c")
            assert err.retry_after == 1.0 and err.headers == {}
            await two.settle(a, 0)  # settled by another replica than the one that admitted it
            assert a.settled
            await one.admit(checks, "c", 0)
            await one.settle(a, 0)
            await one.settle(Admission("a", tuple(checks)), 0)  # and again, from a copy
            await refused(one, checks, "d")
        finally:
            await one.aclose()
            await two.aclose()
            await shared.aclose()

    asyncio.run(main())


def test_parallel_lease_of_a_crashed_replica_expires(prefix: str) -> None:
    checks = RateLimits(max_parallel=1).checks("key:k")

    async def scenario(lim: RedisLimiter) -> None:
        await lim.admit(checks, "crashed", 0)  # never settled
        await refused(lim, checks, "b")
        await asyncio.sleep(0.35)
        await lim.admit(checks, "b", 0)

    run(prefix, scenario, lease_ttl=0.3)
    assert 0 < keys_of(prefix)[f"{prefix}rl:par:key:k"] <= 1_300


def test_token_window_holds_the_prompt_then_counts_the_real_total(prefix: str) -> None:
    tpm = RateLimits(tpm=1000).checks("key:k")

    async def scenario(lim: RedisLimiter) -> None:
        a = await lim.admit(tpm, "a", 600)
        assert a.tokens == LimitState(1000, 400, 60.0) and a.requests is None
        err = await refused(lim, tpm, "b", 500)
        assert err.message.startswith("Rate limit reached for key k: 1000 tokens per minute. Try again in")
        assert err.headers["x-ratelimit-remaining-tokens"] == "400"
        await lim.settle(a, 200)
        await lim.settle(Admission("a", tuple(tpm)), 200)  # idempotent in Redis too
        b = await lim.admit(tpm, "b", 500)
        assert b.tokens == LimitState(1000, 300, 60.0)
        await lim.settle(b, 900)  # its completion overshoots what was left: counted anyway
        err = await refused(lim, tpm, "c", 1)
        assert err.headers["x-ratelimit-remaining-tokens"] == "0"
        too_big = await refused(lim, tpm, "c", 1001)
        assert too_big.retry_after is None and too_big.headers["x-should-retry"] == "false"
        assert too_big.message == (
            "Request too large for key k: it needs 1001 tokens, the limit is 1000 tokens per minute.")

    run(prefix, scenario)
    ttls = keys_of(prefix)
    assert set(ttls) == {f"{prefix}rl:tok:60:key:k", f"{prefix}rl:tokn:60:key:k"}
    assert all(59_000 < ttl <= 61_000 for ttl in ttls.values())


def test_tokens_leave_the_window(prefix: str) -> None:
    checks = [LimitCheck("key:k", "tokens", 100, 1.0)]

    async def scenario(lim: RedisLimiter) -> None:
        for i in range(4):  # settled totals and a hold
            await lim.settle(await lim.admit(checks, f"s{i}", 10), 20)
        await lim.admit(checks, "held", 15)
        err = await refused(lim, checks, "x", 10)
        assert err.headers["x-ratelimit-remaining-tokens"] == "5"
        await asyncio.sleep(1.05)
        got = await lim.admit(checks, "y", 100)  # everything left: the running sum is back to 0
        assert got.tokens == LimitState(100, 0, 1.0)

    run(prefix, scenario)


def test_two_replicas_two_hundred_concurrent_admits_exactly_sixty(prefix: str) -> None:
    checks = RateLimits(rpm=60).checks("key:k")

    async def main() -> list[Admission | BaseException]:
        one = RedisLimiter(REDIS_URL, prefix=prefix)
        two = RedisLimiter(REDIS_URL, prefix=prefix)
        try:
            return await asyncio.gather(
                *((one if i % 2 else two).admit(checks, f"l{i}", 0) for i in range(200)), return_exceptions=True)
        finally:
            await one.aclose()
            await two.aclose()

    results = asyncio.run(main())
    assert sum(isinstance(r, Admission) for r in results) == 60
    assert sum(isinstance(r, RateLimitError) for r in results) == 140
    with redis.Redis(host="127.0.0.1", port=6379) as r:
        assert r.zcard(f"{prefix}rl:req:60:key:k") == 60


def test_an_admit_cancelled_in_flight_is_revoked(prefix: str) -> None:
    checks = [LimitCheck("key:k", "parallel", 1, 0.0), LimitCheck("key:k", "requests", 2, 60.0),
              LimitCheck("key:k", "tokens", 100, 60.0)]

    async def scenario(lim: RedisLimiter) -> None:
        for _ in range(2):
            task = asyncio.create_task(lim.admit(checks, "gone", 60))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.3)  # the revoke runs in the background
        # whether or not it ran in Redis, it holds no slot, no request and no tokens
        got = await lim.admit(checks, "next", 100)
        assert got.requests is not None and got.requests.remaining == 1
        assert got.tokens == LimitState(100, 0, 60.0)
        with pytest.raises(ServiceUnavailableError):  # a late copy of the revoked admit counts nothing
            await lim.admit(checks, "gone", 0)
        await lim.settle(got, 0)
        await lim.admit(checks, "last", 0)

    run(prefix, scenario, lease_ttl=30.0)
    assert 30_000 < keys_of(prefix)[f"{prefix}rl:gone:gone"] <= 31_000


def test_unreachable_redis_is_a_prompt_503(prefix: str) -> None:
    async def main() -> None:
        lim = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", prefix=prefix)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailableError) as info:
                await lim.admit(RPM5, "a", 0)
            assert time.monotonic() - started < 1.0
            assert info.value.status_code == 503 and info.value.code == "limits_unavailable"
            await lim.settle(Admission("a", tuple(RateLimits(max_parallel=1).checks("key:k"))), 0)  # no raise
        finally:
            await lim.aclose()

    asyncio.run(main())


# -- Redis dies and comes back ---------------------------------------------------------------------
class RedisServer:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5) as r:
                    r.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    if server.proc is not None:
        server.proc.send_signal(signal.SIGCONT)
        server.kill()


async def timed(call: Awaitable[T]) -> T:
    started = time.monotonic()
    try:
        return await call
    finally:
        assert time.monotonic() - started < 1.0


def test_fallback_when_redis_is_killed_and_recovery_when_it_is_back(own_redis: RedisServer) -> None:
    prefix = f"sy-test-{uuid.uuid4().hex}:"
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    checks = [LimitCheck("key:k", "requests", 3, 60.0), LimitCheck("key:k", "parallel", 10, 0.0)]

    async def main() -> None:
        open_ = FallbackLimiter(RedisLimiter(url, prefix=prefix), MemoryLimiter())
        closed = FallbackLimiter(RedisLimiter(url, prefix=prefix), MemoryLimiter(), fail_closed=True, retry_after=2.0)
        try:
            a = await open_.admit(checks, "a", 0)
            await closed.admit(checks, "b", 0)
            assert not open_.degraded and not closed.degraded
            assert f"{prefix}rl:req:60:key:k" in keys_of(prefix, own_redis.port)

            own_redis.kill()
            local = [await timed(open_.admit(checks, f"m{i}", 0)) for i in range(3)]  # fresh per-process counters
            assert open_.degraded
            err = await timed(refused(open_, checks, "m3"))
            assert err.message.startswith("Rate limit reached for key k: 3 requests per minute.")
            for _ in range(2):
                with pytest.raises(ServiceUnavailableError) as info:
                    await timed(closed.admit(checks, "c", 0))
                assert info.value.code == "limits_unavailable" and info.value.retry_after == 2.0
            assert closed.degraded
            await timed(open_.settle(local[0], 0))  # to the engine that admitted it
            await timed(open_.settle(a, 0))  # Redis is away: the lease will expire there

            own_redis.start()  # same port, empty: the scripts must be loaded again
            await asyncio.sleep(1.1)  # the next probe is due
            got = await timed(open_.admit(checks, "r1", 0))
            assert not open_.degraded
            assert got.requests is not None and got.requests.remaining == 2  # counted in the new Redis
            await timed(closed.admit(checks, "r2", 0))
            assert not closed.degraded
            await open_.settle(got, 0)
        finally:
            await open_.aclose()
            await closed.aclose()

    asyncio.run(main())


def test_hung_redis_never_hangs_a_request(own_redis: RedisServer) -> None:
    prefix = f"sy-test-{uuid.uuid4().hex}:"
    url = f"redis://127.0.0.1:{own_redis.port}/0"

    async def main() -> None:
        lim = FallbackLimiter(RedisLimiter(url, prefix=prefix), MemoryLimiter())
        try:
            await lim.admit(RPM5, "a", 0)
            own_redis.signal(signal.SIGSTOP)  # accepts nothing, answers nothing
            for i in range(3):
                await timed(lim.admit(RPM5, f"b{i}", 0))
            assert lim.degraded
            own_redis.signal(signal.SIGCONT)
            await asyncio.sleep(1.1)
            got = await timed(lim.admit(RPM5, "c", 0))
            assert not lim.degraded
            # a and c: b0's admit, which timed out but was queued in Redis, is revoked
            assert got.requests is not None and got.requests.remaining == 3
        finally:
            await lim.aclose()

    asyncio.run(main())
