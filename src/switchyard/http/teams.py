"""/admin/teams: list, create, get, update, delete (by id or name). Admin keys only.

A team has a unique ``name``, ``limits`` (``{rpm, tpm, rph, rpd, max_parallel}``, each a
positive integer or absent) and a ``budget`` (``{amount_usd, period}``, period ``daily``,
``monthly`` (default) or ``total``). ``GET /admin/teams/{id}`` of a team with a budget also
gives ``budget_status``: the current period's start and end, ``spent_usd`` by the team's keys
(revoked ones included) and ``remaining_usd``, from the usage rollups. Limits and budget apply
to the team's keys together, beside each key's own: the tighter one is what a request meets.
``PATCH`` is a JSON merge patch (``null`` removes a limit or the budget). ``DELETE`` refuses
(400, ``team_has_keys``) while keys that are not revoked belong to the team.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin import TeamAdmin
from switchyard.core.budget_periods import budget_status
from switchyard.core.keys import Team
from switchyard.core.limits import limits_to_json
from switchyard.http.audit import admin_actor, admin_of
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.protocol.admin import budget_json

__all__ = ["create_team", "delete_team", "get_team", "list_teams", "team_json", "update_team"]


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


def _teams(request: Request) -> TeamAdmin:
    return admin_of(request).teams


async def list_teams(request: Request) -> Response:
    await require_admin(request)
    teams = _teams(request)
    counts = await teams.key_counts()
    return _json({"object": "list", "data": [team_json(t, counts.get(t.id, 0)) for t in await teams.list()]})


async def create_team(request: Request) -> Response:
    actor = await admin_actor(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    team = await _teams(request).create(body, actor=actor)
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
    actor = await admin_actor(request)
    teams = _teams(request)
    patch = await read_json(request, services(request).settings.max_body_bytes)
    updated = await teams.update(request.path_params["team_id"], patch, actor=actor)
    return _json(team_json(updated, (await teams.key_counts()).get(updated.id, 0)))


async def delete_team(request: Request) -> Response:
    actor = await admin_actor(request)
    team = await _teams(request).delete(request.path_params["team_id"], actor=actor)
    return _json({"id": team.id, "object": "team", "name": team.name, "deleted": True})
