"""Budget ledgers: exact arithmetic, all-or-nothing holds, periods, seeding from the database,
a hard ceiling under concurrency (in memory, in Redis across two replicas and two OS processes,
and on the limits host across two workers' connections), expiry of a crashed replica's holds,
and falling back when Redis dies."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from switchyard.core.limits import BudgetCheck, BudgetLedger, Reservation
from switchyard.errors import InsufficientQuotaError, ServiceUnavailableError
from switchyard.limits.budgets import Held, MemoryLedger, period_of, utcnow
from switchyard.limits.budgets_redis import RedisLedger
from switchyard.limits.fallback import FallbackLedger
from switchyard.limits.host import LimitsHost
from switchyard.limits.host_client import HostLedger, HostLink
from tests.harness import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
KEY = BudgetCheck("key:k1", 1.00, "monthly")
TEAM = BudgetCheck("team:t1", 5.00, "monthly")


class Engine:
    """Opens ledgers of one kind; Redis ones share a fresh key prefix (each with its own client,
    as separate replicas would) and the prefix is cleaned up afterwards; host ones are workers'
    connections to one limits host (on a socket in a fresh directory; its ledger keeps the
    first open's clock)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"sy-test-{uuid.uuid4().hex}:"
        self.dir = Path(tempfile.mkdtemp(prefix="sy-host-"))
        self.host: LimitsHost | None = None

    @contextlib.asynccontextmanager
    async def open(self, **kwargs: Any) -> AsyncIterator[BudgetLedger]:
        ledger: BudgetLedger
        if self.kind == "memory":
            kwargs.pop("hold_ttl", None)
            ledger = MemoryLedger(**kwargs)
        elif self.kind == "host":
            kwargs.pop("hold_ttl", None)
            started = self.host is None
            if self.host is None:
                self.host = LimitsHost(self.dir / "limits.sock", budget_clock=kwargs.pop("clock", utcnow))
                await self.host.start()
            kwargs.pop("clock", None)
            ledger = HostLedger(HostLink(self.dir / "limits.sock"), **kwargs)
        else:
            ledger = RedisLedger(REDIS_URL, prefix=self.prefix, **kwargs)
        try:
            yield ledger
        finally:
            await ledger.aclose()
            if self.kind == "host" and started and self.host is not None:
                await self.host.aclose()
                self.host = None

    def counters(self, scope: str, period: str) -> dict[str, int]:
        with redis.Redis.from_url(REDIS_URL) as r:
            raw = r.hgetall(f"{self.prefix}budget:{scope}:{period}:b")
        return {k.decode(): int(v) for k, v in raw.items()}

    def cleanup(self) -> None:
        with redis.Redis.from_url(REDIS_URL) as r:
            keys = list(r.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                r.delete(*keys)


@pytest.fixture(params=["memory", "redis", "host"])
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    eng = Engine(request.param)
    yield eng
    if eng.kind == "redis":
        eng.cleanup()
    shutil.rmtree(eng.dir, ignore_errors=True)


@pytest.fixture
def redis_engine() -> Iterator[Engine]:
    eng = Engine("redis")
    yield eng
    eng.cleanup()


def source(values: dict[str, float], calls: list[tuple[str, datetime | None]] | None = None,
           delay: float = 0.0) -> Callable[[str, datetime | None], Any]:
    """A stand-in for the usage rollups: what each scope has spent already."""

    async def spent(scope: str, start: datetime | None) -> float:
        if calls is not None:
            calls.append((scope, start))
        if delay:
            await asyncio.sleep(delay)
        return values.get(scope, 0.0)

    return spent


async def attempt(ledger: BudgetLedger, checks: list[BudgetCheck], amount: float) -> Reservation | None:
    try:
        return await ledger.reserve(checks, uuid.uuid4().hex, amount)
    except InsufficientQuotaError:
        return None


# -- arithmetic --------------------------------------------------------------------------------


def test_reserve_settle_release_are_exact_to_the_micro_dollar(engine: Engine) -> None:
    async def main() -> None:
        async with engine.open() as ledger:
            a = await ledger.reserve([KEY], "a", 0.1)
            b = await ledger.reserve([KEY], "b", 0.2)
            c = await ledger.reserve([KEY], "c", 0.7)  # 0.1 + 0.2 + 0.7 > 1.0 in floats; not in micro-dollars
            assert (a.remaining_usd, b.remaining_usd, c.remaining_usd) == ({"key:k1": 0.9}, {"key:k1": 0.7},
                                                                           {"key:k1": 0.0})
            assert await ledger.available([KEY]) == 0.0
            with pytest.raises(InsufficientQuotaError):
                await ledger.reserve([KEY], "d", 0.000001)
            await ledger.settle(a, 0.05)  # below its hold: 0.05 comes back
            assert await ledger.available([KEY]) == 0.05
            await ledger.settle(b, 0.25)  # above its hold: spent is truth
            assert await ledger.available([KEY]) == 0.0
            await ledger.release(c)
            assert await ledger.available([KEY]) == 0.7
            assert (a.done, b.done, c.done) == (True, True, True)
            if engine.kind == "redis":
                assert engine.counters("key:k1", period_of("monthly", datetime.now(UTC)).id) == {
                    "spent": 300_000, "reserved": 0}

    asyncio.run(main())


def test_reservation_is_all_or_nothing_across_key_and_team(engine: Engine) -> None:
    team = BudgetCheck("team:t1", 0.50, "daily")

    async def main() -> None:
        async with engine.open(spent_source=source({"team:t1": 0.45})) as ledger:
            with pytest.raises(InsufficientQuotaError) as err:
                await ledger.reserve([KEY, team], "x", 0.10)
            assert err.value.message == "Budget exhausted for team t1: $0.50 per day, $0.45 spent or reserved."
            assert await ledger.available([KEY]) == 1.0  # nothing was held on the key
            assert await ledger.available([KEY, team]) == 0.05
            held = await ledger.reserve([KEY, team], "y", 0.05)
            assert held.remaining_usd == {"key:k1": 0.95, "team:t1": 0.0}
            with pytest.raises(InsufficientQuotaError, match=r"team t1: \$0.50 per day, \$0.50 spent or reserved"):
                await ledger.reserve([KEY, team], "z", 0.000001)
            await ledger.release(held)
            with pytest.raises(InsufficientQuotaError, match=r"key k1: \$1.00 per month, \$0.00 spent or reserved"):
                await ledger.reserve([KEY], "w", 1.01)
            assert await ledger.available([KEY, team]) == 0.05

    asyncio.run(main())


def test_exhausted_budget_is_a_429_insufficient_quota_not_to_be_retried(engine: Engine) -> None:
    async def main() -> None:
        async with engine.open(spent_source=source({"key:key_abc": 4.98})) as ledger:
            check = BudgetCheck("key:key_abc", 5.00, "monthly")
            with pytest.raises(InsufficientQuotaError) as err:
                await ledger.reserve([check], "l", 0.05)
            exc = err.value
            assert exc.message == "Budget exhausted for key key_abc: $5.00 per month, $4.98 spent or reserved."
            assert exc.status_code == 429
            assert exc.headers == {"x-should-retry": "false"}
            assert exc.to_dict()["error"] == {"message": exc.message, "type": "insufficient_quota", "param": None,
                                              "code": "insufficient_quota"}
            total = BudgetCheck("key:key_abc", 5.00, "total")  # the total counter is seeded on its own
            with pytest.raises(InsufficientQuotaError, match=r"\$5.00 in total, \$4.98 spent or reserved"):
                await ledger.reserve([total], "l", 0.03)
            held = await ledger.reserve([check], "l", 0.02)
            assert held.remaining_usd == {"key:key_abc": 0.0}

    asyncio.run(main())


# -- periods -----------------------------------------------------------------------------------


def test_period_ids_and_bounds() -> None:
    day = period_of("daily", datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC))
    assert (day.id, day.start, day.end) == ("2026-11-23", datetime(2026, 11, 23, tzinfo=UTC),
                                            datetime(2026, 11, 24, tzinfo=UTC))
    month = period_of("monthly", datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    assert (month.id, month.start, month.end) == ("2026-12", datetime(2026, 12, 1, tzinfo=UTC),
                                                  datetime(2027, 1, 1, tzinfo=UTC))
    assert period_of("total", datetime(2026, 1, 1, tzinfo=UTC)).id == "total"
    # another offset is converted to UTC: 01:00 at +02:00 is still the previous UTC day
    from datetime import timezone
    assert period_of("daily", datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))).id == "2026-02-28"


