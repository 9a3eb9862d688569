from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from switchyard.core.keys import ApiKey
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlKeyStore, SqlUsageStore, sqlite_path

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def test_ping_and_backend(url: str, backend: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            assert db.backend == backend
            await db.ping()

    asyncio.run(body())


def test_ping_raises_when_unreachable() -> None:
    async def body() -> None:
        async with Database.create("postgresql+asyncpg://postgres@127.0.0.1:1/none") as db:
            with pytest.raises(OSError):
                await db.ping()

    asyncio.run(body())


def test_sqlite_path() -> None:
    assert str(sqlite_path("sqlite+aiosqlite:////var/lib/sy/db.sqlite")) == "/var/lib/sy/db.sqlite"
    assert sqlite_path("sqlite+aiosqlite://") is None
    assert sqlite_path("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None


def test_sqlite_uses_wal(url: str, backend: str) -> None:
    if backend != "sqlite":
        return  # WAL is a SQLite setting; PostgreSQL has nothing to check here.

    async def body() -> None:
        async with Database.create(url) as db, db.engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == 30000

    asyncio.run(body())


def _usage(n: int, writer: str) -> UsageRecord:
    return UsageRecord(
        created_at=T0 + timedelta(microseconds=n),
        request_id=f"{writer}-{n}",
        key_id="key_shared",
        model=writer,
        provider="ollama",
        endpoint="/v1/embeddings",
        prompt_tokens=1,
        completion_tokens=0,
        latency_ms=1.0,
        status=200,
        streamed=False,
        estimated=False,
    )


async def _writer(url: str, name: str, batches: int) -> None:
    # Its own engine, as a separate process (CLI beside the server) would have.
    async with Database.create(url) as db:
        keys, usage = SqlKeyStore(db.engine), SqlUsageStore(db.engine)
        for i in range(batches):
            await usage.write([_usage(i * 25 + j, name) for j in range(25)])
            await keys.touch({"key_shared": (1, T0 + timedelta(seconds=i))})


def test_two_concurrent_writers_both_succeed(url: str) -> None:
    batches = 40

    async def body() -> None:
        async with Database.create(url) as db:
            key = ApiKey(id="key_shared", name="shared", prefix="sy-s", key_hash="hs", created_at=T0)
            await SqlKeyStore(db.engine).add(key)
            await asyncio.gather(_writer(url, "one", batches), _writer(url, "two", batches))
            summary = await SqlUsageStore(db.engine).summary()
            assert [(r["model"], r["requests"]) for r in summary] == [("one", 1000), ("two", 1000)]
            shared = await SqlKeyStore(db.engine).get("key_shared")
            assert shared is not None and shared.use_count == 2 * batches
            assert shared.last_used_at == T0 + timedelta(seconds=batches - 1)

    asyncio.run(body())
