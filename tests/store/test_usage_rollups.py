"""Hourly usage rollups and the capped raw ring, on SQLite and a real PostgreSQL.

The rollups must always equal the sum of every row ever written (cost included, exactly),
whatever the batches, hours, concurrent writers and pruning of raw rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.core.usage import UsageRecord
from switchyard.service.retention import UsageRetention
from switchyard.settings import Settings
from switchyard.store import Database, SqlUsageStore, upgrade
from switchyard.store.usage import format_usd, hour_start, nanousd, parse_group_by

T0 = datetime(2025, 3, 1, 9, 40, tzinfo=UTC)
KEYS = ["key_a", "key_b", "key_c", None]
MODELS = ["gpt-4o", "llama3", "claude"]
PRICES = {"gpt-4o": (2.5, 10.0), "llama3": (0.0, 0.0), "claude": (3.0, 15.0)}  # USD per 1M tokens
Group = tuple[datetime, str | None, str]


def make_records(n: int, *, seed: int, start: datetime = T0, span: timedelta = timedelta(hours=3),
                 prefix: str = "r") -> list[UsageRecord]:
    """``n`` varied rows spread over ``span`` from ``start`` (several UTC hours)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        model = rng.choice(MODELS)
        prompt, completion = rng.randint(0, 5000), rng.randint(0, 2000)
        price_in, price_out = PRICES[model]
        out.append(UsageRecord(
            created_at=start + span * rng.random(),
            request_id=f"{prefix}-{seed}-{i}",
            key_id=rng.choice(KEYS),
            model=model,
            provider="openai",
            endpoint="/v1/chat/completions",
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=rng.random() * 900,
            status=rng.choice([200, 200, 200, 200, 400, 429, 500, 502]),
            streamed=rng.random() < 0.5,
            estimated=rng.random() < 0.2,
            cost_usd=(prompt * price_in + completion * price_out) / 1e6,  # as Target.cost computes it
        ))
    return out


Totals = dict[Any, dict[str, int]]