def test_periods_roll_over_and_a_late_settle_counts_where_it_was_reserved(engine: Engine) -> None:
    now = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC)]
    calls: list[tuple[str, datetime | None]] = []
    daily, monthly, total = (BudgetCheck("key:d", 1.0, "daily"), BudgetCheck("key:m", 1.0, "monthly"),
                             BudgetCheck("key:t", 1.0, "total"))

    async def avail(ledger: BudgetLedger) -> tuple[float, float, float]:
        return (await ledger.available([daily]), await ledger.available([monthly]),
                await ledger.available([total]))

    async def main() -> None:
        async with engine.open(spent_source=source({}, calls), clock=lambda: now[0]) as ledger:
            for check in (daily, monthly, total):
                await ledger.settle(await ledger.reserve([check], f"a-{check.scope}", 0.4), 0.4)
            late = await ledger.reserve([daily, monthly, total], "late", 0.2)
            assert await avail(ledger) == (0.4, 0.4, 0.4)
            now[0] = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)  # a new day and a new month
            assert await avail(ledger) == (1.0, 1.0, 0.4)
            await ledger.settle(late, 0.2)  # reserved on Nov 30: counts on Nov 30
            assert await avail(ledger) == (1.0, 1.0, 0.4)
            now[0] = datetime(2026, 11, 30, 23, 59, 30, tzinfo=UTC)
            assert await avail(ledger) == (0.4, 0.4, 0.4)
            now[0] = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
            assert await avail(ledger) == (1.0, 1.0, 0.4)

    asyncio.run(main())
    assert Counter(calls) == {
        ("key:d", datetime(2026, 11, 30, tzinfo=UTC)): 1, ("key:d", datetime(2026, 12, 1, tzinfo=UTC)): 1,
        ("key:d", datetime(2026, 12, 2, tzinfo=UTC)): 1,
        ("key:m", datetime(2026, 11, 1, tzinfo=UTC)): 1, ("key:m", datetime(2026, 12, 1, tzinfo=UTC)): 1,
        ("key:t", None): 1,
    }


