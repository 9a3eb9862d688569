"""Console sessions in SQL (SQLite and PostgreSQL) through ``ConsoleSessions``: found by the
digest of the cookie's id only, a fixed expiry, ``last_seen_at`` written at most once a minute,
expired rows deleted on the next sign-in, and a cookie that cannot be an id never read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from switchyard.core.console import session_digest
from switchyard.errors import RateLimitError
from switchyard.limits.rates import MemoryLimiter
from switchyard.service.console_sessions import ConsoleSessions
from switchyard.store import Database
from switchyard.store.console_sessions import SqlConsoleSessionStore
from switchyard.store.tables import ui_sessions

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def test_a_session_by_its_digest_with_a_fixed_expiry_and_pruning(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            clock = Clock()
            sessions = ConsoleSessions(SqlConsoleSessionStore(db.engine), ttl=3600, limiter=MemoryLimiter(),
                                       sign_ins_per_minute=10, clock=clock)
            made = await sessions.create("key-digest-a")
            assert made.session.id_digest == session_digest(made.id) != made.id
            assert made.session.expires_at == T0 + timedelta(hours=1)
            async with db.engine.connect() as conn:
                rows = (await conn.execute(sa.select(ui_sessions))).mappings().all()
            assert [r["id_digest"] for r in rows] == [session_digest(made.id)]
            assert made.id not in repr([dict(r) for r in rows])

            assert (await sessions.get(made.id)) == made.session
            assert await sessions.get(made.id[:-1] + ("A" if made.id[-1] != "A" else "B")) is None
            assert await sessions.get("not-a-session-id") is None and await sessions.get("") is None

            clock.now = T0 + timedelta(seconds=30)  # seen within the minute: not written again
            assert (await sessions.get(made.id)).last_seen_at == T0  # type: ignore[union-attr]
            clock.now = T0 + timedelta(minutes=2)
            await sessions.get(made.id)
            assert (await sessions.get(made.id)).last_seen_at == clock.now  # type: ignore[union-attr]
            assert sessions.remaining(made.session) == 3600 - 120

            other = await sessions.create(None)  # signed in while auth was off
            await sessions.drop(other.id)
            assert await sessions.get(other.id) is None

            clock.now = T0 + timedelta(hours=1)  # the expiry is fixed at sign-in: used or not, it ends
            assert await sessions.get(made.id) is None
            stale = await sessions.create("key-digest-b")
            clock.now += timedelta(hours=2)
            fresh = await sessions.create("key-digest-c")  # a sign-in deletes the expired rows
            async with db.engine.connect() as conn:
                left = (await conn.execute(sa.select(ui_sessions.c.id_digest))).scalars().all()
            assert left == [fresh.session.id_digest] and stale.session.id_digest not in left

    asyncio.run(body())


def test_sign_in_attempts_are_counted_per_address_in_the_limiter(url: str) -> None:
    async def body() -> None:
        now = [1_000.0]
        async with Database.create(url) as db:
            sessions = ConsoleSessions(SqlConsoleSessionStore(db.engine), ttl=3600,
                                       limiter=MemoryLimiter(clock=lambda: now[0]), sign_ins_per_minute=3)
            for _ in range(3):
                await sessions.count_sign_in("10.0.0.1")
            with pytest.raises(RateLimitError) as refused:
                await sessions.count_sign_in("10.0.0.1")
            assert refused.value.status_code == 429 and "sign-in 10.0.0.1" in refused.value.message
            assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 60
            await sessions.count_sign_in("10.0.0.2")  # another address has its own count
            now[0] += 60.5  # a minute on: the window is empty again
            await sessions.count_sign_in("10.0.0.1")

    asyncio.run(body())
