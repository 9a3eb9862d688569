"""Daily rollups, on SQLite and a real PostgreSQL.

Reports over a range read whole UTC days from ``usage_daily`` and the part days at its edges
from the hourly rollups; every answer must be the one the hours alone give. The expected
totals here are worked out in Python from the requests written, hour by hour.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.core.latency import BUCKETS, bucket
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlUsageStore, upgrade
from switchyard.store.tables import LATENCY_COLUMNS, usage_daily, usage_rollups
from switchyard.store.usage import hour_start, nanousd
from switchyard.store.usage_days import Span, spans

START = datetime(2025, 2, 26, 0, 0, tzinfo=UTC)
DAYS = 9
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
          "cache_read_tokens", "cache_write_tokens")


def _records(seed: int = 7, n: int = 400) -> list[UsageRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        at = START + timedelta(seconds=rng.randrange(DAYS * 86_400))
        key = rng.choice(("key_a", "key_b", None))
        out.append(UsageRecord(
            at, f"r{i}", key, rng.choice(("m1", "m2")), "openai", "/v1/chat/completions",
            rng.randint(1, 900), rng.randint(0, 300), 10 ** rng.uniform(0.5, 4.5),
            rng.choice((200, 200, 200, 429, 500)), False, rng.random() < 0.2,
            cost_usd=rng.uniform(0, 0.01), cache_read_tokens=rng.randint(0, 50),
            team_id=None if key is None else rng.choice(("red", None))))
    return out


def _expected(records: list[UsageRecord], group_by: tuple[str, ...], since: datetime | None,
              until: datetime | None, model: str | None = None) -> list[dict[str, Any]]:
    """The report the hours alone give: a request counts when its hour overlaps [since, until)."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(
        lambda: dict.fromkeys(COUNTS, 0) | {"latency_counts": [0] * BUCKETS})
    for r in records:
        hour = hour_start(r.created_at)
        if (since is not None and hour < hour_start(since)) or (until is not None and hour >= until):
            continue
        if model is not None and r.model != model:
            continue
        group: list[Any] = []
        if "hour" in group_by:
            group.append(hour)
        if "day" in group_by:
            group.append(hour.replace(hour=0))
        dims = {"key": r.key_id, "team": r.team_id, "model": r.model}
        group += [dims[d] for d in ("key", "team", "model") if d in group_by]
        t = groups[tuple(group)]
        for name, value in (("requests", 1), ("prompt_tokens", r.prompt_tokens),
                            ("completion_tokens", r.completion_tokens), ("cost_nanousd", nanousd(r.cost_usd)),
                            ("errors", r.status >= 400), ("estimated", r.estimated),
                            ("cache_read_tokens", r.cache_read_tokens), ("cache_write_tokens", 0)):
            t[name] += int(value)
        if r.status < 400:
            t["latency_counts"][bucket(r.latency_ms)] += 1
    names = [n for d, n in (("hour", "period"), ("day", "period"), ("key", "key_id"), ("team", "team_id"),
                            ("model", "model")) if d in group_by]
    return [dict(zip(names, g, strict=True)) | t | {"latency_counts": tuple(t["latency_counts"])}
            for g, t in sorted(groups.items(), key=lambda item: tuple(str(v) for v in item[0]))]


