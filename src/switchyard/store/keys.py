"""API keys in SQL: the ``KeyStore`` port."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from switchyard.core.keys import ApiKey
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import UtcDateTime, api_keys
from switchyard.store.teams import (
    budget_from_columns,
    limits_from_json,
    limits_to_json,
    model_limits_from_json,
    model_limits_to_json,
)

__all__ = ["SqlKeyStore"]

_t = api_keys

# One statement, run as an executemany for a whole ``touch`` batch. Bind names must not
# clash with column names in an UPDATE, hence the ``b_`` prefix.
_TOUCH = (
    sa.update(_t)
    .where(_t.c.id == sa.bindparam("b_id"))
    .values(
        use_count=_t.c.use_count + sa.bindparam("b_count", type_=sa.BigInteger()),
        last_used_at=sa.case(
            (
                sa.or_(
                    _t.c.last_used_at.is_(None),
                    _t.c.last_used_at < sa.bindparam("b_last", type_=UtcDateTime()),
                ),
                sa.bindparam("b_last", type_=UtcDateTime()),
            ),
            else_=_t.c.last_used_at,
        ),
    )
)


def _to_row(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "key_hash": key.key_hash,
        "created_at": key.created_at,
        "updated_at": key.revoked_at or key.created_at,
        "last_used_at": key.last_used_at,
        "use_count": key.use_count,
        "expires_at": key.expires_at,
        "active": key.active,
        "allowed_models": None if key.allowed_models is None else builtins.list(key.allowed_models),
        "is_admin": key.is_admin,
        "revoked_at": key.revoked_at,
        **_owner_columns(key),
    }


def _owner_columns(key: ApiKey) -> dict[str, Any]:
    """Owners, limits and budget: what ``update`` may change besides name, scope and expiry."""
    return {
        "user_id": key.user_id,
        "team_id": key.team_id,
        "limits": limits_to_json(key.limits),
        "model_limits": model_limits_to_json(key.model_limits),
        "budget_usd": key.budget.amount_usd if key.budget is not None else None,
        "budget_period": key.budget.period if key.budget is not None else None,
    }


def _from_row(row: Mapping[Any, Any]) -> ApiKey:
    allowed = row["allowed_models"]
    return ApiKey(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        created_at=row["created_at"],
        is_admin=bool(row["is_admin"]),
        active=bool(row["active"]),
        allowed_models=None if allowed is None else tuple(str(m) for m in allowed),
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        use_count=int(row["use_count"]),
        revoked_at=row["revoked_at"],
        user_id=row["user_id"],
        team_id=row["team_id"],
        limits=limits_from_json(row["limits"]),
        model_limits=model_limits_from_json(row["model_limits"]),
        budget=budget_from_columns(row["budget_usd"], row["budget_period"]),
    )


class SqlKeyStore:
    """``KeyStore`` over SQLAlchemy Core; one code path for SQLite and PostgreSQL.

    ``updated_at`` is set from the caller's timestamps (``created_at`` on add, ``at`` on
    revoke and rotate) and drives :meth:`changed_since`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, key: ApiKey) -> None:
        """Insert a key; a duplicate id or key_hash raises ``sqlalchemy.exc.IntegrityError``."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(_t).values(_to_row(key)))

    async def _select(self, stmt: sa.Select[Any]) -> builtins.list[ApiKey]:
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_from_row(row) for row in result.mappings()]

    async def _one(self, where: sa.ColumnElement[bool]) -> ApiKey | None:
        found = await self._select(sa.select(_t).where(where))
        return found[0] if found else None

    async def get(self, key_id: str) -> ApiKey | None:
        return await self._one(_t.c.id == key_id)

    async def find_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self._one(_t.c.key_hash == key_hash)

    async def list(self, *, include_revoked: bool = False) -> builtins.list[ApiKey]:
        stmt = sa.select(_t).order_by(_t.c.created_at, _t.c.id)
        if not include_revoked:
            stmt = stmt.where(_t.c.revoked_at.is_(None))
        return await self._select(stmt)

    async def _update(self, key_id: str, values: dict[str, Any]) -> bool:
        stmt = sa.update(_t).where(_t.c.id == key_id, _t.c.revoked_at.is_(None)).values(values)
        async with self._engine.begin() as conn:
            result = await conn.execute(stmt)
            return result.rowcount > 0

    async def revoke(self, key_id: str, at: datetime) -> bool:
        """Deactivate a key. False if it does not exist or is already revoked."""
        return await self._update(key_id, {"active": False, "revoked_at": at, "updated_at": at})

    async def replace_secret(self, key_id: str, prefix: str, key_hash: str, at: datetime) -> bool:
        """Rotate a key's secret. False if it does not exist or is revoked."""
        return await self._update(key_id, {"prefix": prefix, "key_hash": key_hash, "updated_at": at})

    async def update(self, key: ApiKey, at: datetime) -> bool:
        """Write a key's name, models, expiry, owners, limits and budget. False if it does not
        exist or is revoked (never its secret, admin flag or use counters)."""
        values = {
            "name": key.name,
            "allowed_models": None if key.allowed_models is None else builtins.list(key.allowed_models),
            "expires_at": key.expires_at,
            **_owner_columns(key),
            "updated_at": at,
        }
        return await self._update(key.id, values)

    async def changed_since(self, since: datetime) -> builtins.list[ApiKey]:
        stmt = sa.select(_t).where(_t.c.updated_at > since).order_by(_t.c.updated_at, _t.c.id)
        return await self._select(stmt)

    async def count(self) -> int:
        async with self._engine.connect() as conn:
            total = await conn.scalar(sa.select(sa.func.count()).select_from(_t))
            return int(total or 0)

    async def touch(self, uses: dict[str, tuple[int, datetime]]) -> None:
        """Add use counts and keep the latest last-used time, for a whole batch at once."""
        if not uses:
            return
        params = [
            {"b_id": key_id, "b_count": count, "b_last": last}
            for key_id, (count, last) in sorted(uses.items())
        ]
        async with self._engine.begin() as conn:
            await conn.execute(_TOUCH, params)
