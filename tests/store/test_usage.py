from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from switchyard.core.latency import BUCKETS, bucket, percentile
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlUsageStore, upgrade

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def record(
    key_id: str | None, model: str, *, at: datetime = T0, status: int = 200, estimated: bool = False
) -> UsageRecord:
    return UsageRecord(
        created_at=at,
        request_id=f"req-{model}-{at.timestamp()}",
        key_id=key_id,
        model=model,
        provider="openai",
        endpoint="/v1/chat/completions",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=12.5,
        status=status,
        streamed=True,
        estimated=estimated,
        cost_usd=0.0001,
    )


def row(
    key_id: str | None, model: str, requests: int, errors: int = 0, estimated: int = 0
) -> dict[str, object]:
    latency = [0] * BUCKETS
    latency[bucket(12.5)] = requests - errors
    return {
        "key_id": key_id,
        "model": model,
        "requests": requests,
        "prompt_tokens": 10 * requests,
        "completion_tokens": 5 * requests,
        "total_tokens": 15 * requests,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": requests * 100_000 / 1e9,
        "cost_nanousd": requests * 100_000,
        "errors": errors,
        "estimated": estimated,
        # every request took 12.5 ms: those that succeeded are in its bucket of the histogram
        "p50_ms": percentile(latency, 0.5),
        "p95_ms": percentile(latency, 0.95),
        "latency_counts": tuple(latency),
    }


def test_write_and_summary(url: str) -> None:
    later = T0 + timedelta(hours=1)
    records = [
        record("key_a", "gpt-4o"),
        record("key_a", "gpt-4o", status=429),
        record("key_a", "gpt-4o", at=later, status=500, estimated=True),
        record("key_a", "llama3", at=later, estimated=True),
        record("key_b", "gpt-4o", at=later, status=399),
        record(None, "gpt-4o", at=later, status=400),
    ]

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.ping()
            await store.write([])
            assert await store.summary() == []
            await store.write(records[:3])
            await store.write(records[3:])
            assert await store.summary() == [
                row(None, "gpt-4o", 1, errors=1),
                row("key_a", "gpt-4o", 3, errors=2, estimated=1),
                row("key_a", "llama3", 1, estimated=1),
                row("key_b", "gpt-4o", 1),
            ]
            assert await store.summary(since=later) == [
                row(None, "gpt-4o", 1, errors=1),
                row("key_a", "gpt-4o", 1, errors=1, estimated=1),
                row("key_a", "llama3", 1, estimated=1),
                row("key_b", "gpt-4o", 1),
            ]
            # totals are hourly: a time inside an hour counts that whole hour
            assert await store.summary(since=later + timedelta(minutes=59)) == await store.summary(since=later)
            assert await store.summary(since=later + timedelta(hours=1)) == []
            async with db.engine.connect() as conn:
                stored = (await conn.execute(sa.text("SELECT latency_ms, streamed, cost_usd FROM usage_records"))).all()
            assert len(stored) == 6
            assert all(r.latency_ms == 12.5 and r.streamed and r.cost_usd == 0.0001 for r in stored)

    asyncio.run(body())


def test_a_sqlite_batch_is_one_insert_not_a_row_by_row_executemany(tmp_path: Path) -> None:
    """sqlite3 runs an executemany one row at a time, and each row hands the GIL between
    aiosqlite's thread and the event loop: with the loop busy serving requests, a 1,000-row batch
    took seconds and the writer fell behind. A batch goes as one multi-VALUES INSERT instead."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchyard.db'}"
    seen: list[str] = []  # the INSERTs into usage_records that reach sqlite3

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO USAGE_RECORDS"):
            seen.append(statement)

    async def body() -> list[dict[str, object]]:
        await upgrade(url)
        async with Database.create(url) as db:
            sa.event.listen(db.engine.sync_engine, "before_cursor_execute", note)
            store = SqlUsageStore(db.engine)
            records = [replace(record("key_a", "gpt-4o"), request_id=f"req-{i}") for i in range(1000)]
            await store.write(records)
            async with db.engine.connect() as conn:
                rows = (await conn.execute(sa.text("SELECT request_id FROM usage_records ORDER BY id"))).all()
            assert [r.request_id for r in rows] == [f"req-{i}" for i in range(1000)]
            return await store.summary()

    summary = asyncio.run(body())
    assert summary == [row("key_a", "gpt-4o", 1000)]
    (statement,) = seen  # one statement, holding every row
    assert statement.split(" VALUES ", 1)[1].count("(") == 1000
