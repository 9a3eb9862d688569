"""The rollups' latency histogram and team dimension, on SQLite and a real PostgreSQL.

Percentiles read from the merged hourly histograms fall within one bucket of the true ones; a
key's team is the one it had when each request was made, so moving a key leaves its past usage
with its old team; and migrating from 0007 keeps every row, with its key's team at the upgrade.
"""

from __future__ import annotations

import asyncio
import math
import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from switchyard.core.latency import BOUNDS_MS, BUCKETS, RESOLUTION, bucket
from switchyard.core.usage import UsageRecord
from switchyard.store import Database, SqlUsageStore, upgrade

T0 = datetime(2025, 3, 1, 9, 40, tzinfo=UTC)
# each model's latencies spread over a range of its own (log-uniform, in ms)
SPREADS = {"fast": (20.0, 120.0), "slow": (800.0, 9000.0), "wide": (5.0, 60_000.0)}


def _record(i: int, model: str, latency_ms: float, *, status: int = 200, key: str | None = "key_a",
            team: str | None = None, at: datetime = T0, session: str | None = None) -> UsageRecord:
    return UsageRecord(at, f"r{i}", key, model, "openai", "/v1/chat/completions", 10, 5, latency_ms, status,
                       False, False, cost_usd=0.001, session_id=session, team_id=team)


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _close(got: object, want: float, rounding: float = 0.0) -> bool:
    """In the same bucket as the true value: within the buckets' ratio of it, or under 1 ms (the
    first bucket, [0, 1 ms)) when the true value is; ``rounding``: what the answer may be off by
    once rounded (the API rounds to 0.1 ms)."""
    if not isinstance(got, float):
        return False
    low, high = (0.0, BOUNDS_MS[0]) if want < BOUNDS_MS[0] else (want / RESOLUTION, want * RESOLUTION)
    return low - rounding <= got <= high + rounding


def test_percentiles_per_model_from_the_hourly_histograms(url: str) -> None:
    rng = random.Random(3)
    records: list[UsageRecord] = []
    for i in range(900):
        model = rng.choice(sorted(SPREADS))
        low, high = SPREADS[model]
        latency = math.exp(rng.uniform(math.log(low), math.log(high)))
        status = 200 if rng.random() < 0.85 else rng.choice([429, 500, 502])
        records.append(_record(i, model, latency, status=status, key=rng.choice(["key_a", "key_b", None]),
                               team=rng.choice(["t1", None]), at=T0 + timedelta(minutes=rng.randrange(60 * 30)),
                               session=rng.choice(["s1", "s2", None])))

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            for start in range(0, len(records), 97):  # batches that split hours and groups
                await store.write(records[start:start + 97])
            rows = await store.query(group_by="model")
            assert [r["model"] for r in rows] == sorted(SPREADS)
            for row in rows:
                mine = [r for r in records if r.model == row["model"]]
                ok = [r.latency_ms for r in mine if r.status < 400]  # errors are not in the histogram
                assert sum(row["latency_counts"]) == len(ok) == row["requests"] - row["errors"]  # type: ignore[arg-type, operator]
                want = [0] * BUCKETS
                for v in ok:
                    want[bucket(v)] += 1
                assert list(row["latency_counts"]) == want  # type: ignore[call-overload]
                assert _close(row["p50_ms"], _nearest_rank(ok, 0.5)), (row["model"], row["p50_ms"])
                assert _close(row["p95_ms"], _nearest_rank(ok, 0.95)), (row["model"], row["p95_ms"])
            # the raw rows (grouped by session) give the very same histograms
            by_session = await store.query(group_by="model,session")
            merged: dict[str, list[int]] = {}
            for row in by_session:
                acc = merged.setdefault(str(row["model"]), [0] * BUCKETS)
                merged[str(row["model"])] = [a + b for a, b in zip(acc, row["latency_counts"], strict=True)]  # type: ignore[call-overload]
            assert merged == {str(r["model"]): list(r["latency_counts"]) for r in rows}  # type: ignore[call-overload]
            # a window: only its hours
            since, until = T0 + timedelta(hours=5), T0 + timedelta(hours=12)
            (fast,) = await store.query(model="fast", since=since, until=until, group_by="model")
            kept = [r.latency_ms for r in records if r.model == "fast" and r.status < 400
                    and since.replace(minute=0) <= r.created_at.replace(minute=0) < until]  # whole hours
            assert sum(fast["latency_counts"]) == len(kept)  # type: ignore[arg-type]
            assert _close(fast["p95_ms"], _nearest_rank(kept, 0.95))
            # nothing succeeded: no percentiles
            await store.write([_record(10_000, "broken", 50.0, status=503)])
            (broken,) = await store.query(model="broken", group_by="model")
            assert (broken["requests"], broken["errors"], broken["p50_ms"], broken["p95_ms"]) == (1, 1, None, None)

    asyncio.run(body())


