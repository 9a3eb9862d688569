"""/admin/keys: create (the secret is shown once), list, get, update, revoke, rotate. Admin keys only.

A key may belong to a ``user`` (any identifier, e.g. an e-mail address) and a ``team`` (its id or
name; shown as its id, with ``team_name``), and may have ``limits`` (``{rpm, tpm, rph, rpd,
max_parallel}``), ``model_limits`` (``{alias or pattern: {...}}``) and a ``budget``
(``{amount_usd, period}``). ``PATCH /admin/keys/{id}`` changes name, models, expires_at, user,
team, limits, model_limits and budget as a JSON merge patch (``null`` removes). Every change is
recorded in the audit log (never a secret).

``GET /admin/keys/{id}`` of a key with a budget also gives ``budget_status``: the current
period's start and end, ``spent_usd`` and ``remaining_usd``. Spend comes from the usage rollups,
which budgets start from: requests still in flight, and rows not yet written (at most
``usage_flush_interval`` old), are not in it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from switchyard import __version__
from switchyard.core.keys import ApiKey, NewKey, Principal
from switchyard.errors import BadRequestError
from switchyard.http.audit import record
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.http.teams import BudgetSpec, budget_json, merge_patch, rate_limits, validate
from switchyard.service.budgets import budget_status
from switchyard.settings import RateLimitConfig
from switchyard.store.teams import limits_to_json, model_limits_to_json

__all__ = [
    "create_key",
    "get_key",
    "key_json",
    "list_keys",
    "revoke_key",
    "rotate_key",
    "status",
    "update_key",
    "upstreams",
]


_EVERYONE = Principal(key_id=None, name="status", is_admin=True)


class KeySettings(BaseModel):
    """What PATCH may change (a key's secret and admin flag are not among it)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = None
    expires_at: datetime | None = None
    user: str | None = Field(default=None, min_length=1, max_length=200)
    team: str | None = Field(default=None, min_length=1, max_length=200)
    limits: RateLimitConfig | None = None
    model_limits: dict[str, RateLimitConfig] | None = None
    budget: BudgetSpec | None = None


class CreateKey(KeySettings):
    admin: bool = False


def _model_limits(spec: KeySettings) -> dict[str, Any]:
    out = {}
    for alias, cfg in (spec.model_limits or {}).items():
        if not alias:
            raise BadRequestError("A model_limits entry needs a model alias or pattern.", param="model_limits")
        limits = rate_limits(cfg)
        if limits is not None:
            out[alias] = limits
    return out


def key_json(key: ApiKey, team_name: str | None = None) -> dict[str, Any]:
    return {
        "id": key.id,
        "object": "api_key",
        "name": key.name,
        "prefix": key.prefix,
        "admin": key.is_admin,
        "models": list(key.allowed_models) if key.allowed_models is not None else None,
        "active": key.active,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
        "use_count": key.use_count,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "user": key.user_id,
        "team": key.team_id,
        "team_name": team_name,
        "limits": limits_to_json(key.limits),
        "model_limits": model_limits_to_json(key.model_limits) or {},
        "budget": budget_json(key.budget),
    }


def _key_json(request: Request, key: ApiKey) -> dict[str, Any]:
    team = services(request).keys.cached_team(key.team_id) if key.team_id is not None else None
    return key_json(key, team.name if team is not None else None)


def _secret_json(request: Request, new: NewKey) -> dict[str, Any]:
    return {**_key_json(request, new.key), "key": new.secret}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def create_key(request: Request) -> Response:
    principal = await require_admin(request)
    svc = services(request)
    spec = validate(CreateKey, await read_json(request, svc.settings.max_body_bytes))
    new = await svc.keys.create(spec.name, is_admin=spec.admin, allowed_models=spec.models,
                                expires_at=spec.expires_at, user_id=spec.user, team=spec.team,
                                limits=rate_limits(spec.limits), model_limits=_model_limits(spec),
                                budget=spec.budget.budget() if spec.budget else None)
    details = spec.model_dump(mode="json", exclude_none=True)
    if new.key.team_id is not None:
        details["team"] = new.key.team_id
    record(request, principal, "key.create", "api_key", new.key.id, details)
    return _json(_secret_json(request, new), 201)


def _settings_json(key: ApiKey) -> dict[str, Any]:
    """A key's changeable settings as KeySettings JSON (absent: not set)."""
    current: dict[str, Any] = {
        "name": key.name,
        "models": list(key.allowed_models) if key.allowed_models is not None else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "user": key.user_id,
        "team": key.team_id,
        "limits": limits_to_json(key.limits),
        "model_limits": model_limits_to_json(key.model_limits),
        "budget": budget_json(key.budget),
    }
    return {k: v for k, v in current.items() if v is not None}


async def update_key(request: Request) -> Response:
    """PATCH /admin/keys/{id}: a JSON merge patch of KeySettings (null removes a setting)."""
    principal = await require_admin(request)
    svc = services(request)
    patch = await read_json(request, svc.settings.max_body_bytes)
    if not isinstance(patch, dict):
        raise BadRequestError("The request body must be a JSON object (a merge patch).")
    for name in patch:
        if name not in KeySettings.model_fields:
            raise BadRequestError(f"Field '{name}' cannot be changed; a key's settings are "
                                  f"{sorted(KeySettings.model_fields)}.", param=name)
    if "name" in patch and patch["name"] is None:
        raise BadRequestError("A key's name cannot be removed.", param="name")
    key_id = request.path_params["key_id"]
    key = await svc.keys.get(key_id)
    spec = validate(KeySettings, merge_patch(_settings_json(key), patch))
    changes: dict[str, Any] = {}
    if "name" in patch:
        changes["name"] = spec.name
    if "models" in patch:
        changes["allowed_models"] = spec.models
    if "expires_at" in patch:
        changes["expires_at"] = spec.expires_at
    if "user" in patch:
        changes["user_id"] = spec.user
    if "team" in patch:
        changes["team_id"] = spec.team
    if "limits" in patch:
        changes["limits"] = rate_limits(spec.limits)
    if "model_limits" in patch:
        changes["model_limits"] = _model_limits(spec)
    if "budget" in patch:
        changes["budget"] = spec.budget.budget() if spec.budget else None
    updated = await svc.keys.update(key_id, **changes)
    details = dict(patch)
    if "team" in patch and updated.team_id is not None:
        details["team"] = updated.team_id
    record(request, principal, "key.update", "api_key", key_id, details)
    return _json(_key_json(request, updated))


async def list_keys(request: Request) -> Response:
    await require_admin(request)
    include = request.query_params.get("include_revoked", "false").lower() in ("1", "true", "yes")
    keys = await services(request).keys.list(include_revoked=include)
    return _json({"object": "list", "data": [_key_json(request, k) for k in keys]})


async def get_key(request: Request) -> Response:
    await require_admin(request)
    svc = services(request)
    key = await svc.keys.get(request.path_params["key_id"])
    body = _key_json(request, key)
    if key.budget is not None and svc.spent is not None:
        body["budget_status"] = await budget_status(svc.spent, f"key:{key.id}", key.budget)
    return _json(body)


async def revoke_key(request: Request) -> Response:
    principal = await require_admin(request)
    key_id = request.path_params["key_id"]
    await services(request).keys.revoke(key_id)
    record(request, principal, "key.revoke", "api_key", key_id)
    return _json({"id": key_id, "object": "api_key", "revoked": True})


async def rotate_key(request: Request) -> Response:
    principal = await require_admin(request)
    new = await services(request).keys.rotate(request.path_params["key_id"])
    record(request, principal, "key.rotate", "api_key", new.key.id)
    return _json(_secret_json(request, new))


async def upstreams(request: Request) -> Response:
    """GET /admin/upstreams: reachability, models and (Ollama) loaded models of each upstream."""
    await require_admin(request)
    return _json({"object": "list", "data": await services(request).gateway.upstreams.status()})


async def status(request: Request) -> Response:
    """GET /admin/status: what `switchyard status` shows about a running server."""
    await require_admin(request)
    svc = services(request)
    started = request.app.state.started_at
    return _json({
        "object": "status",
        "version": __version__,
        "pid": os.getpid(),
        "started_at": started,
        "uptime_s": round(time.time() - started, 1),
        "in_flight": svc.gateway.attempts.in_flight,
        "models": [t.alias for t in svc.gateway.upstreams.models_for(_EVERYONE)],
        "upstreams": await svc.gateway.upstreams.status(),
        "recent_errors": list(svc.gateway.accounting.recent_errors)[::-1],
    })