def _got(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    keep = ("period", "key_id", "team_id", "model", *COUNTS, "latency_counts")
    return sorted(({k: v for k, v in row.items() if k in keep} for row in rows),
                  key=lambda row: tuple(str(row[k]) for k in ("period", "key_id", "team_id", "model") if k in row))


def _ranges(rng: random.Random) -> list[tuple[datetime | None, datetime | None]]:
    """Ranges with whole and part days at either edge, within a day, unbounded, and empty."""
    out: list[tuple[datetime | None, datetime | None]] = [
        (None, None), (START, None), (None, START + timedelta(days=4)),
        (START + timedelta(days=1), START + timedelta(days=3)),  # whole days only
        (START + timedelta(days=1, hours=5, minutes=30), START + timedelta(days=6, hours=7, minutes=1)),
        (START + timedelta(days=2, hours=3), START + timedelta(days=2, hours=20)),  # inside one day
        (START + timedelta(days=2, hours=23), START + timedelta(days=3, hours=1)),  # across one midnight
        (START + timedelta(days=3, hours=13, minutes=7), None),
        (None, START + timedelta(days=5, hours=9, seconds=1)),
        (START + timedelta(days=20), None),  # after every row
    ]
    for _ in range(12):
        a = START + timedelta(seconds=rng.randrange(-86_400, (DAYS + 1) * 86_400))
        b = a + timedelta(seconds=rng.randrange(1, 5 * 86_400))
        out.append((a, b))
    return out


def test_spans_cover_the_hours_of_a_range_once() -> None:
    rng = random.Random(3)
    for since, until in _ranges(rng):
        covered: list[datetime] = []
        for span in spans(since, until):
            low = span.low or START - timedelta(days=3)
            high = span.high or START + timedelta(days=30)
            step = timedelta(days=1) if span.daily else timedelta(hours=1)
            if span.daily:
                assert low.hour == 0 and high.hour == 0
            at = low
            while at < high:
                covered += [at + timedelta(hours=h) for h in range(24 if span.daily else 1)]
                at += step
        first = hour_start(since) if since else START - timedelta(days=3)
        end = until if until else START + timedelta(days=30)
        want, at = [], first
        while at < end:
            want.append(at)
            at += timedelta(hours=1)
        assert sorted(covered) == want, (since, until)
    # a range inside one day is hours only; a long one has whole days in the middle
    assert spans(START + timedelta(hours=1), START + timedelta(hours=5)) == [
        Span(False, START + timedelta(hours=1), START + timedelta(hours=5))]
    assert spans(START + timedelta(hours=22, minutes=10), START + timedelta(days=3, hours=2, minutes=1)) == [
        Span(True, START + timedelta(days=1), START + timedelta(days=3)),
        Span(False, START + timedelta(hours=22), START + timedelta(days=1)),
        Span(False, START + timedelta(days=3), START + timedelta(days=3, hours=3))]
    with pytest.raises(ValueError, match="naive"):
        spans(None, datetime(2025, 3, 1, 12, 30))  # a naive time: refused


def test_daily_rows_are_the_sums_of_the_hourly_rows(url: str) -> None:
    async def body() -> None:
        records = _records()
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            for start in range(0, len(records), 37):  # many batches, each across hours and days
                await store.write(records[start : start + 37])
            async with db.engine.connect() as conn:
                hourly = (await conn.execute(sa.select(usage_rollups))).mappings().all()
                daily = (await conn.execute(sa.select(usage_daily))).mappings().all()
            want: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * (len(COUNTS) + BUCKETS))
            for row in hourly:
                sums = want[(row["hour_start"].replace(hour=0), row["key_id"], row["model"], row["team_id"])]
                for i, c in enumerate((*COUNTS, *LATENCY_COLUMNS)):
                    sums[i] += row[c]
            got = {(row["day_start"], row["key_id"], row["model"], row["team_id"]):
                   [row[c] for c in (*COUNTS, *LATENCY_COLUMNS)] for row in daily}
            assert got == dict(want)
            assert len(got) < len(hourly) and {day.hour for day, *_ in got} == {0}

    asyncio.run(body())


def test_reports_over_ranges_with_part_days_match_the_hourly_totals(url: str) -> None:
    async def body() -> None:
        records = _records()
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records)
            rng = random.Random(11)
            for since, until in _ranges(rng):
                for group_by in (("day",), ("model",), ("key", "model"), ("team",), ("day", "key"),
                                 ("hour",), ("key", "team", "model")):
                    got = _got(await store.query(since=since, until=until, group_by=group_by))
                    assert got == _expected(records, group_by, since, until), (since, until, group_by)
                got = _got(await store.query(since=since, until=until, group_by="day", model="m2", key_id="key_a"))
                want = _expected([r for r in records if r.key_id == "key_a"], ("day",), since, until, "m2")
                assert got == want
                keyless = _got(await store.query(since=since, until=until, group_by="model", key_id=""))
                assert keyless == _expected([r for r in records if r.key_id is None], ("model",), since, until)

    asyncio.run(body())