def expected(records: Iterable[UsageRecord], dims: Sequence[str] = ("hour", "key", "model")) -> Totals:
    """What the rollups must say, summed in Python from the rows."""
    out: dict[Any, dict[str, int]] = {}
    for r in records:
        hour = hour_start(r.created_at)
        parts = {"hour": hour, "day": hour.replace(hour=0), "key": r.key_id, "model": r.model}
        group = tuple(parts[d] for d in dims)
        totals = out.setdefault(group, dict.fromkeys(
            ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated"), 0))
        totals["requests"] += 1
        totals["prompt_tokens"] += r.prompt_tokens
        totals["completion_tokens"] += r.completion_tokens
        totals["cost_nanousd"] += nanousd(r.cost_usd)
        totals["errors"] += r.status >= 400
        totals["estimated"] += r.estimated
    return out


def got(rows: list[dict[str, object]], dims: Sequence[str] = ("hour", "key", "model")) -> dict[Any, dict[str, int]]:
    """Query rows in the shape of :func:`expected` (checking the derived fields on the way)."""
    names = {"hour": "period", "day": "period", "key": "key_id", "model": "model"}
    out: dict[Any, dict[str, int]] = {}
    for row in rows:
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]  # type: ignore[operator]
        assert row["cost_usd"] == row["cost_nanousd"] / 1e9  # type: ignore[operator]
        group = tuple(row[names[d]] for d in dims)
        assert group not in out, f"group {group} twice"
        out[group] = {c: int(row[c]) for c in  # type: ignore[call-overload]
                      ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated")}
    return out


async def raw_rows(db: Database) -> list[UsageRecord]:
    """The raw table read back as records."""
    async with db.engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM usage_records ORDER BY id"))
        rows = [dict(r._mapping) for r in result]
    records = []
    for row in rows:
        created = row["created_at"]
        if isinstance(created, str):  # SQLite text through sa.text: no type processing
            created = datetime.fromisoformat(created).replace(tzinfo=UTC)
        records.append(UsageRecord(
            created_at=created, request_id=row["request_id"], key_id=row["key_id"], model=row["model"],
            provider=row["provider"], endpoint=row["endpoint"], prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"], latency_ms=row["latency_ms"], status=row["status"],
            streamed=bool(row["streamed"]), estimated=bool(row["estimated"]), cost_usd=row["cost_usd"],
        ))
    return records


async def rollup_table(db: Database) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as conn:
        result = await conn.execute(sa.text("SELECT * FROM usage_rollups ORDER BY hour_start, key_id, model"))
        return [tuple(r) for r in result]


# -- rollups equal the raw rows -------------------------------------------------------------


def test_rollups_add_up_exactly_across_batches_and_hours(url: str) -> None:
    records = make_records(600, seed=1)
    # the hour boundary, to the microsecond, and a time given in another zone
    edge = [
        UsageRecord(T0.replace(minute=59, second=59, microsecond=999_999), "edge-1", "key_a", "gpt-4o", "openai",
                    "/v1/chat/completions", 1, 2, 3.0, 200, False, False, cost_usd=0.1),
        UsageRecord(T0.replace(hour=10, minute=0), "edge-2", "key_a", "gpt-4o", "openai",
                    "/v1/chat/completions", 4, 8, 3.0, 200, False, True, cost_usd=0.2),
        UsageRecord(datetime(2025, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))), "edge-3", None, "llama3",
                    "ollama", "/v1/chat/completions", 16, 32, 3.0, 503, True, False, cost_usd=1e-10),
    ]
    records += edge

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            assert await store.query(group_by="hour") == []
            assert await store.spent() == 0.0
            sizes = [1, 7, 100, 250, 0, 245]
            start = 0
            for size in sizes:  # batches of every size; the last holds the edge rows
                await store.write(records[start:start + size])
                start += size
            await store.write(records[start:])

            # the rollups, grouped finely, equal the rows summed in Python
            fine = await store.query(group_by=("hour", "key", "model"))
            assert got(fine) == expected(records)
            # and equal the raw table as stored
            assert got(fine) == expected(await raw_rows(db))
            assert len(await rollup_table(db)) == len(expected(records))

            hours = {hour_start(r.created_at) for r in records}
            assert hours == {datetime(2025, 3, 1, h, tzinfo=UTC) for h in (9, 10, 11, 12)}
            by_hour = got(await store.query(group_by="hour"), ("hour",))
            assert by_hour == expected(records, ("hour",))
            # 09:59:59.999999 counts in 09:00, 10:00:00 in 10:00, 12:30+02:00 in 10:00 UTC
            nine = expected([r for r in records if r.created_at < T0.replace(minute=59, second=59,
                                                                              microsecond=999_999)], ("hour",))
            assert by_hour[(datetime(2025, 3, 1, 9, tzinfo=UTC),)]["requests"] == \
                nine[(datetime(2025, 3, 1, 9, tzinfo=UTC),)]["requests"] + 1
            assert [k[0].hour for k in expected([edge[2]], ("hour",))] == [10]

            for dims in (("day",), ("key",), ("model",), ("key", "model"), ("day", "model"), ("hour", "key")):
                assert got(await store.query(group_by=dims), dims) == expected(records, dims), dims

            total = await total_row(store)
            assert total["requests"] == len(records)
            assert total["cost_nanousd"] == sum(nanousd(r.cost_usd) for r in records)
            assert abs(float(total["cost_usd"]) - sum(r.cost_usd for r in records)) < 1e-9 * len(records)
            assert await store.spent() == total["cost_nanousd"] / 1e9

            # keyless requests are key_id None, selected with key_id=""
            keyless = got(await store.query(key_id="", group_by="key"), ("key",))
            assert keyless == expected([r for r in records if r.key_id is None], ("key",))

    asyncio.run(body())


async def total_row(store: SqlUsageStore) -> dict[str, object]:
    rows = await store.query(group_by="day")
    out: dict[str, object] = {c: sum(int(r[c]) for r in rows)  # type: ignore[call-overload]
                              for c in ("requests", "cost_nanousd")}
    out["cost_usd"] = sum(float(r["cost_usd"]) for r in rows)  # type: ignore[arg-type]
    return out


