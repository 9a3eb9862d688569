"""Teams: a name, limits and a budget shared by the team's keys.

A key's own limits and its team's both apply (each is its own counter), so the tighter one
is what a request meets. Changes go to the key cache at once in this process, and reach other
replicas with the key cache's next refresh.

A team that keys (not revoked) still belong to cannot be deleted: move or revoke them first.

:class:`TeamService` applies changes given as values; :class:`TeamAdmin` is what the edges call:
it takes the admin API's JSON (``TeamSpec``, a merge patch), applies it and records the action in
the audit log.
"""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from switchyard.admin.audit import Actor, AuditLog
from switchyard.core.keys import DuplicateTeamError, Team
from switchyard.core.limits import Budget, RateLimits
from switchyard.core.ports import TeamStore
from switchyard.errors import BadRequestError, NotFoundError
from switchyard.protocol.admin import TeamSpec, merge_patch, rate_limits, team_settings_json, validate
from switchyard.service.keys import KeyService

__all__ = ["TeamAdmin", "TeamService"]

_UPDATABLE = frozenset({"name", "limits", "budget"})


def _now() -> datetime:
    return datetime.now(UTC)


def _duplicate(name: str) -> BadRequestError:
    return BadRequestError(f"A team named '{name}' already exists.", param="name", code="duplicate_name")


class TeamService:
    def __init__(self, store: TeamStore, keys: KeyService, clock: Callable[[], datetime] = _now) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    async def create(self, name: str, *, limits: RateLimits | None = None, budget: Budget | None = None) -> Team:
        if name.startswith("team_"):
            raise BadRequestError("A team name may not start with 'team_' (team ids do).", param="name")
        now = self._clock()
        team = Team(id="team_" + secrets.token_hex(8), name=name, created_at=now, updated_at=now,
                    limits=limits, budget=budget)
        try:
            await self._store.add(team)
        except DuplicateTeamError:
            raise _duplicate(name) from None
        self._keys.team_changed(team)
        return team

    async def get(self, id_or_name: str) -> Team:
        team = await self._store.get(id_or_name)
        if team is None:
            raise NotFoundError(f"No team with id or name '{id_or_name}'.", param="team")
        return team

    async def list(self) -> list[Team]:
        return await self._store.list()

    async def key_counts(self) -> dict[str, int]:
        """Keys (not revoked) per team id."""
        return await self._store.key_counts()

    async def update(self, id_or_name: str, **changes: Any) -> Team:
        """Change a team's ``name``, ``limits`` or ``budget`` (None removes limits or budget)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        team = await self.get(id_or_name)
        name = changes.get("name", team.name)
        if name != team.name and name.startswith("team_"):
            raise BadRequestError("A team name may not start with 'team_' (team ids do).", param="name")
        updated = replace(team, **changes, updated_at=max(self._clock(), team.updated_at))
        try:
            found = await self._store.update(updated)
        except DuplicateTeamError:
            raise _duplicate(name) from None
        if not found:
            raise NotFoundError(f"No team with id or name '{id_or_name}'.", param="team")
        self._keys.team_changed(updated)
        return updated

    async def delete(self, id_or_name: str) -> Team:
        team = await self.get(id_or_name)
        if not await self._store.remove(team.id):
            count = (await self._store.key_counts()).get(team.id, 0)
            if count:
                raise BadRequestError(
                    f"Team '{team.name}' still has {count} key{'s' if count != 1 else ''}: move or revoke "
                    "them first.", param="team", code="team_has_keys",
                )
            raise NotFoundError(f"No team with id or name '{id_or_name}'.", param="team")
        self._keys.team_removed(team.id)
        return team


class TeamAdmin:
    """Teams for the edges: JSON in, validated, applied, and recorded in the audit log."""

    def __init__(self, teams: TeamService, audit: AuditLog) -> None:
        self._teams = teams
        self._audit = audit

    async def get(self, id_or_name: str) -> Team:
        return await self._teams.get(id_or_name)

    async def list(self) -> builtins.list[Team]:
        return await self._teams.list()

    async def key_counts(self) -> dict[str, int]:
        return await self._teams.key_counts()

    async def create(self, body: Any, *, actor: Actor) -> Team:
        """A team from a ``TeamSpec`` body; the entry records the validated body."""
        spec = validate(TeamSpec, body)
        team = await self._teams.create(spec.name, limits=rate_limits(spec.limits),
                                        budget=spec.budget.budget() if spec.budget else None)
        self._audit.action(actor, "team.create", "team", team.id, spec.model_dump(mode="json", exclude_none=True))
        return team

    async def update(self, id_or_name: str, patch: Any, *, actor: Actor, merge: bool = True) -> Team:
        """A JSON merge patch of ``TeamSpec`` (null removes a limit or the budget); with ``merge=False``
        each field it names is replaced whole. The entry records the patch."""
        if not isinstance(patch, dict):
            raise BadRequestError("The request body must be a JSON object (a merge patch).")
        for name in patch:
            if name not in TeamSpec.model_fields:
                raise BadRequestError(f"Unknown field '{name}'; a team has {sorted(TeamSpec.model_fields)}.",
                                      param=name)
        if "name" in patch and patch["name"] is None:
            raise BadRequestError("A team's name cannot be removed.", param="name")
        team = await self._teams.get(id_or_name)
        spec = validate(TeamSpec, merge_patch(team_settings_json(team), patch, merge=merge))
        changes: dict[str, Any] = {}
        if "name" in patch:
            changes["name"] = spec.name
        if "limits" in patch:
            changes["limits"] = rate_limits(spec.limits)
        if "budget" in patch:
            changes["budget"] = spec.budget.budget() if spec.budget else None
        updated = await self._teams.update(team.id, **changes)
        self._audit.action(actor, "team.update", "team", team.id, patch)
        return updated

    async def delete(self, id_or_name: str, *, actor: Actor) -> Team:
        team = await self._teams.delete(id_or_name)
        self._audit.action(actor, "team.delete", "team", team.id, {"name": team.name})
        return team