def test_a_key_that_moves_team_leaves_its_past_usage_with_the_old_team(url: str) -> None:
    before = [_record(i, "m", 10.0, key="key_a", team="red", at=T0 + timedelta(minutes=i)) for i in range(3)]
    # the key moves to blue within the same hour; another key stays in red; a keyless request
    after = [_record(10 + i, "m", 10.0, key="key_a", team="blue", at=T0 + timedelta(minutes=10 + i))
             for i in range(2)]
    others = [_record(20, "m", 10.0, key="key_b", team="red"), _record(21, "m", 10.0, key=None),
              _record(22, "n", 10.0, key="key_c", team=None, at=T0 + timedelta(hours=2))]

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlUsageStore(db.engine)
            await store.write(before)
            await store.write(after + others)
            teams = {r["team_id"]: r["requests"] for r in await store.query(group_by="team")}
            assert teams == {None: 2, "red": 4, "blue": 2}
            pairs = {(r["key_id"], r["team_id"]): r["requests"] for r in await store.query(group_by="key,team")}
            assert pairs == {(None, None): 1, ("key_a", "red"): 3, ("key_a", "blue"): 2, ("key_b", "red"): 1,
                             ("key_c", None): 1}
            # the same hour, key and model under two teams: two rollup rows, each exact
            async with db.engine.connect() as conn:
                rows = (await conn.execute(sa.text(
                    "SELECT team_id, requests FROM usage_rollups WHERE key_id = 'key_a' ORDER BY team_id"))).all()
            assert [tuple(r) for r in rows] == [("blue", 2), ("red", 3)]
            by_key = {r["key_id"]: r["requests"] for r in await store.query(group_by="key")}
            assert by_key == {None: 1, "key_a": 5, "key_b": 1, "key_c": 1}  # a key's totals are whole
            days = await store.query(group_by="day,team,model")
            assert {(r["team_id"], r["model"]): r["requests"] for r in days} == {
                (None, "m"): 1, (None, "n"): 1, ("red", "m"): 4, ("blue", "m"): 2}
            # from the raw rows too (grouped by session)
            raw = {(r["team_id"], r["session_id"]): r["requests"] for r in await store.query(group_by="team,session")}
            assert raw == {(None, None): 2, ("red", None): 4, ("blue", None): 2}

    asyncio.run(body())


def _at(db: Database, when: datetime) -> object:
    return when if db.backend == "postgresql" else when.strftime("%Y-%m-%d %H:%M:%S.%f")


def test_migration_0008_from_0007_keeps_every_row_with_the_keys_team_at_the_upgrade(empty_url: str) -> None:
    async def body() -> None:
        await upgrade(empty_url, "0007")
        async with Database.create(empty_url) as db:
            async with db.engine.begin() as conn:
                for key_id, team in (("key_a", "red"), ("key_b", None)):
                    await conn.execute(sa.text(
                        "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, updated_at, active, is_admin,"
                        " team_id) VALUES (:id, :id, 'sk-sy-x', :hash, :at, :at, true, false, :team)"),
                        {"id": key_id, "hash": f"h-{key_id}", "at": _at(db, T0), "team": team})
                for i, key_id in enumerate(("key_a", "key_b", None, "key_gone")):
                    await conn.execute(sa.text(
                        "INSERT INTO usage_records (created_at, request_id, key_id, model, provider, endpoint,"
                        " prompt_tokens, completion_tokens, latency_ms, status, streamed, estimated, cost_usd)"
                        " VALUES (:at, :rid, :key, 'm', 'openai', '/v1/chat/completions', 10, 5, 40.0, 200, false,"
                        " false, 0.5)"), {"at": _at(db, T0), "rid": f"old-{i}", "key": key_id})
                    await conn.execute(sa.text(
                        "INSERT INTO usage_rollups (hour_start, key_id, model, requests, prompt_tokens,"
                        " completion_tokens, cost_nanousd, errors, estimated, cache_read_tokens, cache_write_tokens)"
                        " VALUES (:at, :key, 'm', 1, 10, 5, 500000000, 0, 0, 0, 0)"),
                        {"at": _at(db, T0.replace(minute=0)), "key": key_id or ""})
            await upgrade(empty_url)
            async with db.engine.connect() as conn:
                raw = dict((await conn.execute(sa.text("SELECT request_id, team_id FROM usage_records"))).all())
                rolled = dict((await conn.execute(sa.text("SELECT key_id, team_id FROM usage_rollups"))).all())
            assert raw == {"old-0": "red", "old-1": None, "old-2": None, "old-3": None}
            assert rolled == {"key_a": "red", "key_b": "", "": "", "key_gone": ""}
            store = SqlUsageStore(db.engine)
            (old,) = await store.query(group_by="model")
            assert (old["requests"], old["cost_usd"], old["p50_ms"]) == (4, 2.0, None)  # no latency kept before
            # new rows add to the old ones, under the team the key has now; a new team is a new row
            await store.write([_record(1, "m", 40.0, key="key_a", team="red"),
                               _record(2, "m", 40.0, key="key_a", team="blue")])
            teams = {r["team_id"]: r["requests"] for r in await store.query(group_by="team")}
            assert teams == {None: 3, "red": 2, "blue": 1}
            (now,) = await store.query(group_by="model")
            assert now["requests"] == 6 and _close(now["p50_ms"], 40.0)

            # and back down to 0007: one row per hour, key and model again, every count kept
            async with db.engine.begin() as conn:
                await conn.run_sync(_downgrade, "0007")
            async with db.engine.connect() as conn:
                back = (await conn.execute(sa.text(
                    "SELECT key_id, requests, cost_nanousd FROM usage_rollups ORDER BY key_id"))).all()
            assert [tuple(r) for r in back] == [("", 1, 500_000_000), ("key_a", 3, 502_000_000),
                                                ("key_b", 1, 500_000_000), ("key_gone", 1, 500_000_000)]
            await upgrade(empty_url)

    asyncio.run(body())


def _downgrade(connection: sa.Connection, revision: str) -> None:
    from alembic import command

    from switchyard.store.migrate import alembic_config

    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)
