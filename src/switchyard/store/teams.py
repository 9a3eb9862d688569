"""Teams in SQL, and the JSON form of limits and budgets shared with the key store.

Limits are stored as a JSON object of the limits that are set (``{"rpm": 60, "tpm": 10000}``);
no limit at all is SQL NULL. A budget is two columns: ``budget_usd`` and ``budget_period``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa

from switchyard.core.keys import DuplicateTeamError, Team
from switchyard.core.limits import Budget, BudgetPeriod, RateLimits
from switchyard.store.engine import AsyncEngine
from switchyard.store.tables import api_keys, teams

__all__ = [
    "DuplicateTeamError",
    "SqlTeamStore",
    "budget_from_columns",
    "limits_from_json",
    "limits_to_json",
    "model_limits_from_json",
    "model_limits_to_json",
]

_t = teams
_LIMIT_FIELDS = tuple(f.name for f in fields(RateLimits))
_PERIODS: tuple[BudgetPeriod, ...] = ("daily", "monthly", "total")


def limits_to_json(limits: RateLimits | None) -> dict[str, int] | None:
    """The limits that are set; None when none is (stored as SQL NULL)."""
    if limits is None:
        return None
    out = {name: getattr(limits, name) for name in _LIMIT_FIELDS if getattr(limits, name) is not None}
    return out or None


def limits_from_json(raw: Any) -> RateLimits | None:
    if not isinstance(raw, Mapping):
        return None
    values = {name: int(raw[name]) for name in _LIMIT_FIELDS if raw.get(name) is not None}
    return RateLimits(**values) if values else None


def model_limits_to_json(model_limits: Mapping[str, RateLimits]) -> dict[str, dict[str, int]] | None:
    out = {alias: js for alias, limits in model_limits.items() if (js := limits_to_json(limits)) is not None}
    return out or None


def model_limits_from_json(raw: Any) -> dict[str, RateLimits]:
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for alias, value in raw.items():
        limits = limits_from_json(value)
        if limits is not None:
            out[str(alias)] = limits
    return out


def budget_from_columns(amount: Any, period: Any) -> Budget | None:
    if amount is None:
        return None
    return Budget(float(amount), cast(BudgetPeriod, period) if period in _PERIODS else "monthly")


def _to_row(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "limits": limits_to_json(team.limits),
        "budget_usd": team.budget.amount_usd if team.budget is not None else None,
        "budget_period": team.budget.period if team.budget is not None else None,
        "created_at": team.created_at,
        "updated_at": team.updated_at,
    }


def _from_row(row: Mapping[Any, Any]) -> Team:
    return Team(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        limits=limits_from_json(row["limits"]),
        budget=budget_from_columns(row["budget_usd"], row["budget_period"]),
    )


class SqlTeamStore:
    """Teams over SQLAlchemy Core; one code path for SQLite and PostgreSQL.

    Lookups take an id or a name (an id wins if a name ever equals another team's id).
    ``updated_at`` drives :meth:`changed_since`, which the key cache polls.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, team: Team) -> None:
        """Insert a team; a name already taken raises :class:`DuplicateTeamError`."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(_t).values(_to_row(team)))
        except sa.exc.IntegrityError:
            raise DuplicateTeamError(team.name) from None

    async def _select(self, stmt: sa.Select[Any]) -> builtins.list[Team]:
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt)
            return [_from_row(row) for row in result.mappings()]

    async def get(self, id_or_name: str) -> Team | None:
        found = await self._select(sa.select(_t).where(sa.or_(_t.c.id == id_or_name, _t.c.name == id_or_name)))
        by_id = [t for t in found if t.id == id_or_name]
        found = by_id or found
        return found[0] if found else None

    async def list(self) -> builtins.list[Team]:
        return await self._select(sa.select(_t).order_by(_t.c.name))

    async def changed_since(self, since: datetime) -> builtins.list[Team]:
        return await self._select(sa.select(_t).where(_t.c.updated_at > since).order_by(_t.c.updated_at, _t.c.id))

    async def update(self, team: Team) -> bool:
        """Write a team's name, limits and budget (and ``updated_at``). False if it is gone;
        a name already taken raises :class:`DuplicateTeamError`."""
        values = _to_row(team)
        del values["id"], values["created_at"]
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(sa.update(_t).where(_t.c.id == team.id).values(values))
        except sa.exc.IntegrityError:
            raise DuplicateTeamError(team.name) from None
        return result.rowcount > 0

    async def remove(self, team_id: str) -> bool:
        """Delete a team that no key (revoked ones aside) belongs to, in one statement so a key
        added to it meanwhile cannot be left pointing at nothing. False if it is gone or in use."""
        k = api_keys
        in_use = sa.exists().where(k.c.team_id == team_id, k.c.revoked_at.is_(None))
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(_t).where(_t.c.id == team_id, ~in_use))
            return result.rowcount > 0

    async def key_counts(self) -> dict[str, int]:
        """Keys not revoked, per team id."""
        k = api_keys
        stmt = (sa.select(k.c.team_id, sa.func.count()).where(k.c.team_id.is_not(None), k.c.revoked_at.is_(None))
                .group_by(k.c.team_id))
        async with self._engine.connect() as conn:
            return {str(team_id): int(n) for team_id, n in (await conn.execute(stmt)).all()}