def test_spend_totals_match_the_hourly_totals(url: str) -> None:
    async def body() -> None:
        records = _records(seed=5)
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(records)
            for since in (None, START, START + timedelta(days=2, hours=7, minutes=45),
                          START + timedelta(days=8, hours=23, minutes=59), START + timedelta(days=30)):
                def nanos(keep: Any, since: datetime | None = since) -> int:
                    return sum(nanousd(r.cost_usd) for r in records
                               if keep(r) and (since is None or hour_start(r.created_at) >= hour_start(since)))

                assert round(await store.spent(None, since) * 1e9) == nanos(lambda r: True)
                assert round(await store.spent("key_a", since) * 1e9) == nanos(lambda r: r.key_id == "key_a")
                assert round(await store.spent("key:key_b|model:m1", since) * 1e9) == nanos(
                    lambda r: r.key_id == "key_b" and r.model == "m1")
                assert round(await store.spent("model:m2", since) * 1e9) == nanos(lambda r: r.model == "m2")
                assert round(await store.spent_by_keys(["key_a", "key_b"], since) * 1e9) == nanos(
                    lambda r: r.key_id is not None)
                assert round(await store.spent_by_keys(["key_b"], since, model="m2") * 1e9) == nanos(
                    lambda r: r.key_id == "key_b" and r.model == "m2")
                assert await store.spent_by_keys([], since) == 0

    asyncio.run(body())


def test_migration_0010_fills_the_daily_rows_from_the_hourly_ones(empty_url: str) -> None:
    async def body() -> None:
        records = _records(seed=9, n=250)
        await upgrade(empty_url, "0008")
        async with Database.create(empty_url) as db:
            rows: dict[tuple[Any, ...], dict[str, Any]] = {}
            for r in records:  # the hourly rollups a 0008 server would have written
                group = (hour_start(r.created_at), r.key_id or "", r.model, r.team_id or "")
                row = rows.setdefault(group, dict(zip(("hour_start", "key_id", "model", "team_id"), group,
                                                      strict=True)) | dict.fromkeys((*COUNTS, *LATENCY_COLUMNS), 0))
                for name, value in (("requests", 1), ("prompt_tokens", r.prompt_tokens),
                                    ("completion_tokens", r.completion_tokens), ("cost_nanousd", nanousd(r.cost_usd)),
                                    ("errors", r.status >= 400), ("estimated", r.estimated),
                                    ("cache_read_tokens", r.cache_read_tokens)):
                    row[name] += int(value)
                if r.status < 400:
                    row[LATENCY_COLUMNS[bucket(r.latency_ms)]] += 1
            async with db.engine.begin() as conn:
                await conn.execute(sa.insert(usage_rollups), list(rows.values()))
            await upgrade(empty_url)
            async with db.engine.connect() as conn:
                days = (await conn.execute(sa.select(usage_daily.c.day_start).distinct())).scalars().all()
            assert sorted(days) == [START + timedelta(days=d) for d in range(DAYS)]
            store = SqlUsageStore(db.engine)
            since, until = START + timedelta(days=1, hours=3, minutes=5), START + timedelta(days=7, hours=2)
            for group_by in (("day", "team"), ("key", "model")):
                got = _got(await store.query(since=since, until=until, group_by=group_by))
                assert got == _expected(records, group_by, since, until)
            # writes after the upgrade add to the backfilled days
            extra = _records(seed=10, n=60)
            await store.write(extra)
            got = _got(await store.query(since=since, group_by=("day", "model")))
            assert got == _expected(records + extra, ("day", "model"), since, None)

    asyncio.run(body())
