from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from switchyard.core.keys import ApiKey
from switchyard.errors import AuthenticationError
from switchyard.service.keys import KeyService
from switchyard.store import Database, SqlKeyStore

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
PLUS2 = timezone(timedelta(hours=2))


def make_key(n: int, *, at: datetime = T0, **fields: object) -> ApiKey:
    key = ApiKey(
        id=f"key_{n:016x}", name=f"key {n}", prefix=f"sy-{n:04d}", key_hash=f"hash-{n}", created_at=at
    )
    return replace(key, **fields)  # type: ignore[arg-type]


def assert_utc(value: datetime | None) -> None:
    assert value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)


def test_round_trip_with_every_field(url: str) -> None:
    full = ApiKey(
        id="key_00000000000000aa",
        name="ci pipeline",
        prefix="sy-abcd",
        key_hash="h" * 64,
        created_at=T0.astimezone(PLUS2),  # stored and returned as UTC
        is_admin=True,
        active=True,
        allowed_models=("gpt-4o*", "llama3"),
        expires_at=T0 + timedelta(days=30),
        last_used_at=T0 + timedelta(minutes=5),
        use_count=7,
        revoked_at=None,
    )
    plain = make_key(2)

    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            await store.add(full)
            await store.add(plain)
            got = await store.get(full.id)
            assert got == full
            assert got is not None
            for value in (got.created_at, got.expires_at, got.last_used_at):
                assert_utc(value)
            assert got.created_at == T0 and got.allowed_models == ("gpt-4o*", "llama3")
            assert await store.find_by_hash(full.key_hash) == full
            got_plain = await store.find_by_hash("hash-2")
            assert got_plain == plain and got_plain is not None
            assert got_plain.allowed_models is None and got_plain.expires_at is None
            assert_utc(got_plain.created_at)
            assert await store.get("key_missing") is None
            assert await store.find_by_hash("nope") is None
            # None means every model and is SQL NULL; an empty list means none.
            await store.add(make_key(3, allowed_models=()))
            assert (await store.get(make_key(3).id)) == make_key(3, allowed_models=())
            async with db.engine.connect() as conn:
                nulls = await conn.scalar(
                    sa.text("SELECT count(*) FROM api_keys WHERE allowed_models IS NULL")
                )
            assert nulls == 1

    asyncio.run(body())


