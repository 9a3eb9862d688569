"""GET /v1/models and GET /v1/models/{id}: only what the key may use."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.capabilities import Capabilities, defaults_for
from switchyard.errors import ModelNotFoundError
from switchyard.http.auth import authenticate
from switchyard.http.state import services
from switchyard.service.routing import LOCAL

if TYPE_CHECKING:
    from switchyard.local.manager import ModelManager

__all__ = ["get_model", "list_models"]


def _model(model_id: str, owner: str, created: int, caps: Capabilities) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner, "capabilities": caps.as_json()}


def _local(model: dict[str, object], manager: ModelManager | None) -> dict[str, object]:
    """A model run in this process: its context length as the engine holds it (or will, from its
    files). The engine checks it exactly with the model's tokenizer, so the gateway does not."""
    if manager is not None and model["id"] in manager:
        caps = model["capabilities"]
        assert isinstance(caps, dict)
        caps["context_length"] = manager.context_length(str(model["id"]))
    return model


async def _visible(request: Request) -> list[dict[str, object]]:
    svc = services(request)
    principal = await authenticate(request)
    created = request.app.state.started_at
    data = [_model(r.alias, r.primary.provider_type, created, r.capabilities)
            for r in svc.gateway.upstreams.models_for(principal)]
    data = [_local(m, svc.models) if m["owned_by"] == LOCAL else m for m in data]
    data += [_model(m, owner, created, defaults_for(owner))
             for m, owner in await svc.gateway.upstreams.discovered_for(principal)]
    return data


async def list_models(request: Request) -> Response:
    return Response(orjson.dumps({"object": "list", "data": await _visible(request)}), media_type="application/json")


async def get_model(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    for model in await _visible(request):
        if model["id"] == model_id:
            return Response(orjson.dumps(model), media_type="application/json")
    raise ModelNotFoundError(model_id)
