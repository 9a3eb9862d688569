from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from switchyard.core.latency import BUCKETS, bucket, percentile
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlUsageStore, upgrade
from switchyard.store.tables import usage_records

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


def test_a_batch_larger_than_one_statement_is_written_whole_and_exact(url: str) -> None:
    """A batch is written with SQL compiled once and values bound a column at a time
    (``store/bulk.py``). 2,500 rows over 301 hours and 2 keys (602 hourly rows): on SQLite more rows than one
    statement holds, raw (1,000 a statement) and hourly (441 a statement, 74 columns each). Times
    in another zone are stored as the same instants in UTC; every value reads back as written."""
    plus5 = timezone(timedelta(hours=5))
    records = [
        replace(record(f"key_{i % 2}", "gpt-4o", at=(T0 + timedelta(hours=i % 301, seconds=i)).astimezone(plus5),
                       status=500 if i % 10 == 0 else 200, estimated=i % 3 == 0),
                request_id=f"req-{i}", prompt_tokens=i, cache_read_tokens=i % 7, session_id=f"s{i % 4}",
                team_id=None if i % 2 else "team_a", latency_ms=float(i))
        for i in range(2500)
    ]

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records)
            async with db.engine.connect() as conn:
                stored = (await conn.execute(sa.select(usage_records).order_by(usage_records.c.id))).all()
            assert len(stored) == len(records)
            for got, want in zip(stored, records, strict=True):
                assert got.created_at == want.created_at and got.created_at.tzinfo == UTC
                assert (got.request_id, got.key_id, got.prompt_tokens, got.cache_read_tokens, got.session_id,
                        got.team_id, got.latency_ms, got.status, got.estimated, got.streamed) == (
                    want.request_id, want.key_id, want.prompt_tokens, want.cache_read_tokens, want.session_id,
                    want.team_id, want.latency_ms, want.status, want.estimated, want.streamed)
            by_hour = await store.query(group_by=["hour", "key"])
            assert len(by_hour) == 602
            assert sum(r["requests"] for r in by_hour) == 2500  # type: ignore[misc]
            assert sum(r["prompt_tokens"] for r in by_hour) == sum(range(2500))  # type: ignore[misc]
            assert sum(r["errors"] for r in by_hour) == 250  # type: ignore[misc]
            assert sum(sum(r["latency_counts"]) for r in by_hour) == 2250  # type: ignore[arg-type, misc]
            (total,) = await store.query(group_by="model")
            assert (total["requests"], total["estimated"], total["cache_read_tokens"]) == (
                2500, len(range(0, 2500, 3)), sum(i % 7 for i in range(2500)))

    asyncio.run(body())
