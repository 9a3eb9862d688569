"""Web console sessions in SQL: the ``ConsoleSessionStore`` port. Rows are found by the digest of
the cookie's id, never by the id; expired rows are deleted by :meth:`prune` (on each sign-in)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from switchyard.core.console import ConsoleSession
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import ui_sessions

__all__ = ["SqlConsoleSessionStore"]

_t = ui_sessions


class SqlConsoleSessionStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, session: ConsoleSession) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(_t).values(
                id_digest=session.id_digest, key_digest=session.key_digest, csrf_token=session.csrf_token,
                created_at=session.created_at, last_seen_at=session.last_seen_at, expires_at=session.expires_at))

    async def get(self, id_digest: str) -> ConsoleSession | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(_t).where(_t.c.id_digest == id_digest))).mappings().first()
        if row is None:
            return None
        return ConsoleSession(id_digest=row["id_digest"], key_digest=row["key_digest"], csrf_token=row["csrf_token"],
                              created_at=row["created_at"], last_seen_at=row["last_seen_at"],
                              expires_at=row["expires_at"])

    async def seen(self, id_digest: str, at: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.update(_t).where(_t.c.id_digest == id_digest).values(last_seen_at=at))

    async def delete(self, id_digest: str) -> bool:
        async with self._engine.begin() as conn:
            return bool((await conn.execute(sa.delete(_t).where(_t.c.id_digest == id_digest))).rowcount)

    async def prune(self, now: datetime) -> int:
        async with self._engine.begin() as conn:
            return int((await conn.execute(sa.delete(_t).where(_t.c.expires_at <= now))).rowcount)
