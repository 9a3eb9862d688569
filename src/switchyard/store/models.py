"""Model configurations in SQL (managed over /admin/models): the ``ModelStore`` port.

Change detection for replicas: every write (create, update, delete) takes a new ``revision``
= max + 1 under a unique index, so :meth:`SqlModelStore.revision` (one index read) changes
whenever anything changed. Deletions leave a tombstone (alias NULL, ``deleted_at`` set) so the
maximum never goes back; older tombstones are purged on each delete, keeping at most one.
On PostgreSQL writers take turns (a transaction advisory lock); on SQLite, whose writes are
serialised anyway, two writers that still pick the same revision collide on the unique index
and the loser retries.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import secrets
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from switchyard.core.models import DuplicateAliasError, StoredModel
from switchyard.store.engine import AsyncConnection, AsyncEngine
from switchyard.store.tables import model_configs

__all__ = ["DuplicateAliasError", "SqlModelStore", "StoredModel"]

_t = model_configs
_T = TypeVar("_T")
_RETRIES = 8
_PG_WRITE_LOCK = 0x5357_4D43  # "SWMC": serialises model writes on PostgreSQL
_NEXT_REVISION = sa.select(sa.func.coalesce(sa.func.max(_t.c.revision), 0) + 1)
_LIVE = _t.c.deleted_at.is_(None)


def _from_row(row: Mapping[Any, Any]) -> StoredModel:
    return StoredModel(
        id=row["id"],
        alias=row["alias"],
        config=dict(row["config"]),
        active=bool(row["active"]),
        is_default=bool(row["is_default"]),
        revision=int(row["revision"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class SqlModelStore:
    """Stored model configurations over SQLAlchemy Core; one code path for SQLite and PostgreSQL.

    At most one live row has ``is_default``: setting it clears it on the others in the same
    transaction.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # -- reads ---------------------------------------------------------------------------
    async def _select(self, where: sa.ColumnElement[bool]) -> builtins.list[StoredModel]:
        stmt = sa.select(_t).where(_LIVE, where).order_by(_t.c.created_at, _t.c.id)
        async with self._engine.connect() as conn:
            return [_from_row(row) for row in (await conn.execute(stmt)).mappings()]

    async def get(self, model_id: str) -> StoredModel | None:
        found = await self._select(_t.c.id == model_id)
        return found[0] if found else None

    async def get_by_alias(self, alias: str) -> StoredModel | None:
        found = await self._select(_t.c.alias == alias)
        return found[0] if found else None

    async def list(self) -> builtins.list[StoredModel]:
        """Every live model, oldest first."""
        return await self._select(sa.true())

    async def revision(self) -> int:
        """The change marker: grows with every create, update and delete (0: never written)."""
        async with self._engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.coalesce(sa.func.max(_t.c.revision), 0))) or 0)

    # -- writes --------------------------------------------------------------------------
    async def _alias_taken(self, conn: AsyncConnection, alias: str, model_id: str) -> bool:
        stmt = sa.select(_t.c.id).where(_t.c.alias == alias, _t.c.id != model_id)
        return (await conn.scalar(stmt)) is not None

    async def _write(
        self, alias: str | None, model_id: str, work: Callable[[AsyncConnection, int], Awaitable[_T]]
    ) -> _T:
        """Run ``work(conn, revision)`` in a transaction, retrying when another writer took the revision."""
        for attempt in range(_RETRIES):
            try:
                async with self._engine.begin() as conn:
                    if conn.dialect.name == "postgresql":  # writers (replicas) take turns: no revision clashes
                        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_WRITE_LOCK})
                    if alias is not None and await self._alias_taken(conn, alias, model_id):
                        raise DuplicateAliasError(alias)
                    revision = int(await conn.scalar(_NEXT_REVISION) or 1)
                    return await work(conn, revision)
            except sa.exc.IntegrityError:
                if alias is not None:
                    async with self._engine.connect() as conn:
                        if await self._alias_taken(conn, alias, model_id):
                            raise DuplicateAliasError(alias) from None
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # jitter
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _clear_default(conn: AsyncConnection, keep: str) -> None:
        await conn.execute(sa.update(_t).where(_t.c.is_default, _t.c.id != keep).values(is_default=False))

    async def add(
        self,
        alias: str,
        config: Mapping[str, Any],
        *,
        at: datetime,
        active: bool = True,
        is_default: bool = False,
        model_id: str | None = None,
    ) -> StoredModel:
        """Insert a model; raises :class:`DuplicateAliasError` if a live one has the alias."""
        new_id = model_id or "mdl_" + secrets.token_hex(8)

        async def work(conn: AsyncConnection, revision: int) -> StoredModel:
            row = {"id": new_id, "alias": alias, "config": dict(config), "active": active,
                   "is_default": is_default, "revision": revision, "created_at": at, "updated_at": at,
                   "deleted_at": None}
            await conn.execute(sa.insert(_t).values(row))
            if is_default:
                await self._clear_default(conn, new_id)
            return _from_row(row)

        return await self._write(alias, new_id, work)

    async def update(
        self,
        model_id: str,
        *,
        alias: str,
        config: Mapping[str, Any],
        active: bool,
        is_default: bool,
        at: datetime,
    ) -> StoredModel | None:
        """Replace a live model's fields; None if there is none with this id."""

        async def work(conn: AsyncConnection, revision: int) -> StoredModel | None:
            stmt = (
                sa.update(_t)
                .where(_t.c.id == model_id, _LIVE)
                .values(alias=alias, config=dict(config), active=active, is_default=is_default,
                        revision=revision, updated_at=at)
            )
            if (await conn.execute(stmt)).rowcount == 0:
                return None
            if is_default:
                await self._clear_default(conn, model_id)
            row = (await conn.execute(sa.select(_t).where(_t.c.id == model_id))).mappings().one()
            return _from_row(row)

        return await self._write(alias, model_id, work)

    async def delete(self, model_id: str, at: datetime) -> bool:
        """Delete a live model (leaving a tombstone for change detection); False if there is none."""

        async def work(conn: AsyncConnection, revision: int) -> bool:
            stmt = (
                sa.update(_t)
                .where(_t.c.id == model_id, _LIVE)
                .values(alias=None, is_default=False, active=False, revision=revision, updated_at=at,
                        deleted_at=at)
            )
            if (await conn.execute(stmt)).rowcount == 0:
                return False
            await conn.execute(sa.delete(_t).where(_t.c.deleted_at.is_not(None), _t.c.revision < revision))
            return True

        return await self._write(None, model_id, work)