def test_one_scope_under_a_daily_and_a_monthly_budget_at_once(engine: Engine) -> None:
    """Two periods of one scope in one request: each counter stays (neither drops the other) and
    both bind. In memory this once looped for ever: seeding one counter pruned the other."""
    now = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC)]
    daily, monthly = BudgetCheck("key:both", 1.0, "daily"), BudgetCheck("key:both", 3.0, "monthly")

    async def main() -> None:
        async with engine.open(spent_source=source({}), clock=lambda: now[0]) as ledger:
            held = await asyncio.wait_for(ledger.reserve([daily, monthly], "a", 0.75), 5)
            await ledger.settle(held, 0.75)
            assert await asyncio.wait_for(ledger.available([daily, monthly]), 5) == 0.25  # the daily binds
            assert await attempt(ledger, [daily, monthly], 0.5) is None
            now[0] = datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC)  # both roll over
            assert await asyncio.wait_for(ledger.available([daily, monthly]), 5) == 1.0

    asyncio.run(main())


# -- seeding from the database -----------------------------------------------------------------


def test_seeding_happens_once_under_50_concurrent_first_uses(engine: Engine) -> None:
    calls: list[tuple[str, datetime | None]] = []

    async def main() -> None:
        async with engine.open(spent_source=source({"key:k1": 0.30, "team:t1": 4.0}, calls, delay=0.05)) as ledger:
            held = await asyncio.gather(*(ledger.reserve([KEY, TEAM], f"l{i}", 0.01) for i in range(50)))
            assert len(held) == 50
            assert await ledger.available([KEY]) == 0.2
            assert await ledger.available([KEY, TEAM]) == 0.2
            assert await ledger.available([TEAM]) == 0.5

    asyncio.run(main())
    month = period_of("monthly", datetime.now(UTC)).start
    assert Counter(calls) == {("key:k1", month): 1, ("team:t1", month): 1}