def test_filters_and_time_ranges(url: str) -> None:
    records = make_records(300, seed=2, span=timedelta(hours=30))  # two UTC days

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records)
            dims = ("hour", "key", "model")

            def want(pred: Any) -> dict[Any, dict[str, int]]:
                return expected([r for r in records if pred(r)], dims)

            assert got(await store.query(key_id="key_b", group_by=dims)) == want(lambda r: r.key_id == "key_b")
            assert got(await store.query(model="claude", group_by=dims)) == want(lambda r: r.model == "claude")
            assert got(await store.query(key_id="key_a", model="llama3", group_by=dims)) == want(
                lambda r: r.key_id == "key_a" and r.model == "llama3")
            assert await store.query(key_id="key_nobody", group_by=dims) == []

            # since: from the hour it falls in; until: hours that start before it (overlap)
            since, until = T0 + timedelta(hours=5, minutes=10), T0 + timedelta(hours=20, minutes=5)
            lo, hi = hour_start(since), hour_start(until) + timedelta(hours=1)
            in_range = want(lambda r: lo <= r.created_at < hi)
            assert got(await store.query(since=since, until=until, group_by=dims)) == in_range
            assert got(await store.query(since=lo, until=hi, group_by=dims)) == in_range  # aligned: the same
            assert got(await store.query(since=since, group_by=dims)) == want(lambda r: r.created_at >= lo)
            assert got(await store.query(until=lo, group_by=dims)) == want(lambda r: r.created_at < lo)
            assert await store.query(since=T0 + timedelta(days=5), group_by=dims) == []

            # days are UTC dates
            days = await store.query(group_by="day")
            assert [r["period"] for r in days] == [datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)]
            assert got(days, ("day",)) == expected(records, ("day",))

            # spent: from the rollups, by key id, key scope, key and model, model
            def cost(pred: Any) -> float:
                return sum(nanousd(r.cost_usd) for r in records if pred(r)) / 1e9

            assert await store.spent("key_a") == cost(lambda r: r.key_id == "key_a")
            assert await store.spent("key:key_a") == cost(lambda r: r.key_id == "key_a")
            assert await store.spent("key:key_a|model:gpt-4o") == cost(
                lambda r: r.key_id == "key_a" and r.model == "gpt-4o")
            assert await store.spent("model:claude", since) == cost(
                lambda r: r.model == "claude" and r.created_at >= lo)
            assert await store.spent("key_a", T0 + timedelta(days=3)) == 0.0
            with pytest.raises(ValueError, match="spent_by_keys"):
                await store.spent("team:t1")
            team = ["key_a", "key_c"]
            assert await store.spent_by_keys(team) == cost(lambda r: r.key_id in team)
            assert await store.spent_by_keys(team, since, model="gpt-4o") == cost(
                lambda r: r.key_id in team and r.model == "gpt-4o" and r.created_at >= lo)
            assert await store.spent_by_keys([]) == 0.0
            many = [f"key_{i}" for i in range(1200)] + ["key_b"]  # more ids than one IN list holds
            assert await store.spent_by_keys(many) == cost(lambda r: r.key_id == "key_b")

    asyncio.run(body())


def test_concurrent_writers_add_up_exactly(url: str) -> None:
    """Two stores (two engines, as two replicas would have) write 20 batches each at once."""
    batches = [make_records(150, seed=100 + i, span=timedelta(hours=2)) for i in range(40)]

    async def body() -> None:
        async with Database.create(url) as one, Database.create(url) as two:
            stores = [SqlUsageStore(one.engine), SqlUsageStore(two.engine)]
            await asyncio.gather(*(stores[i % 2].write(batch) for i, batch in enumerate(batches)))
            everything = [r for batch in batches for r in batch]
            for store in stores:
                assert got(await store.query(group_by=("hour", "key", "model"))) == expected(everything)
            assert len(await raw_rows(one)) == len(everything)

    asyncio.run(body())


def test_a_failed_batch_writes_neither_rows_nor_rollups(url: str) -> None:
    good = make_records(50, seed=7)
    bad = [*make_records(20, seed=8), UsageRecord(
        datetime(2025, 3, 1, 10), "naive", "key_a", "gpt-4o", "openai", "/v1/chat/completions", 1, 1, 1.0, 200,
        False, False)]

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(good)
            with pytest.raises(ValueError, match="naive"):
                await store.write(bad)
            assert got(await store.query(group_by=("hour", "key", "model"))) == expected(good)
            assert len(await raw_rows(db)) == len(good)

    asyncio.run(body())