def test_key_hash_and_id_are_unique(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            await store.add(make_key(1))
            with pytest.raises(sa.exc.IntegrityError):
                await store.add(make_key(2, key_hash="hash-1"))
            with pytest.raises(sa.exc.IntegrityError):
                await store.add(make_key(1, key_hash="other"))
            assert await store.count() == 1

    asyncio.run(body())


def test_naive_datetimes_are_refused(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            with pytest.raises(sa.exc.StatementError, match="naive datetime"):
                await SqlKeyStore(db.engine).add(make_key(1, at=datetime(2025, 1, 1)))

    asyncio.run(body())


def test_revoke_list_and_count(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            for n in range(3):
                await store.add(make_key(n, at=T0 + timedelta(seconds=n)))
            at = T0 + timedelta(hours=1)
            assert await store.revoke(make_key(1).id, at) is True
            assert await store.revoke(make_key(1).id, at + timedelta(hours=1)) is False  # already revoked
            assert await store.revoke("key_missing", at) is False
            revoked = await store.get(make_key(1).id)
            assert revoked is not None and not revoked.active and revoked.revoked_at == at
            assert [k.id for k in await store.list()] == [make_key(0).id, make_key(2).id]
            everything = await store.list(include_revoked=True)
            assert [k.id for k in everything] == [make_key(n).id for n in range(3)]
            assert await store.count() == 3

    asyncio.run(body())


def test_replace_secret(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            await store.add(make_key(1))
            at = T0 + timedelta(minutes=1)
            assert await store.replace_secret(make_key(1).id, "sy-new", "hash-new", at) is True
            assert await store.find_by_hash("hash-1") is None
            rotated = await store.find_by_hash("hash-new")
            assert rotated is not None and rotated.prefix == "sy-new" and rotated.id == make_key(1).id
            assert rotated.created_at == T0 and rotated.active
            assert await store.replace_secret("key_missing", "p", "h", at) is False
            await store.revoke(make_key(1).id, at)
            assert await store.replace_secret(make_key(1).id, "sy-x", "hash-x", at) is False  # revoked

    asyncio.run(body())


def test_changed_since(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            for n in range(3):
                await store.add(make_key(n, at=T0))
            assert await store.changed_since(T0) == []
            assert len(await store.changed_since(T0 - timedelta(microseconds=1))) == 3
            t1, t2 = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
            await store.revoke(make_key(0).id, t1)
            await store.replace_secret(make_key(2).id, "sy-2b", "hash-2b", t2)
            assert [k.id for k in await store.changed_since(T0)] == [make_key(0).id, make_key(2).id]
            # A non-UTC ``since`` is compared as the same instant.
            assert [k.id for k in await store.changed_since(t1.astimezone(PLUS2))] == [make_key(2).id]
            assert await store.changed_since(t2) == []

    asyncio.run(body())


def test_touch_accumulates_and_keeps_latest_use(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlKeyStore(db.engine)
            a, b = make_key(1), make_key(2, last_used_at=T0 + timedelta(days=1), use_count=10)
            await store.add(a)
            await store.add(b)
            t1, t2 = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)
            await store.touch({a.id: (3, t2), b.id: (1, t1), "key_unknown": (1, t1)})
            await store.touch({a.id: (2, t1)})  # older: count grows, last use stays
            await store.touch({})
            got_a, got_b = await store.get(a.id), await store.get(b.id)
            assert got_a is not None and got_a.use_count == 5 and got_a.last_used_at == t2
            assert got_b is not None and got_b.use_count == 11 and got_b.last_used_at == b.last_used_at
            assert_utc(got_a.last_used_at)
            t3 = T0 + timedelta(days=2)
            await store.touch({b.id: (4, t3.astimezone(PLUS2))})
            got_b = await store.get(b.id)
            assert got_b is not None and got_b.use_count == 15 and got_b.last_used_at == t3

    asyncio.run(body())


class SlowAnswers(SqlKeyStore):
    """The real store on a database that answers late: each read is made at once, and its rows
    are handed back only when the test lets them go, so a change can land in between."""

    def __init__(self, engine: object) -> None:
        super().__init__(engine)  # type: ignore[arg-type]
        self.holding = False
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def _late(self, rows: Any) -> Any:
        if self.holding:
            self.holding = False
            self.read_done.set()
            await self.release.wait()
        return rows

    async def changed_since(self, since: datetime) -> list[ApiKey]:
        return await self._late(await super().changed_since(since))  # type: ignore[no-any-return]

    async def find_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self._late(await super().find_by_hash(key_hash))  # type: ignore[no-any-return]


@pytest.mark.parametrize("change", ["revoke", "rotate"])
@pytest.mark.parametrize("read", ["refresh", "first use"])
def test_a_read_that_began_before_a_revoke_or_rotation_never_brings_the_old_secret_back(
        url: str, change: str, read: str) -> None:
    """Revoked or rotated through this process: the old secret is refused on the very next
    request, even when a cache refresh (or a first-use lookup) read the key just before."""

    async def body() -> None:
        async with Database.create(url) as db:
            store = SlowAnswers(db.engine)
            keys = KeyService(store, b"s" * 32, refresh_interval=3600)
            await keys.start()
            try:  # made elsewhere (the CLI, say): this process meets it on a refresh or a first use
                new = await KeyService(SqlKeyStore(db.engine), b"s" * 32).create("racer")
                store.holding = True
                reading = asyncio.create_task(
                    keys.refresh() if read == "refresh" else keys.authenticate(new.secret))
                await asyncio.wait_for(store.read_done.wait(), 10)  # it read the key as it was
                rotated = await keys.rotate(new.key.id) if change == "rotate" else None
                if change == "revoke":
                    await keys.revoke(new.key.id)
                store.release.set()
                await asyncio.gather(reading, return_exceptions=True)
                with pytest.raises(AuthenticationError):
                    await keys.authenticate(new.secret)
                if rotated is not None:
                    assert (await keys.authenticate(rotated.secret)).key_id == new.key.id
            finally:
                await keys.aclose()

    asyncio.run(body())


def test_a_change_event_refresh_is_not_undone_by_an_older_refresh_still_reading(url: str) -> None:
    """Another replica: its one-second refresh read the key just before the revoke; the revoke's
    event (Redis, in production) starts a second refresh meanwhile. The older read must not land
    after the newer one and bring the key back."""

    async def body() -> None:
        async with Database.create(url) as db:
            here = KeyService(SqlKeyStore(db.engine), b"s" * 32, refresh_interval=3600)
            store = SlowAnswers(db.engine)
            there = KeyService(store, b"s" * 32, refresh_interval=3600)
            await here.start()
            await there.start()
            try:
                new = await here.create("racer")
                store.holding = True
                periodic = asyncio.create_task(there.refresh())
                await asyncio.wait_for(store.read_done.wait(), 10)  # it read the key, still active
                await here.revoke(new.key.id)
                event = asyncio.create_task(there.refresh())  # what the revoke's event starts
                await asyncio.sleep(0.2)
                store.release.set()
                await asyncio.gather(periodic, event)
                with pytest.raises(AuthenticationError):
                    await there.authenticate(new.secret)
            finally:
                await here.aclose()
                await there.aclose()

    asyncio.run(body())
