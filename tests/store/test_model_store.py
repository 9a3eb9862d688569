"""SqlModelStore on SQLite and PostgreSQL: CRUD, one default, aliases, and the change marker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from switchyard.store import Database
from switchyard.store.models import DuplicateAliasError, SqlModelStore
from switchyard.store.tables import model_configs

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
CONFIG = {"provider": "fake", "model": "gpt-4o-mini", "max_tokens": 128000, "default_temperature": 0.3,
          "rate_limits": {"per_minute": 60}, "input_cost_per_1m": 0.15,
          "provider_settings": {"capabilities": {"vision": False}, "fallbacks": ["other"]}}


def test_round_trip_list_get_and_change_marker(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlModelStore(db.engine)
            assert await store.list() == [] and await store.revision() == 0
            a = await store.add("alpha", CONFIG, at=T0)
            b = await store.add("beta", {"provider": "fake"}, at=T0 + timedelta(seconds=1), active=False)
            assert a.id.startswith("mdl_") and a.id != b.id
            got = await store.get(a.id)
            assert got == a and got is not None
            assert got.config == CONFIG and got.alias == "alpha" and got.active and not got.is_default
            assert got.created_at == T0 and got.created_at.tzinfo is not None
            assert await store.get_by_alias("beta") == b and (await store.get_by_alias("beta")).active is False  # type: ignore[union-attr]
            assert [m.alias for m in await store.list()] == ["alpha", "beta"]
            assert await store.get("mdl_nope") is None and await store.get_by_alias("nope") is None
            assert await store.revision() == b.revision > a.revision

    asyncio.run(body())


def test_update_changes_fields_and_bumps_the_revision(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlModelStore(db.engine)
            a = await store.add("alpha", CONFIG, at=T0)
            before = await store.revision()
            at = T0 + timedelta(minutes=5)
            up = await store.update(a.id, alias="alpha2", config={"provider": "fake", "model": "gpt-4o"},
                                    active=False, is_default=True, at=at)
            assert up is not None
            assert (up.alias, up.active, up.is_default) == ("alpha2", False, True)
            assert up.config == {"provider": "fake", "model": "gpt-4o"}
            assert up.created_at == T0 and up.updated_at == at
            assert await store.revision() == up.revision > before
            assert await store.get_by_alias("alpha") is None and await store.get(a.id) == up
            assert await store.update("mdl_nope", alias="x", config={}, active=True, is_default=False, at=at) is None

    asyncio.run(body())


def test_duplicate_aliases_are_refused_but_a_deleted_alias_is_free_again(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlModelStore(db.engine)
            a = await store.add("alpha", CONFIG, at=T0)
            b = await store.add("beta", CONFIG, at=T0)
            with pytest.raises(DuplicateAliasError):
                await store.add("alpha", CONFIG, at=T0)
            with pytest.raises(DuplicateAliasError):
                await store.update(b.id, alias="alpha", config=CONFIG, active=True, is_default=False, at=T0)
            assert await store.delete(a.id, T0)
            again = await store.add("alpha", {"provider": "fake", "model": "new"}, at=T0)
            assert again.id != a.id and (await store.get_by_alias("alpha")) == again
            assert await store.get(a.id) is None

    asyncio.run(body())


def test_delete_is_seen_by_the_change_marker_and_tombstones_do_not_pile_up(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlModelStore(db.engine)
            made = [await store.add(f"m{i}", CONFIG, at=T0) for i in range(3)]
            seen = await store.revision()
            assert await store.delete(made[2].id, T0)  # the newest row: max(revision) must still grow
            assert await store.revision() > seen
            seen = await store.revision()
            assert not await store.delete(made[2].id, T0) and await store.revision() == seen
            assert not await store.delete("mdl_nope", T0)
            assert await store.delete(made[0].id, T0)
            assert await store.revision() > seen
            assert [m.alias for m in await store.list()] == ["m1"]
            async with db.engine.connect() as conn:
                tombstones = (await conn.execute(
                    sa.select(model_configs.c.id).where(model_configs.c.deleted_at.is_not(None)))).scalars().all()
            assert tombstones == [made[0].id]  # only the latest tombstone is kept

    asyncio.run(body())


def test_at_most_one_default(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlModelStore(db.engine)
            a = await store.add("a", CONFIG, at=T0, is_default=True)
            b = await store.add("b", CONFIG, at=T0 + timedelta(seconds=1), is_default=True)
            assert [(m.alias, m.is_default) for m in await store.list()] == [("a", False), ("b", True)]
            await store.update(a.id, alias="a", config=CONFIG, active=True, is_default=True, at=T0)
            assert [(m.alias, m.is_default) for m in await store.list()] == [("a", True), ("b", False)]
            assert await store.delete(a.id, T0)
            assert [(m.alias, m.is_default) for m in await store.list()] == [("b", False)]
            assert b.is_default

    asyncio.run(body())


def test_concurrent_writers_get_distinct_revisions(url: str) -> None:
    # Two engines (two replicas) writing at once: every write must get its own revision.
    async def body() -> None:
        async with Database.create(url) as one, Database.create(url) as two:
            stores = [SqlModelStore(one.engine), SqlModelStore(two.engine)]
            made = await asyncio.gather(*(stores[i % 2].add(f"m{i}", CONFIG, at=T0) for i in range(10)))
            revisions = sorted(m.revision for m in made)
            assert len(set(revisions)) == 10
            assert await stores[0].revision() == revisions[-1]
            assert sorted(m.alias for m in await stores[1].list()) == sorted(f"m{i}" for i in range(10))

    asyncio.run(body())