def test_summary_is_per_key_and_model(url: str) -> None:
    records = make_records(120, seed=3)

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records)
            rows = await store.summary()
            assert [(r["key_id"], r["model"]) for r in rows] == sorted(
                {(r.key_id, r.model) for r in records}, key=lambda g: (g[0] or "", g[1]))
            assert got(rows, ("key", "model")) == expected(records, ("key", "model"))
            assert got(await store.summary(since=T0 + timedelta(hours=1)), ("key", "model")) == expected(
                [r for r in records if r.created_at >= T0.replace(minute=0) + timedelta(hours=1)], ("key", "model"))

    asyncio.run(body())


# -- the raw ring ----------------------------------------------------------------------------


def test_prune_by_age_then_by_rows_keeps_the_newest_and_never_the_rollups(url: str) -> None:
    now = datetime(2025, 4, 1, 12, tzinfo=UTC)
    old = make_records(130, seed=4, start=now - timedelta(days=40), span=timedelta(days=5), prefix="old")
    recent = make_records(170, seed=5, start=now - timedelta(days=3), span=timedelta(days=2), prefix="new")

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine, prune_chunk=16)  # small chunks: the loops run many times
            for i in range(0, 300, 30):
                await store.write((old + recent)[i:i + 30])
            rollups_before = await rollup_table(db)
            assert await store.raw_count() == 300

            # max_rows above the count: only age prunes
            assert await store.prune(1000, timedelta(days=30), now=now) == 130
            assert {r.request_id for r in await raw_rows(db)} == {r.request_id for r in recent}
            assert await store.prune(1000, timedelta(days=30), now=now) == 0

            # by rows: the newest (last written) 50 stay
            assert await store.prune(50, timedelta(days=30), now=now) == 120
            assert [r.request_id for r in await raw_rows(db)] == [r.request_id for r in recent[-50:]]
            assert await store.prune(50, timedelta(days=30), now=now) == 0

            # an exact multiple of the chunk, and down to nothing
            assert await store.prune(2, timedelta(days=30), now=now) == 48
            assert await store.prune(0, timedelta(days=30), now=now) == 2
            assert await store.raw_count() == 0
            assert await store.prune(0, timedelta(days=30), now=now) == 0

            assert await rollup_table(db) == rollups_before
            assert got(await store.query(group_by=("hour", "key", "model"))) == expected(old + recent)
            assert await store.spent() == sum(nanousd(r.cost_usd) for r in old + recent) / 1e9

            # writing after a prune goes on adding to the same rollups
            more = make_records(40, seed=6, start=now - timedelta(days=3), span=timedelta(days=2), prefix="more")
            await store.write(more)
            assert got(await store.query(group_by=("hour", "key", "model"))) == expected(old + recent + more)
            assert await store.raw_count() == 40

    asyncio.run(body())


def test_retention_task_prunes_at_start_and_then_periodically(url: str) -> None:
    now = datetime.now(UTC)

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(make_records(1500, seed=9, start=now - timedelta(hours=2), span=timedelta(hours=1)))
            await store.write(make_records(10, seed=10, start=now - timedelta(days=9), span=timedelta(hours=1)))
            retention = UsageRetention(store, max_rows=1000, max_age=timedelta(days=7), interval=0.05)
            retention.start()
            try:
                for _ in range(200):
                    if retention.runs >= 1:
                        break
                    await asyncio.sleep(0.01)
                assert retention.runs >= 1 and await store.raw_count() == 1000
                assert retention.pruned == 510
                await store.write(make_records(300, seed=11, start=now - timedelta(minutes=30),
                                               span=timedelta(minutes=10)))
                for _ in range(200):  # the next periodic run trims the ring again
                    if await store.raw_count() == 1000:
                        break
                    await asyncio.sleep(0.02)
                assert await store.raw_count() == 1000 and retention.runs >= 2 and retention.pruned == 810
            finally:
                await retention.aclose()
            runs = retention.runs
            await asyncio.sleep(0.15)
            assert retention.runs == runs, "the task ran on after aclose"
            assert sum(int(r["requests"]) for r in await store.query(group_by="day")) == 1810  # type: ignore[call-overload]

    asyncio.run(body())