def test_two_redis_replicas_seeding_at_once_agree(redis_engine: Engine) -> None:
    """Their database reads differ (one ran later): the first seed wins, and both count from it."""
    calls_a: list[tuple[str, datetime | None]] = []
    calls_b: list[tuple[str, datetime | None]] = []

    async def main() -> None:
        async with (redis_engine.open(spent_source=source({"key:k1": 0.30}, calls_a, delay=0.02)) as a,
                    redis_engine.open(spent_source=source({"key:k1": 0.40}, calls_b, delay=0.02)) as b):
            await asyncio.gather(*(ledger.reserve([KEY], uuid.uuid4().hex, 0.01)
                                   for _ in range(25) for ledger in (a, b)))
            left_a, left_b = await a.available([KEY]), await b.available([KEY])
            assert left_a == left_b
            assert left_a in (0.2, 0.1)

    asyncio.run(main())
    assert 1 <= len(calls_a) + len(calls_b) <= 2 and len(calls_a) <= 1 and len(calls_b) <= 1


# -- a hard ceiling under concurrency ----------------------------------------------------------


def test_budget_is_a_hard_ceiling_under_50_concurrent_requests(engine: Engine) -> None:
    """$1.00, 50 concurrent $0.05 holds (over two Redis replicas, or two workers on the limits
    host): exactly 20 fit. Money freed by settling below the hold, or by releasing, can be
    reserved again, never past $1.00."""
    checks = [KEY, TEAM]

    async def main() -> None:
        async with engine.open() as one, engine.open() as two:
            a, b = (one, two) if engine.kind in ("redis", "host") else (one, one)
            results = await asyncio.gather(*(attempt((a, b)[i % 2], checks, 0.05) for i in range(50)))
            held = [r for r in results if r is not None]
            assert len(held) == 20
            assert await a.available(checks) == 0.0
            settled = 0.0
            for r in held[:10]:  # cost less than held: $0.02 each comes back
                await b.settle(r, 0.03)
                settled += 0.03
            for r in held[10:15]:  # failed: $0.05 each comes back
                await a.release(r)
            await a.available(checks)  # (the host handles a's frames in order: its releases came first)
            assert await b.available(checks) == 0.45
            results = await asyncio.gather(*(attempt((a, b)[i % 2], checks, 0.05) for i in range(30)))
            again = [r for r in results if r is not None]
            assert len(again) == 9
            for r in held[15:] + again:
                await a.settle(r, 0.05)
                settled += 0.05
            assert round(settled, 6) == 1.0
            assert await a.available(checks) == 0.0
            assert await b.available([TEAM]) == 4.0
            assert await attempt(b, checks, 0.000001) is None

    asyncio.run(main())
    if engine.kind == "redis":
        period = period_of("monthly", datetime.now(UTC)).id
        assert engine.counters("key:k1", period) == {"spent": 1_000_000, "reserved": 0}
        assert engine.counters("team:t1", period) == {"spent": 1_000_000, "reserved": 0}


_CHILD = textwrap.dedent("""
    import asyncio, sys, time, uuid
    import redis
    from switchyard.core.limits import BudgetCheck
    from switchyard.errors import InsufficientQuotaError
    from switchyard.limits.budgets_redis import RedisLedger

    url, prefix = sys.argv[1], sys.argv[2]
    checks = [BudgetCheck("key:k1", 1.00, "monthly"), BudgetCheck("team:t1", 5.00, "monthly")]

    async def one(ledger):
        try:
            held = await ledger.reserve(checks, uuid.uuid4().hex, 0.05)
        except InsufficientQuotaError:
            return 0
        await asyncio.sleep(0.01)
        await ledger.settle(held, 0.05)
        return 1

    async def main():
        ledger = RedisLedger(url, prefix=prefix)
        try:
            await ledger.available(checks)  # connected and warm
            with redis.Redis.from_url(url) as r:
                r.incr(prefix + "ready")
                while not r.exists(prefix + "go"):
                    time.sleep(0.002)
            print(sum(await asyncio.gather(*(one(ledger) for _ in range(25)))))
        finally:
            await ledger.aclose()

    asyncio.run(main())
""")


