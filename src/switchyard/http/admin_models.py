"""/admin/models: list (the file's and the database's, merged), create, get, update, delete. Admin keys only.

``GET /admin/models`` lists every model of the configuration file (``"source": "file"``) and
every stored one (``"source": "database"``); a stored model whose alias the file also defines
is marked ``"shadowed_by_file": true`` with a ``note``: the file wins. ``PUT`` and ``PATCH``
are both partial updates (JSON merge patch: ``null`` removes a field). ``{id}`` is a stored
model's id or alias (GET also finds the file's models by alias). Rate limits are stored and
enforced for every key (``rate_limits_enforced: true``; see docs/governance.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from switchyard.admin.catalog import ModelCatalog
from switchyard.core.models import StoredModel
from switchyard.errors import NotFoundError, ServiceUnavailableError
from switchyard.http.audit import admin_actor
from switchyard.http.auth import require_admin
from switchyard.http.body import read_json
from switchyard.http.state import services
from switchyard.protocol.admin.models import spec_of
from switchyard.service.routing import display_url
from switchyard.settings import ModelConfig

__all__ = ["create_model", "delete_model", "get_model", "list_models", "update_model"]

_SETTINGS_DEFAULTS: dict[str, Any] = {"timeout": None, "max_concurrent": None, "max_queue": None,
                                      "queue_timeout": None, "drop_params": [], "fallbacks": [],
                                      "context_window_fallbacks": []}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _per_1k(per_1m: float | None) -> float | None:
    return None if per_1m is None else round(per_1m / 1000, 12)


def _catalog(request: Request) -> ModelCatalog:
    catalog = services(request).catalog
    if catalog is None:
        raise ServiceUnavailableError("The model catalog is not running.")
    return catalog


def file_model_json(model: ModelConfig) -> dict[str, Any]:
    """A file model in the API record's shape (never its api_key)."""
    caps = dict(model.capabilities)
    max_tokens = caps.pop("context_length", None)
    streaming = caps.pop("streaming", True)
    settings: dict[str, Any] = {k: getattr(model, k) for k, default in _SETTINGS_DEFAULTS.items()
                                if getattr(model, k) != default}
    if caps:
        settings["capabilities"] = caps
    if model.deployments:
        settings["routing"] = model.routing
        settings["deployments"] = [
            {"provider": d.provider, "model": d.model, "weight": d.weight, "credential": d.credential,
             "base_url": display_url(d.base_url) if d.base_url else None}
            for d in model.deployments
        ]
    return {
        "id": None,
        "object": "model_config",
        "source": "file",
        "alias": model.alias,
        "provider": model.provider,
        "model": model.upstream_model,
        "base_url": display_url(model.base_url) if model.base_url else None,
        "credential": model.credential,
        "max_tokens": max_tokens,
        "supports_streaming": streaming is not False,
        "default_temperature": model.default_temperature,
        "hosted_tools": model.hosted_tools,
        "rate_limits": None,
        "rate_limits_enforced": True,
        "input_cost_per_1k": _per_1k(model.input_cost_per_1m),
        "output_cost_per_1k": _per_1k(model.output_cost_per_1m),
        "input_cost_per_1m": model.input_cost_per_1m,
        "output_cost_per_1m": model.output_cost_per_1m,
        "cache_read_cost_per_1m": model.cache_read_cost_per_1m,
        "cache_write_cost_per_1m": model.cache_write_cost_per_1m,
        "provider_settings": settings,
        "default": False,
        "active": model.enabled,
        "shadowed_by_file": False,
        "status": "serving" if model.enabled else "inactive",
        "note": None,
        "created_at": None,
        "updated_at": None,
    }


def stored_model_json(catalog: ModelCatalog, row: StoredModel) -> dict[str, Any]:
    """A stored model as the API shows it, with what this replica makes of it."""
    status, reason = catalog.status(row)
    out: dict[str, Any] = {"id": row.id, "object": "model_config", "source": "database", "alias": row.alias}
    try:
        spec = spec_of(row)
    except ValidationError:  # a damaged row: show what is there
        out.update(row.config)
    else:
        out.update({
            "provider": spec.provider,
            "model": spec.model or spec.alias,
            "base_url": display_url(spec.base_url) if spec.base_url else None,
            "credential": spec.credential,
            "max_tokens": spec.max_tokens,
            "supports_streaming": spec.supports_streaming,
            "default_temperature": spec.default_temperature,
            "hosted_tools": spec.hosted_tools,
            "rate_limits": spec.rate_limits.model_dump() if spec.rate_limits is not None else None,
            "rate_limits_enforced": True,
            "input_cost_per_1k": _per_1k(spec.input_cost_per_1m),
            "output_cost_per_1k": _per_1k(spec.output_cost_per_1m),
            "input_cost_per_1m": spec.input_cost_per_1m,
            "output_cost_per_1m": spec.output_cost_per_1m,
            "cache_read_cost_per_1m": spec.cache_read_cost_per_1m,
            "cache_write_cost_per_1m": spec.cache_write_cost_per_1m,
            "provider_settings": spec.provider_settings.model_dump(exclude_defaults=True),
        })
    out.update({
        "default": row.is_default,
        "active": row.active,
        "shadowed_by_file": status == "shadowed_by_file",
        "status": status,
        "note": reason,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    })
    return out


async def list_models(request: Request) -> Response:
    await require_admin(request)
    catalog = _catalog(request)
    data = [file_model_json(m) for m in catalog.file_models]
    data += [stored_model_json(catalog, row) for row in await catalog.list()]
    return _json({"object": "list", "default": catalog.default_alias, "data": data})


async def get_model(request: Request) -> Response:
    """A stored model by id or alias, else the file's model of that alias."""
    await require_admin(request)
    catalog = _catalog(request)
    ident = request.path_params["model_id"]
    row = await catalog.find(ident)
    if row is not None:
        return _json(stored_model_json(catalog, row))
    model = catalog.file_model(ident)
    if model is not None:
        return _json(file_model_json(model))
    raise NotFoundError(f"No model with id or alias '{ident}'.", param="id")


async def create_model(request: Request) -> Response:
    actor = await admin_actor(request)
    catalog = _catalog(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    row = await catalog.create(body, actor=actor)
    return _json(stored_model_json(catalog, row), 201)


async def update_model(request: Request) -> Response:
    actor = await admin_actor(request)
    catalog = _catalog(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    row = await catalog.update(request.path_params["model_id"], body, actor=actor)
    return _json(stored_model_json(catalog, row))


async def delete_model(request: Request) -> Response:
    actor = await admin_actor(request)
    row = await _catalog(request).delete(request.path_params["model_id"], actor=actor)
    return _json({"id": row.id, "object": "model_config", "alias": row.alias, "deleted": True})
