"""/admin/teams: list, create, get, update, delete (by id or name). Admin keys only.

A team has a unique ``name``, ``limits`` (``{rpm, tpm, rph, rpd, max_parallel}``, each a
positive integer or absent) and a ``budget`` (``{amount_usd, period}``, period ``daily``,
``monthly`` (default) or ``total``). ``GET /admin/teams/{id}`` of a team with a budget also
gives ``budget_status``: the current period's start and end, ``spent_usd`` by the team's keys
(revoked ones included) and ``remaining_usd``, from the usage rollups. Limits and budget apply
to the team's keys together, beside each key's own: the tighter one is what a request meets.
``PATCH`` is a JSON merge patch (``null`` removes a limit or the budget). ``DELETE`` refuses
(400, ``team_has_keys``) while keys that are not revoked belong to the team.

Also here: the request models for limits and budgets that /admin/keys uses as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.keys import Team
from switchyard.core.limits import Budget, RateLimits
from switchyard.errors import BadRequestError, ServiceUnavailableError
from switchyard.http.audit import record
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.limits.budgets import budget_status
from switchyard.service.teams import TeamService
from switchyard.settings import RateLimitConfig
from switchyard.store.teams import limits_to_json

__all__ = [
    "BudgetSpec",
    "budget_json",
    "create_team",
    "delete_team",
    "get_team",
    "list_teams",
    "merge_patch",
    "rate_limits",
    "team_json",
    "update_team",
    "validate",
]

M = TypeVar("M", bound=BaseModel)


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_usd: float = Field(ge=0, description="USD that may be spent per period.")
    period: Literal["daily", "monthly", "total"] = "monthly"

    @field_validator("amount_usd")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def budget(self) -> Budget:
        return Budget(self.amount_usd, self.period)


class TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    limits: RateLimitConfig | None = None
    budget: BudgetSpec | None = None


def rate_limits(spec: RateLimitConfig | None) -> RateLimits | None:
    """None when no limit is set."""
    if spec is None:
        return None
    values = {k: v for k, v in spec.model_dump().items() if v is not None}
    return RateLimits(**values) if values else None


def budget_json(budget: Budget | None) -> dict[str, Any] | None:
    return None if budget is None else {"amount_usd": budget.amount_usd, "period": budget.period}


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a field."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = value
    return out


def validate(model: type[M], body: Any) -> M:
    """``model`` from a JSON body, or a 400 naming the first bad field (``limits.rpm``)."""
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequestError(f"Invalid request: {param}: {err['msg']}", param=param) from None


def team_json(team: Team, keys: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": team.id,
        "object": "team",
        "name": team.name,
        "limits": limits_to_json(team.limits),
        "budget": budget_json(team.budget),
        "created_at": team.created_at.isoformat(),
        "updated_at": team.updated_at.isoformat(),
    }
    if keys is not None:
        out["keys"] = keys
    return out


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _teams(request: Request) -> TeamService:
    teams = services(request).teams
    if teams is None:
        raise ServiceUnavailableError("Teams are not available in this server.")
    return teams


async def list_teams(request: Request) -> Response:
    await require_admin(request)
    teams = _teams(request)
    counts = await teams.key_counts()
    return _json({"object": "list", "data": [team_json(t, counts.get(t.id, 0)) for t in await teams.list()]})


async def create_team(request: Request) -> Response:
    principal = await require_admin(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    spec = validate(TeamSpec, body)
    team = await _teams(request).create(spec.name, limits=rate_limits(spec.limits),
                                        budget=spec.budget.budget() if spec.budget else None)
    record(request, principal, "team.create", "team", team.id, spec.model_dump(mode="json", exclude_none=True))
    return _json(team_json(team, 0), 201)


async def get_team(request: Request) -> Response:
    await require_admin(request)
    teams = _teams(request)
    team = await teams.get(request.path_params["team_id"])
    body = team_json(team, (await teams.key_counts()).get(team.id, 0))
    spent = services(request).spent
    if team.budget is not None and spent is not None:
        body["budget_status"] = await budget_status(spent, f"team:{team.id}", team.budget)
    return _json(body)


async def update_team(request: Request) -> Response:
    principal = await require_admin(request)
    teams = _teams(request)
    patch = await read_json(request, services(request).settings.max_body_bytes)
    if not isinstance(patch, dict):
        raise BadRequestError("The request body must be a JSON object (a merge patch).")
    for name in patch:
        if name not in TeamSpec.model_fields:
            raise BadRequestError(f"Unknown field '{name}'; a team has {sorted(TeamSpec.model_fields)}.", param=name)
    if "name" in patch and patch["name"] is None:
        raise BadRequestError("A team's name cannot be removed.", param="name")
    team = await teams.get(request.path_params["team_id"])
    current = {"name": team.name, "limits": limits_to_json(team.limits), "budget": budget_json(team.budget)}
    spec = validate(TeamSpec, merge_patch({k: v for k, v in current.items() if v is not None}, patch))
    changes: dict[str, Any] = {}
    if "name" in patch:
        changes["name"] = spec.name
    if "limits" in patch:
        changes["limits"] = rate_limits(spec.limits)
    if "budget" in patch:
        changes["budget"] = spec.budget.budget() if spec.budget else None
    updated = await teams.update(team.id, **changes)
    record(request, principal, "team.update", "team", team.id, patch)
    return _json(team_json(updated, (await teams.key_counts()).get(team.id, 0)))


async def delete_team(request: Request) -> Response:
    principal = await require_admin(request)
    team = await _teams(request).delete(request.path_params["team_id"])
    record(request, principal, "team.delete", "team", team.id, {"name": team.name})
    return _json({"id": team.id, "object": "team", "name": team.name, "deleted": True})
