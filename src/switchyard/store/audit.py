"""The admin audit log in SQL: appended in batches, read newest first with filters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from switchyard.core.audit import AuditEntry
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import audit_log

__all__ = ["AuditEntry", "SqlAuditStore"]

_t = audit_log


def _to_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at,
        "actor_key_id": entry.actor[:64],
        "action": entry.action[:64],
        "object_type": entry.object_type[:32],
        "object_id": entry.object_id[:200] if entry.object_id is not None else None,
        "details": entry.details or None,
        "client_ip": entry.client_ip[:64] if entry.client_ip is not None else None,
        "request_id": entry.request_id[:128] if entry.request_id is not None else None,
    }


def _from_row(row: RowMapping) -> AuditEntry:
    details = row["details"]
    return AuditEntry(
        id=int(row["id"]),
        at=row["at"],
        actor=row["actor_key_id"],
        action=row["action"],
        object_type=row["object_type"],
        object_id=row["object_id"],
        details=dict(details) if isinstance(details, Mapping) else {},
        client_ip=row["client_ip"],
        request_id=row["request_id"],
    )


class SqlAuditStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(_t), [_to_row(e) for e in entries])

    async def query(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        object_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Newest first. ``action`` matches as a prefix (``key.`` finds every key action);
        ``since`` is inclusive, ``until`` exclusive."""
        stmt = sa.select(_t).order_by(_t.c.at.desc(), _t.c.id.desc()).limit(limit)
        if actor is not None:
            stmt = stmt.where(_t.c.actor_key_id == actor)
        if action is not None:
            stmt = stmt.where(_t.c.action.startswith(action, autoescape=True))
        if object_id is not None:
            stmt = stmt.where(_t.c.object_id == object_id)
        if since is not None:
            stmt = stmt.where(_t.c.at >= since)
        if until is not None:
            stmt = stmt.where(_t.c.at < until)
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_from_row(row) for row in result.mappings()]
