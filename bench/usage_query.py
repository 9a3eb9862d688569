"""How long the usage reports take over a year of rollups (what the console's usage view
draws): ``SqlUsageStore.query`` per model with the latency histogram merged into p50/p95, and
without it (``latency=False``: the 62 sums left out), per day (the chart), per team and per key
and model, and ``spent`` (a budget's check) since the same start.

Each is timed twice in one run on the same data: reading the hourly rollups only (how the store
answered before the daily rollups; the bench swaps ``store.usage.spans`` for one hourly span),
and as the store answers now (whole UTC days from ``usage_daily``, the edge hours from
``usage_rollups``); the two answers must be equal. The range starts mid-day, so both edges are
part days. ``--write`` also times ``SqlUsageStore.write`` of batches of 200 requests against a
copy of the old write (raw rows and the hourly upsert only), a batch of each in turn.

    PYTHONPATH=src .venv/bin/python bench/usage_query.py                  # SQLite, 10 keys x 4 models
    PYTHONPATH=src .venv/bin/python bench/usage_query.py --keys 20 --models 5 \
        --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test --out /tmp/usage_query.md

The store is filled directly with one rollup row per hour, key and model for 365 days (every
key busy every hour: the most rows a year of that many keys and models can make), each with
latency counts in five buckets, and the matching daily rows. Each query runs ``--repeat`` times; the median is reported.
With ``--postgres URL`` a fresh database is made on that server and dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import switchyard.store.usage as usage_module
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlUsageStore, upgrade
from switchyard.store.tables import LATENCY_COLUMNS, usage_daily, usage_records, usage_rollups
from switchyard.store.usage_days import Span, daily_rows, day_start

_COUNTED = ("requests", "prompt_tokens", "completion_tokens", "cost_nanousd", "errors", "estimated",
            "cache_read_tokens", "cache_write_tokens", *LATENCY_COLUMNS)


def _rows(keys: int, models: int, hours: list[datetime], seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for at in hours:
        for k in range(keys):
            for m in range(models):
                requests = rng.randint(1, 200)
                row: dict[str, Any] = {
                    "hour_start": at, "key_id": f"key_{k:04d}", "model": f"model-{m}", "team_id": f"team_{k % 3}",
                    "requests": requests, "prompt_tokens": requests * 900, "completion_tokens": requests * 200,
                    "cost_nanousd": requests * 1_700_000, "errors": requests // 50, "estimated": 0,
                    "cache_read_tokens": 0, "cache_write_tokens": 0, **dict.fromkeys(LATENCY_COLUMNS, 0)}
                ok, centre = requests - requests // 50, 20 + 3 * m + rng.randint(-2, 2)
                for offset, share in ((-2, 0.1), (-1, 0.2), (1, 0.2), (2, 0.1)):  # a bell around the centre
                    row[LATENCY_COLUMNS[centre + offset]] = int(ok * share)
                row[LATENCY_COLUMNS[centre]] = ok - sum(int(ok * f) for f in (0.1, 0.2, 0.2, 0.1))
                out.append(row)
    return out


async def _fill(db: Database, keys: int, models: int, start: datetime) -> int:
    by_day: dict[datetime, list[datetime]] = {}
    for h in range(365 * 24):
        at = start + timedelta(hours=h)
        by_day.setdefault(day_start(at), []).append(at)
    total = 0
    for seed, hours in enumerate(by_day.values()):  # a UTC day at a time: memory stays small
        rows = _rows(keys, models, hours, seed=seed)
        async with db.engine.begin() as conn:
            await conn.execute(sa.insert(usage_rollups), rows)
            await conn.execute(sa.insert(usage_daily), daily_rows(rows, _COUNTED))
        total += len(rows)
    return total


def _hourly_spans(since: datetime | None, until: datetime | None) -> list[Span]:
    """The one span the store read before the daily rollups: every hour row in the range."""
    return [Span(False, None if since is None else since.replace(minute=0, second=0, microsecond=0), until)]


async def _write_hourly_only(store: SqlUsageStore, records: list[UsageRecord]) -> None:
    """The write as it was before the daily rollups: raw rows and the hourly upsert."""
    rows = [{"hour_start": hour, "key_id": key, "model": model, "team_id": team,
             **{c: getattr(totals, c) for c in _COUNTED[:8]}, **dict(zip(LATENCY_COLUMNS, totals.latency, strict=True))}
            for (hour, key, model, team), totals in sorted(usage_module.rollup(records).items())]
    async with store._engine.begin() as conn:
        raw = [{f: getattr(r, f) for f in usage_module._FIELDS} for r in records]
        await conn.execute(sa.insert(usage_records), raw)
        await conn.execute(usage_module._upsert(store._dialect, usage_rollups), rows)


def _batch(rng: random.Random, at: datetime, keys: int, models: int, n: int = 200) -> list[UsageRecord]:
    return [UsageRecord(at + timedelta(seconds=rng.randrange(3600)), uuid.uuid4().hex, f"key_{rng.randrange(keys):04d}",
                        f"model-{rng.randrange(models)}", "openai", "/v1/chat/completions", 900, 200,
                        rng.uniform(20, 4000), 200, False, False, cost_usd=0.0017, team_id="team_0")
            for _ in range(n)]


async def _time(repeat: int, make: Any) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await make()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def run(url: str, keys: int, models: int, repeat: int, write: bool) -> list[tuple[str, float, float, int]]:
    """(what, seconds reading the hourly rollups only, seconds as the store reads now, rows answered)."""
    await upgrade(url)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=365)
    since = start + timedelta(minutes=30)  # both edges are part days (unless now is midnight)
    async with Database.create(url) as db:
        rows = await _fill(db, keys, models, start)
        print(f"{rows} rollup rows written", file=sys.stderr)
        store = SqlUsageStore(db.engine)
        results: list[tuple[str, float, float, int]] = []
        calls: list[tuple[str, Any]] = [
            (f"query(group_by={g!r}, latency={lat})", lambda g=g, lat=lat: store.query(since=since, group_by=g,
                                                                                        latency=lat))
            for g, lat in (("model", True), ("model", False), ("day", False), ("team", True), ("key,model", True))]
        calls.append(("spent(None, since)", lambda: store.spent(None, since)))
        for what, make in calls:
            timed = []
            answers = []
            for spans in (_hourly_spans, usage_module.spans):
                usage_module.spans = spans  # type: ignore[assignment]  # the bench's switch, nowhere else
                try:
                    answers.append(await make())
                    timed.append(await _time(repeat, make))
                finally:
                    usage_module.spans = _SPANS  # type: ignore[assignment]
            if answers[0] != answers[1]:
                raise SystemExit(f"{what}: the daily rollups answer differently from the hourly ones")
            results.append((what, timed[0], timed[1], len(answers[1]) if isinstance(answers[1], list) else 1))
        if write:  # old and new in turn, one batch each, each into an hour of its own
            rng = random.Random(1)
            times: tuple[list[float], list[float]] = ([], [])
            for _ in range(repeat * 10):
                for spent, writer in zip(times, (lambda b: _write_hourly_only(store, b), store.write), strict=True):
                    batch = _batch(rng, now - timedelta(hours=len(times[0]) + len(times[1])), keys, models)
                    began = time.perf_counter()
                    await writer(batch)
                    spent.append(time.perf_counter() - began)
            results.append((f"write() of 200 requests, median of {repeat * 10} batches",
                            statistics.median(times[0]), statistics.median(times[1]), 0))
        return results


_SPANS = usage_module.spans


async def _pg_database(admin_url: str, name: str, create: bool) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"' if create
                                       else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", default=None, help="an admin URL of a PostgreSQL server (a database is made)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here too")
    parser.add_argument("--write", action="store_true", help="also time the write path, old and new")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.postgres:
            name = f"sy_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(_pg_database(args.postgres, name, True))
            url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
            backend = "PostgreSQL"
        else:
            url, backend = f"sqlite+aiosqlite:///{Path(tmp) / 'usage.db'}", "SQLite"
        try:
            results = asyncio.run(run(url, args.keys, args.models, args.repeat, args.write))
        finally:
            if args.postgres:
                asyncio.run(_pg_database(args.postgres, name, False))
    lines = [f"### A year of usage rollups: {args.keys} keys x {args.models} models x 8,760 hours "
             f"({args.keys * args.models * 8760:,} rows), {backend}", "",
             "| query | hourly rollups only (s) | daily + edge hours (s) | ratio | rows answered |",
             "|---|---|---|---|---|"]
    lines += [f"| {what} | {old:.3f} | {new:.3f} | {old / new:.1f}x | {n} |" for what, old, new, n in results]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
