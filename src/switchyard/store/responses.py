"""Stored Responses API responses in SQL: the ``ResponseStore`` port.

Rows hold sealed content only (the service seals and opens it); this module never sees a prompt.
Retention: :meth:`SqlResponseStore.prune` deletes by age, then the oldest beyond a row cap.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from switchyard.core.responses import SealedResponse
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import responses

__all__ = ["SqlResponseStore"]

_t = responses
_PRUNE_CHUNK = 5000


def _from_row(row: RowMapping) -> SealedResponse:
    return SealedResponse(id=row["id"], owner=row["owner_key_id"], previous_response_id=row["previous_response_id"],
                          created_at=row["created_at"], nonce=bytes(row["nonce"]), ciphertext=bytes(row["ciphertext"]))


class SqlResponseStore:
    def __init__(self, engine: AsyncEngine, *, prune_chunk: int = _PRUNE_CHUNK) -> None:
        self._engine = engine
        self._chunk = prune_chunk

    async def add(self, response: SealedResponse) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(_t).values(
                id=response.id, owner_key_id=response.owner, previous_response_id=response.previous_response_id,
                created_at=response.created_at, nonce=response.nonce, ciphertext=response.ciphertext))

    async def get(self, response_id: str) -> SealedResponse | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(_t).where(_t.c.id == response_id))).mappings().first()
        return _from_row(row) if row is not None else None

    async def chain(self, response_id: str, limit: int) -> builtins.list[SealedResponse]:
        out: list[SealedResponse] = []
        seen: set[str] = set()
        query = sa.select(_t).where(_t.c.id == sa.bindparam("b_id"))
        async with self._engine.connect() as conn:
            next_id: str | None = response_id
            while next_id is not None and next_id not in seen and len(out) < limit:
                row = (await conn.execute(query, {"b_id": next_id})).mappings().first()
                if row is None:
                    break
                seen.add(next_id)
                out.append(_from_row(row))
                next_id = row["previous_response_id"]
        return out

    async def delete(self, response_id: str) -> bool:
        async with self._engine.begin() as conn:
            return bool((await conn.execute(sa.delete(_t).where(_t.c.id == response_id))).rowcount)

    async def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int:
        """Delete responses older than ``max_age``, then the oldest beyond the newest ``max_rows``,
        in chunks of their own transactions. Returns the number deleted."""
        if max_rows < 0:
            raise ValueError("max_rows must be >= 0")
        cutoff = (now if now is not None else datetime.now(UTC)) - max_age
        deleted = 0
        while True:
            oldest = sa.select(_t.c.id).where(_t.c.created_at < cutoff).limit(self._chunk)
            async with self._engine.begin() as conn:
                count = (await conn.execute(sa.delete(_t).where(_t.c.id.in_(oldest.scalar_subquery())))).rowcount
            deleted += count
            if count < self._chunk:
                break
        while True:
            async with self._engine.begin() as conn:
                total = (await conn.execute(sa.select(sa.func.count()).select_from(_t))).scalar_one()
                extra = min(int(total) - max_rows, self._chunk)
                if extra <= 0:
                    return deleted
                oldest = sa.select(_t.c.id).order_by(_t.c.created_at, _t.c.id).limit(extra)
                deleted += (await conn.execute(sa.delete(_t).where(_t.c.id.in_(oldest.scalar_subquery())))).rowcount
