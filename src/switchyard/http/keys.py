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

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin import KeyAdmin
from switchyard.core.budget_periods import budget_status
from switchyard.core.keys import ApiKey, NewKey
from switchyard.core.limits import limits_to_json, model_limits_to_json
from switchyard.http.audit import admin_actor, admin_of
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.protocol.admin import budget_json

__all__ = ["create_key", "get_key", "key_json", "list_keys", "revoke_key", "rotate_key", "update_key"]


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


def _keys(request: Request) -> KeyAdmin:
    return admin_of(request).keys


def _key_json(request: Request, key: ApiKey) -> dict[str, Any]:
    return key_json(key, _keys(request).team_name(key))


def _secret_json(request: Request, new: NewKey) -> dict[str, Any]:
    return {**_key_json(request, new.key), "key": new.secret}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def create_key(request: Request) -> Response:
    actor = await admin_actor(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    new = await _keys(request).create(body, actor=actor)
    return _json(_secret_json(request, new), 201)


async def update_key(request: Request) -> Response:
    """PATCH /admin/keys/{id}: a JSON merge patch of KeySettings (null removes a setting)."""
    actor = await admin_actor(request)
    patch = await read_json(request, services(request).settings.max_body_bytes)
    updated = await _keys(request).update(request.path_params["key_id"], patch, actor=actor)
    return _json(_key_json(request, updated))


async def list_keys(request: Request) -> Response:
    await require_admin(request)
    include = request.query_params.get("include_revoked", "false").lower() in ("1", "true", "yes")
    keys = await _keys(request).list(include_revoked=include)
    return _json({"object": "list", "data": [_key_json(request, k) for k in keys]})


async def get_key(request: Request) -> Response:
    await require_admin(request)
    svc = services(request)
    key = await _keys(request).get(request.path_params["key_id"])
    body = _key_json(request, key)
    if key.budget is not None and svc.spent is not None:
        body["budget_status"] = await budget_status(svc.spent, f"key:{key.id}", key.budget)
    return _json(body)


async def revoke_key(request: Request) -> Response:
    actor = await admin_actor(request)
    key_id = request.path_params["key_id"]
    await _keys(request).revoke(key_id, actor=actor)
    return _json({"id": key_id, "object": "api_key", "revoked": True})


async def rotate_key(request: Request) -> Response:
    actor = await admin_actor(request)
    new = await _keys(request).rotate(request.path_params["key_id"], actor=actor)
    return _json(_secret_json(request, new))
