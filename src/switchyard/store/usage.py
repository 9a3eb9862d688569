"""Usage records in SQL: the ``UsageStore`` port."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.core.usage import UsageRecord
from switchyard.store.tables import usage_records

__all__ = ["SqlUsageStore"]

_u = usage_records


def _count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


_FIELDS = tuple(f.name for f in fields(UsageRecord))


class SqlUsageStore:
    """``UsageStore`` over SQLAlchemy Core; one code path for SQLite and PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, records: Sequence[UsageRecord]) -> None:
        """Insert a batch in one transaction (a single executemany)."""
        if not records:
            return
        async with self._engine.begin() as conn:
            # a plain field read: dataclasses.asdict deep-copies and costs ~20x more per row
            await conn.execute(sa.insert(_u), [{f: getattr(r, f) for f in _FIELDS} for r in records])

    async def summary(self, since: datetime | None = None) -> list[dict[str, object]]:
        """Per key and model: requests, prompt/completion tokens, errors and estimated rows.

        Rows are ordered by key_id (the keyless row first) then model.
        """
        stmt = (
            sa.select(
                _u.c.key_id,
                _u.c.model,
                sa.func.count().label("requests"),
                sa.func.coalesce(sa.func.sum(_u.c.prompt_tokens), 0).label("prompt_tokens"),
                sa.func.coalesce(sa.func.sum(_u.c.completion_tokens), 0).label("completion_tokens"),
                _count_where(_u.c.status >= 400).label("errors"),
                _count_where(_u.c.estimated.is_(True)).label("estimated"),
            )
            .group_by(_u.c.key_id, _u.c.model)
            .order_by(_u.c.key_id.nulls_first(), _u.c.model)
        )
        if since is not None:
            stmt = stmt.where(_u.c.created_at >= since)
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return [
                {
                    "key_id": row.key_id,
                    "model": row.model,
                    "requests": int(row.requests),
                    "prompt_tokens": int(row.prompt_tokens),
                    "completion_tokens": int(row.completion_tokens),
                    "errors": int(row.errors),
                    "estimated": int(row.estimated),
                }
                for row in result
            ]

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