def test_budget_is_never_exceeded_by_two_processes(redis_engine: Engine) -> None:
    prefix = redis_engine.prefix
    with (subprocess.Popen([sys.executable, "-c", _CHILD, REDIS_URL, prefix], stdout=subprocess.PIPE) as p1,
          subprocess.Popen([sys.executable, "-c", _CHILD, REDIS_URL, prefix], stdout=subprocess.PIPE) as p2,
          redis.Redis.from_url(REDIS_URL) as r):
        deadline = time.monotonic() + 60
        while int(r.get(prefix + "ready") or 0) < 2:
            assert time.monotonic() < deadline and p1.poll() is None and p2.poll() is None
            time.sleep(0.01)
        r.set(prefix + "go", 1)
        out1, _ = p1.communicate(timeout=60)
        out2, _ = p2.communicate(timeout=60)
    assert (p1.returncode, p2.returncode) == (0, 0)
    assert int(out1) + int(out2) == 20
    period = period_of("monthly", datetime.now(UTC)).id
    assert redis_engine.counters("key:k1", period) == {"spent": 1_000_000, "reserved": 0}


# -- idempotency, crashed replicas, expiry -----------------------------------------------------


def test_settle_and_release_are_idempotent(engine: Engine) -> None:
    async def main() -> None:
        async with engine.open() as ledger:
            a = await ledger.reserve([KEY], "a", 0.5)
            await ledger.settle(a, 0.3)
            await ledger.settle(a, 0.3)
            await ledger.release(a)
            assert await ledger.available([KEY]) == 0.7
            b = await ledger.reserve([KEY], "b", 0.2)
            await ledger.release(b)
            await ledger.release(b)
            await ledger.settle(b, 0.2)
            assert await ledger.available([KEY]) == 0.7
            empty = await ledger.reserve([], "c", 9.0)  # no budget applies: nothing to hold
            await ledger.settle(empty, 9.0)
            assert await ledger.available([KEY]) == 0.7

    asyncio.run(main())


def test_holds_of_a_crashed_replica_expire_after_hold_ttl(redis_engine: Engine) -> None:
    async def main() -> None:
        async with redis_engine.open() as survivor:
            async with redis_engine.open(hold_ttl=0.3) as crashed:
                await crashed.reserve([KEY, TEAM], "lost", 0.8)
            # the replica is gone without settling: its hold stands until it expires
            assert await attempt(survivor, [KEY], 0.5) is None
            assert await survivor.available([KEY]) == 0.2
            await asyncio.sleep(0.45)
            assert await survivor.available([KEY, TEAM]) == 1.0
            held = await survivor.reserve([KEY, TEAM], "next", 0.5)
            assert held.remaining_usd == {"key:k1": 0.5, "team:t1": 4.5}

    asyncio.run(main())
    period = period_of("monthly", datetime.now(UTC)).id
    with redis.Redis.from_url(REDIS_URL) as r:
        for scope in ("key:k1", "team:t1"):
            assert r.hkeys(f"{redis_engine.prefix}budget:{scope}:{period}:h") == [b"next"]
            assert r.zrange(f"{redis_engine.prefix}budget:{scope}:{period}:z", 0, -1) == [b"next"]
    assert redis_engine.counters("key:k1", period) == {"spent": 0, "reserved": 500_000}


def test_redis_counters_expire_after_their_period(redis_engine: Engine) -> None:
    clock = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    async def main() -> None:
        async with redis_engine.open(clock=lambda: clock, hold_ttl=900.0) as ledger:
            await ledger.reserve([BudgetCheck("key:k1", 1.0, "daily"), BudgetCheck("team:t1", 1.0, "total")],
                                 "l", 0.1)

    asyncio.run(main())
    with redis.Redis.from_url(REDIS_URL) as r:
        for suffix in "bhz":
            ttl = r.ttl(f"{redis_engine.prefix}budget:key:k1:2026-11-23:{suffix}")
            assert 12 * 3600 + 3600 < ttl <= 12 * 3600 + 900 + 3600  # to midnight, plus a margin
            total_ttl = r.ttl(f"{redis_engine.prefix}budget:team:t1:total:{suffix}")
            assert 89 * 86400 < total_ttl <= 90 * 86400


