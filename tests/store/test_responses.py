"""SqlResponseStore on SQLite and PostgreSQL, and the ResponseLog that seals what it keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from switchyard.core.keys import Principal
from switchyard.core.responses import SealedResponse
from switchyard.errors import NotFoundError
from switchyard.service.responses import ResponseLog, listed_items
from switchyard.store import Database
from switchyard.store.responses import SqlResponseStore
from switchyard.store.tables import responses

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
SECRET = b"a-server-secret-of-at-least-32-characters"
ALICE = Principal(key_id="key_alice", name="alice", is_admin=False)
BOB = Principal(key_id="key_bob", name="bob", is_admin=False)
ADMIN = Principal(key_id="key_admin", name="admin", is_admin=True)


def sealed(n: int, previous: str | None = None, at: datetime = T0) -> SealedResponse:
    return SealedResponse(id=f"resp_{n}", owner="key_a", previous_response_id=previous, created_at=at,
                          nonce=bytes(12), ciphertext=bytes([n]) * 40)


def test_add_get_chain_delete(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlResponseStore(db.engine)
            for n in range(1, 5):
                await store.add(sealed(n, f"resp_{n - 1}" if n > 1 else None, T0 + timedelta(seconds=n)))
            assert await store.get("resp_2") == sealed(2, "resp_1", T0 + timedelta(seconds=2))
            assert await store.get("resp_9") is None
            assert [r.id for r in await store.chain("resp_4", 100)] == ["resp_4", "resp_3", "resp_2", "resp_1"]
            assert [r.id for r in await store.chain("resp_4", 2)] == ["resp_4", "resp_3"]
            assert await store.delete("resp_2") and not await store.delete("resp_2")
            assert [r.id for r in await store.chain("resp_4", 100)] == ["resp_4", "resp_3"]  # stops at a gap
            assert await store.chain("resp_9", 100) == []

    asyncio.run(body())


def test_prune_by_age_then_by_rows(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            store = SqlResponseStore(db.engine, prune_chunk=3)
            for n in range(20):
                await store.add(sealed(n, at=T0 + timedelta(hours=n)))
            now = T0 + timedelta(hours=20)
            assert await store.prune(100, timedelta(hours=15), now=now) == 5  # hours 0-4 are older than 15 h
            assert await store.prune(10, timedelta(days=1), now=now) == 5  # keeps the newest ten
            async with db.engine.connect() as conn:
                left = sorted((await conn.execute(sa.select(responses.c.id))).scalars(), key=lambda i: int(i[5:]))
            assert left == [f"resp_{n}" for n in range(10, 20)]
            assert await store.prune(10, timedelta(days=1), now=now) == 0

    asyncio.run(body())


def test_content_is_sealed_and_owned(url: str) -> None:
    async def body() -> None:
        async with Database.create(url) as db:
            log = ResponseLog(SqlResponseStore(db.engine), SECRET)
            items = listed_items([{"role": "user", "content": "a very private prompt"}])
            one = {"id": "resp_one", "object": "response", "output": [{"type": "message", "role": "assistant",
                   "id": "msg_1", "status": "completed",
                   "content": [{"type": "output_text", "text": "private answer", "annotations": []}]}]}
            await log.save(one, items, ALICE.key_id, None)
            await log.save({"id": "resp_two", "output": []}, listed_items([{"role": "user", "content": "next"}]),
                           ALICE.key_id, "resp_one")
            async with db.engine.connect() as conn:
                raw = (await conn.execute(sa.select(responses))).mappings().all()
            assert all(b"private" not in bytes(r["ciphertext"]) for r in raw)  # nothing readable at rest
            assert (await log.get("resp_one", ALICE)).response == one
            assert (await log.get("resp_one", ADMIN)).input_items == items
            with pytest.raises(NotFoundError, match="Response with id 'resp_one' not found"):
                await log.get("resp_one", BOB)
            history = await log.history("resp_two", ALICE)
            assert [i.get("role") for i in history] == ["user", "assistant", "user"]
            with pytest.raises(NotFoundError) as err:
                await log.history("resp_two", BOB)
            assert err.value.param == "previous_response_id"
            # another server secret, or a row moved to another owner, cannot be opened: as if gone
            with pytest.raises(NotFoundError):
                await ResponseLog(log.store, b"x" * 40).get("resp_one", ALICE)
            async with db.engine.begin() as conn:
                moved = sa.update(responses).where(responses.c.id == "resp_one").values(owner_key_id=BOB.key_id)
                await conn.execute(moved)
            with pytest.raises(NotFoundError):
                await log.get("resp_one", BOB)
            with pytest.raises(NotFoundError):
                await log.delete("resp_two", BOB)
            await log.delete("resp_two", ALICE)
            with pytest.raises(NotFoundError):
                await log.get("resp_two", ALICE)

    asyncio.run(body())
