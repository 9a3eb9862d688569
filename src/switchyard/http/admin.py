"""/admin/keys: create (the secret is shown once), list, get, revoke, rotate. Admin keys only."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchyard import __version__
from switchyard.core.keys import ApiKey, NewKey, Principal
from switchyard.errors import BadRequestError
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services

__all__ = ["create_key", "get_key", "key_json", "list_keys", "revoke_key", "rotate_key", "status", "upstreams"]


_EVERYONE = Principal(key_id=None, name="status", is_admin=True)


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    admin: bool = False
    models: list[str] | None = None
    expires_at: datetime | None = None


def key_json(key: ApiKey) -> dict[str, Any]:
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
    }


def _secret_json(new: NewKey) -> dict[str, Any]:
    return {**key_json(new.key), "key": new.secret}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def create_key(request: Request) -> Response:
    await require_admin(request)
    svc = services(request)
    try:
        spec = CreateKey.model_validate(await read_json(request, svc.settings.max_body_bytes))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequestError(f"Invalid request: {param}: {err['msg']}", param=param) from None
    new = await svc.keys.create(spec.name, is_admin=spec.admin, allowed_models=spec.models,
                                expires_at=spec.expires_at)
    return _json(_secret_json(new), 201)


async def list_keys(request: Request) -> Response:
    await require_admin(request)
    include = request.query_params.get("include_revoked", "false").lower() in ("1", "true", "yes")
    keys = await services(request).keys.list(include_revoked=include)
    return _json({"object": "list", "data": [key_json(k) for k in keys]})


async def get_key(request: Request) -> Response:
    await require_admin(request)
    return _json(key_json(await services(request).keys.get(request.path_params["key_id"])))


async def revoke_key(request: Request) -> Response:
    await require_admin(request)
    key_id = request.path_params["key_id"]
    await services(request).keys.revoke(key_id)
    return _json({"id": key_id, "object": "api_key", "revoked": True})


async def rotate_key(request: Request) -> Response:
    await require_admin(request)
    new = await services(request).keys.rotate(request.path_params["key_id"])
    return _json(_secret_json(new))


async def upstreams(request: Request) -> Response:
    """GET /admin/upstreams: reachability, models and (Ollama) loaded models of each upstream."""
    await require_admin(request)
    return _json({"object": "list", "data": await services(request).gateway.upstream_status()})


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
        "in_flight": svc.gateway.in_flight,
        "models": [t.alias for t in svc.gateway.models_for(_EVERYONE)],
        "upstreams": await svc.gateway.upstream_status(),
        "recent_errors": list(svc.gateway.recent_errors)[::-1],
    })