def test_retention_settings() -> None:
    settings = Settings.model_validate({"usage_raw_max_rows": 5000, "usage_raw_max_age_days": 2.5})
    retention = UsageRetention.from_settings(None, settings)  # type: ignore[arg-type]
    assert (retention.max_rows, retention.max_age) == (5000, timedelta(days=2, hours=12))
    with pytest.raises(ValueError, match="1000"):
        UsageRetention(None, max_rows=999, max_age=timedelta(days=1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        UsageRetention(None, max_rows=1000, max_age=timedelta(0))  # type: ignore[arg-type]


def test_soak_100k_requests_stays_within_the_cap(tmp_path: Path) -> None:
    """100,000 requests in batches of 1000, pruned every 10 batches as the retention task does."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'soak.db'}"
    cap, batch, batches, every = 10_000, 1000, 100, 10
    # on the hour: every hour then holds a full cycle of keys and models (12 requests, 20 s)
    base = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(42)
    models = MODELS
    totals = {"requests": 0, "prompt": 0, "completion": 0, "nanos": 0, "errors": 0, "estimated": 0}

    def make_batch(b: int) -> list[UsageRecord]:
        rows = []
        for i in range(batch):
            n = b * batch + i
            model = models[n % 3]
            prompt, completion = rng.randint(1, 4000), rng.randint(0, 1000)
            price_in, price_out = PRICES[model]
            status = 500 if n % 97 == 0 else 200
            estimated = n % 13 == 0
            cost = (prompt * price_in + completion * price_out) / 1e6
            totals["requests"] += 1
            totals["prompt"] += prompt
            totals["completion"] += completion
            totals["nanos"] += nanousd(cost)
            totals["errors"] += status >= 400
            totals["estimated"] += estimated
            rows.append(UsageRecord(base + timedelta(seconds=1.7 * n), f"soak-{n}", KEYS[n % 4], model, "openai",
                                    "/v1/chat/completions", prompt, completion, 10.0, status, True, estimated,
                                    cost_usd=cost))
        return rows

    async def body() -> dict[str, float]:
        await upgrade(url)
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            retention = UsageRetention(store, max_rows=cap, max_age=timedelta(days=30))
            peak = 0
            started = time.perf_counter()
            for b in range(batches):
                await store.write(make_batch(b))
                if (b + 1) % every == 0:
                    peak = max(peak, await store.raw_count())
                    await retention.run_once()
                    assert await store.raw_count() == min(cap, (b + 1) * batch)
            elapsed = time.perf_counter() - started
            before_final = await store.raw_count()
            await retention.run_once()
            ids = [r.request_id for r in await raw_rows(db)]
            rows = await store.query(group_by=("key", "model"))
            sums = {c: sum(int(r[c]) for r in rows)  # type: ignore[call-overload]
                    for c in ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated")}
            hours = len(await store.query(group_by="hour"))
            rollup_rows = len(await rollup_table(db))
        size = (tmp_path / "soak.db").stat().st_size
        assert peak <= cap + every * batch
        assert before_final == cap and await_count_ok(ids, cap, batches * batch)
        assert sums == {"requests": 100_000, "prompt_tokens": totals["prompt"],
                        "completion_tokens": totals["completion"], "cost_nanousd": totals["nanos"],
                        "errors": totals["errors"], "estimated": totals["estimated"]}
        assert totals["requests"] == 100_000
        assert rollup_rows == hours * len(KEYS) * len(MODELS)  # ~48 hours x 4 keys x 3 models
        return {"seconds": elapsed, "peak": peak, "hours": hours, "rollup_rows": rollup_rows, "db_bytes": size}

    figures = asyncio.run(body())
    print(f"\nsoak: {figures}")
    assert figures["seconds"] < 60


def await_count_ok(ids: list[str], cap: int, written: int) -> bool:
    """The ring holds exactly the newest ``cap`` requests."""
    return ids == [f"soak-{n}" for n in range(written - cap, written)]


# -- the migration ---------------------------------------------------------------------------


def test_migration_0004_adds_cost_and_fills_the_rollups_from_stored_rows(empty_url: str) -> None:
    rows = [  # written before 0004: no cost column
        ("2025-03-01 09:10:00", "key_a", "gpt-4o", 10, 5, 200, False),
        ("2025-03-01 09:50:00", "key_a", "gpt-4o", 20, 7, 500, True),
        ("2025-03-01 10:00:00", "key_a", "gpt-4o", 1, 1, 200, False),
        ("2025-03-01 23:59:59", None, "llama3", 3, 4, 429, False),
    ]

    async def body() -> None:
        await upgrade(empty_url, "0003")
        async with Database.create(empty_url) as db:
            async with db.engine.begin() as conn:
                for i, (at, key, model, p, c, status, est) in enumerate(rows):
                    await conn.execute(sa.text(
                        "INSERT INTO usage_records (created_at, request_id, key_id, model, provider, endpoint,"
                        " prompt_tokens, completion_tokens, latency_ms, status, streamed, estimated) VALUES"
                        " (:at, :rid, :key, :model, 'openai', '/v1/chat/completions', :p, :c, 1.0, :status,"
                        " false, :est)"), {"at": datetime.fromisoformat(at).replace(tzinfo=UTC)
                                           if db.backend == "postgresql" else at + ".000000",
                                           "rid": f"r{i}", "key": key, "model": model, "p": p, "c": c,
                                           "status": status, "est": est})
            await upgrade(empty_url, "0004")
            await upgrade(empty_url)  # later revisions add columns (0 for these rows) the store reads
            store = SqlUsageStore(db.engine)
            assert got(await store.query(group_by=("hour", "key", "model"))) == {
                (datetime(2025, 3, 1, 9, tzinfo=UTC), "key_a", "gpt-4o"): {
                    "requests": 2, "prompt_tokens": 30, "completion_tokens": 12, "cost_nanousd": 0, "errors": 1,
                    "estimated": 1},
                (datetime(2025, 3, 1, 10, tzinfo=UTC), "key_a", "gpt-4o"): {
                    "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "cost_nanousd": 0, "errors": 0,
                    "estimated": 0},
                (datetime(2025, 3, 1, 23, tzinfo=UTC), None, "llama3"): {
                    "requests": 1, "prompt_tokens": 3, "completion_tokens": 4, "cost_nanousd": 0, "errors": 1,
                    "estimated": 0},
            }
            assert {r.cost_usd for r in await raw_rows(db)} == {0.0}
            # new rows add to the filled rollups
            await store.write([UsageRecord(datetime(2025, 3, 1, 9, 30, tzinfo=UTC), "n", "key_a", "gpt-4o", "openai",
                                           "/v1/chat/completions", 100, 100, 1.0, 200, False, False, cost_usd=0.25)])
            (row,) = await store.query(key_id="key_a", since=datetime(2025, 3, 1, 9, tzinfo=UTC),
                                       until=datetime(2025, 3, 1, 10, tzinfo=UTC), group_by="hour")
            assert (row["requests"], row["prompt_tokens"], row["cost_usd"]) == (3, 130, 0.25)

    asyncio.run(body())


def test_cache_tokens_add_up_and_sessions_group_the_raw_rows(url: str) -> None:
    sessions = ["claude-1", "claude-2", "codex-9", None]
    records = [
        replace(r, cache_read_tokens=r.prompt_tokens // 2, cache_write_tokens=r.prompt_tokens // 10,
                session_id=sessions[i % 4])
        for i, r in enumerate(make_records(200, seed=7, span=timedelta(hours=30)))
    ]

    def by(rows: Iterable[UsageRecord], key: Any) -> dict[Any, dict[str, int]]:
        out: dict[Any, dict[str, int]] = {}
        for r in rows:
            t = out.setdefault(key(r), dict.fromkeys(("requests", "prompt_tokens", "cache_read_tokens",
                                                      "cache_write_tokens", "cost_nanousd", "errors"), 0))
            t["requests"] += 1
            t["prompt_tokens"] += r.prompt_tokens
            t["cache_read_tokens"] += r.cache_read_tokens
            t["cache_write_tokens"] += r.cache_write_tokens
            t["cost_nanousd"] += nanousd(r.cost_usd)
            t["errors"] += r.status >= 400
        return out

    def shape(rows: list[dict[str, object]], key: Any) -> dict[Any, dict[str, int]]:
        return {key(row): {c: int(row[c]) for c in ("requests", "prompt_tokens", "cache_read_tokens",  # type: ignore[call-overload]
                                                   "cache_write_tokens", "cost_nanousd", "errors")} for row in rows}

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records[:120])
            await store.write(records[120:])
            # the rollups count cache tokens exactly
            fine = await store.query(group_by=("hour", "key", "model"))
            assert shape(fine, lambda row: (row["period"], row["key_id"], row["model"])) == by(
                records, lambda r: (hour_start(r.created_at), r.key_id, r.model))
            # by session: the raw rows, one row per session (None: requests that named none)
            per_session = await store.query(group_by="session")
            assert [row["session_id"] for row in per_session] == [None, "claude-1", "claude-2", "codex-9"] or \
                [row["session_id"] for row in per_session] == ["claude-1", "claude-2", "codex-9", None]
            assert shape(per_session, lambda row: row["session_id"]) == by(records, lambda r: r.session_id)
            assert sum(int(row["cost_nanousd"]) for row in per_session) == \
                sum(int(row["cost_nanousd"]) for row in await store.query(group_by="model"))  # type: ignore[call-overload]
            hourly = await store.query(group_by="hour,key,session")
            assert shape(hourly, lambda row: (row["period"], row["key_id"], row["session_id"])) == by(
                records, lambda r: (hour_start(r.created_at), r.key_id, r.session_id))
            daily = await store.query(group_by="day,model,session")
            assert shape(daily, lambda row: (row["period"], row["model"], row["session_id"])) == by(
                records, lambda r: (hour_start(r.created_at).replace(hour=0), r.model, r.session_id))
            # filters: keyless, a model, whole hours from since
            keyless = await store.query(key_id="", group_by="session")
            assert shape(keyless, lambda row: row["session_id"]) == by(
                [r for r in records if r.key_id is None], lambda r: r.session_id)
            since = T0 + timedelta(hours=5, minutes=20)
            until = T0 + timedelta(hours=20)
            window = await store.query(model="claude", since=since, until=until, group_by="session")
            assert shape(window, lambda row: row["session_id"]) == by(
                [r for r in records if r.model == "claude" and hour_start(since) <= r.created_at < until],
                lambda r: r.session_id)

    asyncio.run(body())


def test_migration_0007_keeps_older_rows_with_no_cache_tokens_and_no_session(empty_url: str) -> None:
    async def body() -> None:
        await upgrade(empty_url, "0006")
        async with Database.create(empty_url) as db:
            async with db.engine.begin() as conn:
                await conn.execute(sa.text(
                    "INSERT INTO usage_records (created_at, request_id, key_id, model, provider, endpoint,"
                    " prompt_tokens, completion_tokens, latency_ms, status, streamed, estimated, cost_usd) VALUES"
                    " (:at, 'old', 'key_a', 'gpt-4o', 'openai', '/v1/chat/completions', 10, 5, 1.0, 200, false,"
                    " false, 0.5)"), {"at": T0 if db.backend == "postgresql" else "2025-03-01 09:40:00.000000"})
                await conn.execute(sa.text(
                    "INSERT INTO usage_rollups (hour_start, key_id, model, requests, prompt_tokens,"
                    " completion_tokens, cost_nanousd, errors, estimated) VALUES"
                    " (:at, 'key_a', 'gpt-4o', 1, 10, 5, 500000000, 0, 0)"),
                    {"at": T0.replace(minute=0) if db.backend == "postgresql" else "2025-03-01 09:00:00.000000"})
            await upgrade(empty_url)
            store = SqlUsageStore(db.engine)
            await store.write([UsageRecord(T0, "new", "key_a", "gpt-4o", "openai", "/v1/chat/completions", 100, 1,
                                           1.0, 200, False, False, cost_usd=0.25, cache_read_tokens=80,
                                           session_id="s-1")])
            (row,) = await store.query(group_by="model")
            assert (row["requests"], row["prompt_tokens"], row["cache_read_tokens"], row["cache_write_tokens"],
                    row["cost_usd"]) == (2, 110, 80, 0, 0.75)
            sessions = {r["session_id"]: r["requests"] for r in await store.query(group_by="session")}
            assert sessions == {None: 1, "s-1": 1}

    asyncio.run(body())


# -- parsing ---------------------------------------------------------------------------------


def test_parse_group_by() -> None:  # (times: tests/core/test_time.py)
    assert parse_group_by("day") == ("day",)
    assert parse_group_by(" key , model ") == ("key", "model")
    assert parse_group_by(["hour", "key"]) == ("hour", "key")
    assert parse_group_by("day,session") == ("day", "session")
    for bad_dims in ("week", "", "key,key", "hour,day", ",", "sessions"):
        with pytest.raises(ValueError):
            parse_group_by(bad_dims)
    assert nanousd(1.5e-6) == 1500 and nanousd(0.0) == 0 and nanousd(float("nan")) == 0
    assert format_usd(1500) == "0.000001500" and format_usd(12_345_000_000_001) == "12345.000000001"