def test_reservations_are_tagged_with_their_engine(engine: Engine) -> None:
    async def main() -> None:
        async with engine.open() as ledger:
            held = await ledger.reserve([KEY], "l", 0.1)
            assert isinstance(held, Held) and held.owner is ledger and held.micro == 100_000
            assert [p.id for p in held.periods] == [period_of("monthly", datetime.now(UTC)).id]

    asyncio.run(main())


# -- Redis dies: fall back, or refuse; recover -------------------------------------------------


class OwnRedis:
    """A redis-server of this test's own on a free port, to kill with SIGKILL and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        with redis.Redis.from_url(self.url, socket_timeout=0.2) as r:
            while True:
                try:
                    if r.ping():
                        return
                except redis.ConnectionError:
                    assert time.monotonic() < deadline and self.proc.poll() is None
                    time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no goodbye to clients
        self.proc.wait()
        self.proc = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


async def timed(call: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = await call
    return result, time.monotonic() - start


def test_fallback_serves_promptly_when_redis_is_killed_and_recovers(own_redis: OwnRedis) -> None:
    spent = source({"key:k1": 0.10})  # what the database says

    async def main() -> None:
        fallback = MemoryLedger(spent_source=spent)
        primary = RedisLedger(own_redis.url, prefix="sy-test:", spent_source=spent, socket_timeout=0.25)
        async with contextlib.AsyncExitStack() as stack:
            ledger = FallbackLedger(primary, fallback, retry_interval=0.3)
            stack.push_async_callback(ledger.aclose)
            r1 = await ledger.reserve([KEY], "r1", 0.2)
            assert isinstance(r1, Held) and r1.owner is primary and not ledger.degraded
            assert r1.remaining_usd == {"key:k1": 0.7}

            own_redis.kill()
            r2, took = await timed(ledger.reserve([KEY], "r2", 0.2))
            assert took < 1.0 and ledger.degraded
            assert isinstance(r2, Held) and r2.owner is fallback
            assert r2.remaining_usd == {"key:k1": 0.7}  # seeded from the database in this process
            _, took = await timed(ledger.settle(r1, 0.15))  # Redis's reservation: counted here meanwhile
            assert took < 1.0 and r1.done
            left, took = await timed(ledger.available([KEY]))
            assert took < 1.0 and left == 0.55
            for _ in range(5):  # still down: every call answers promptly
                r, took = await timed(ledger.reserve([KEY], uuid.uuid4().hex, 0.01))
                assert took < 1.0 and r.owner is fallback
                await ledger.release(r)

            own_redis.start()  # empty: counters are seeded again from the database
            await asyncio.sleep(0.35)
            r3 = await ledger.reserve([KEY], "r3", 0.1)
            assert not ledger.degraded and isinstance(r3, Held) and r3.owner is primary
            assert r3.remaining_usd == {"key:k1": 0.8}
            await ledger.settle(r2, 0.2)  # settled where it was made
            assert await fallback.available([KEY]) == 0.55
            assert await primary.available([KEY]) == 0.8
            await ledger.settle(r3, 0.1)
            assert await ledger.available([KEY]) == 0.8

    asyncio.run(main())


def test_fail_closed_refuses_with_503_while_redis_is_down(own_redis: OwnRedis) -> None:
    async def main() -> None:
        primary = RedisLedger(own_redis.url, prefix="sy-test:", socket_timeout=0.25)
        ledger = FallbackLedger(primary, MemoryLedger(), fail_closed=True, retry_interval=0.3)
        try:
            r1 = await ledger.reserve([KEY], "r1", 0.2)
            own_redis.kill()
            for call in (ledger.reserve([KEY], "r2", 0.2), ledger.available([KEY]),
                         ledger.reserve([KEY], "r3", 0.2)):
                start = time.monotonic()
                with pytest.raises(ServiceUnavailableError) as err:
                    await call
                assert time.monotonic() - start < 1.0
                assert err.value.status_code == 503 and err.value.code == "budgets_unavailable"
                assert ledger.degraded
            _, took = await timed(ledger.release(r1))  # never raises: the hold expires on its own
            assert took < 1.0 and r1.done
            own_redis.start()
            await asyncio.sleep(0.35)
            assert await ledger.available([KEY]) == 1.0 and not ledger.degraded
        finally:
            await ledger.aclose()

    asyncio.run(main())


def test_a_redis_that_never_answers_does_not_hang_requests() -> None:
    with socket.socket() as silent:  # accepts connections (in the backlog), never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        async def main() -> None:
            fallback = MemoryLedger()
            ledger = FallbackLedger(RedisLedger(url, socket_timeout=5.0), fallback, timeout=0.3,
                                    retry_interval=60)
            try:
                held, took = await timed(ledger.reserve([KEY], "r", 0.25))
                assert took < 1.0 and ledger.degraded and held.owner is fallback
                left, took = await timed(ledger.available([KEY]))
                assert took < 0.1 and left == 0.75  # no second wait until the next probe
            finally:
                await ledger.aclose()

        asyncio.run(main())


def test_a_reserve_cancelled_in_flight_leaves_no_hold(own_redis: OwnRedis) -> None:
    """The client went away while the hold was on its way: whether Redis ran it or not, nothing
    stays held, and a copy of the reserve arriving after the cancellation holds nothing either."""
    prefix = f"sy-test-{uuid.uuid4().hex}:"

    async def main() -> None:
        ledger = RedisLedger(own_redis.url, prefix=prefix, socket_timeout=2.0)
        other = RedisLedger(own_redis.url, prefix=prefix)
        try:
            await ledger.available([KEY])  # connected
            with redis.Redis.from_url(own_redis.url) as r:
                r.client_pause(300)  # every command waits 300 ms
            task = asyncio.create_task(ledger.reserve([KEY], "gone", 0.5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.4)
            assert await ledger.available([KEY]) == 1.0
            with pytest.raises(RuntimeError, match="cancelled"):
                await other.reserve([KEY], "gone", 0.5)  # the same reserve, late: holds nothing
            assert await other.available([KEY]) == 1.0
            assert (await other.reserve([KEY], "fresh", 0.5)).remaining_usd == {"key:k1": 0.5}
        finally:
            await ledger.aclose()
            await other.aclose()

    asyncio.run(main())
    period = period_of("monthly", datetime.now(UTC)).id
    with redis.Redis.from_url(own_redis.url) as r:
        assert r.hkeys(f"{prefix}budget:key:k1:{period}:h") == [b"fresh"]


def test_a_database_that_fails_or_hangs_while_seeding_is_a_clear_503_never_a_500_or_a_hang() -> None:
    async def down(scope: str, since: datetime | None) -> float:
        raise ConnectionError("connection refused")

    async def hung(scope: str, since: datetime | None) -> float:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def main() -> None:
        for source in (down, hung):
            ledger = MemoryLedger(spent_source=source, seed_timeout=0.05)
            with pytest.raises(ServiceUnavailableError) as info:
                await asyncio.wait_for(ledger.reserve([KEY], "r", 0.1), 10)
            assert info.value.code == "budgets_unavailable" and info.value.retry_after == 1.0

    asyncio.run(main())


def test_after_a_reset_a_seed_the_database_cannot_give_goes_on_from_the_last_figure() -> None:
    answering = [True]

    async def spent(scope: str, since: datetime | None) -> float:
        if not answering[0]:
            raise ConnectionError("connection refused")
        return 0.25

    async def main() -> None:
        ledger = MemoryLedger(spent_source=spent, seed_timeout=0.05)
        held = await ledger.reserve([KEY], "a", 0.25)
        await ledger.settle(held, 0.25)
        assert await ledger.available([KEY]) == 0.5
        answering[0] = False
        ledger.reset()  # Redis went away: re-seed from the database, which is away too
        assert await ledger.available([KEY]) == 0.5  # this process' own figure, not a 503
        ledger.reset()
        answering[0] = True
        assert await ledger.available([KEY]) == 0.75  # the database's, once it answers

    asyncio.run(main())
