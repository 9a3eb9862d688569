"""GET /v1/models and GET /v1/models/{id}: only what the key may use."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.models import Target
from switchyard.errors import ModelNotFoundError
from switchyard.http.auth import authenticate
from switchyard.http.state import services

__all__ = ["get_model", "list_models"]


def _model(target: Target, created: int) -> dict[str, object]:
    return {"id": target.alias, "object": "model", "created": created, "owned_by": target.provider_type}


async def list_models(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request)
    created = request.app.state.started_at
    data = [_model(t, created) for t in svc.gateway.models_for(principal)]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def get_model(request: Request) -> Response:
    svc = services(request)
    principal = await authenticate(request)
    model_id = request.path_params["model_id"]
    for target in svc.gateway.models_for(principal):
        if target.alias == model_id:
            return Response(orjson.dumps(_model(target, request.app.state.started_at)), media_type="application/json")
    raise ModelNotFoundError(model_id)
