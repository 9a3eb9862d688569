"""Model management over HTTP:

- ``POST /v1/models/{id}/load`` and ``/unload`` (admin): a local model through the model manager,
  a model on an Ollama upstream through its ``keep_alive`` (``0`` unloads);
- ``GET /v1/status`` (any key): loaded models, their measured memory, queue depths, the budget,
  and how often a worker was restarted after a crash (the last one: why, and which local models
  were busy);
- ``POST /v1/inference``: one prompt ``{model_id, prompt, json_schema, temperature, max_tokens}``
  onto the chat path (limits, budgets and usage apply as to any request).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.ports import ManagesModels, ReportsRunningModels
from switchyard.core.time import parse_duration
from switchyard.errors import BadRequestError, GatewayError
from switchyard.http.auth import authenticate, require_admin
from switchyard.http.body import read_json
from switchyard.http.state import call_context, services
from switchyard.http.status import restarts
from switchyard.protocol.openai import parse_chat_request

__all__ = ["inference", "load_model", "status", "unload_model"]

_UPSTREAM_STATUS_TIMEOUT = 5.0


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


async def _keep_alive(request: Request) -> str | int | float | None:
    raw = await request.body()
    if not raw.strip():
        return None
    body = await read_json(request, services(request).settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadRequestError("The body must be a JSON object.")
    value = body.get("keep_alive")
    if value is not None:
        try:
            parse_duration(value)
        except ValueError as exc:
            raise BadRequestError(str(exc), param="keep_alive") from None
    return value


async def _manage(request: Request, load: bool) -> Response:
    principal = await require_admin(request)
    svc = services(request)
    model_id = request.path_params["model_id"]
    keep_alive = await _keep_alive(request) if load else None
    target = svc.gateway.route_for(principal, model_id).primary
    started = time.perf_counter()
    if target.provider_type == "local" and svc.models is not None:
        if load:
            info = await svc.models.load(target.upstream_model,
                                         ... if keep_alive is None else parse_duration(keep_alive))
            return _json({"id": model_id, "object": "model.load", "status": "loaded", **info})
        await svc.models.unload(target.upstream_model)
        return _json({"id": model_id, "object": "model.unload", "status": "unloaded"})
    provider = svc.gateway.upstreams.provider(target.provider)
    if not isinstance(provider, ManagesModels):
        raise BadRequestError(
            f"'{model_id}' is served by a {target.provider_type} upstream, which does not load or unload "
            "models on request.", param="model", code="model_not_manageable",
        )
    if load:
        await provider.load_model(target.upstream_model, keep_alive)
        return _json({"id": model_id, "object": "model.load", "status": "loaded", "memory_bytes": None,
                      "load_seconds": round(time.perf_counter() - started, 3)})
    await provider.unload_model(target.upstream_model)
    return _json({"id": model_id, "object": "model.unload", "status": "unloaded"})


async def load_model(request: Request) -> Response:
    return await _manage(request, load=True)


async def unload_model(request: Request) -> Response:
    return await _manage(request, load=False)


async def _upstream_models(request: Request) -> list[dict[str, Any]]:
    """What Ollama upstreams hold in memory (/api/ps), under the aliases that route to them."""
    gateway = services(request).gateway
    aliases: dict[tuple[str, str], str] = {}
    for route in gateway.routing.routes.values():
        for target in route.deployments:
            aliases.setdefault((target.provider, target.upstream_model), route.alias)
    out: list[dict[str, Any]] = []
    for name, provider in gateway.upstreams.providers().items():
        if not isinstance(provider, ReportsRunningModels):
            continue
        try:
            running = await asyncio.wait_for(provider.running_models(), _UPSTREAM_STATUS_TIMEOUT)
        except (GatewayError, TimeoutError):
            out.append({"provider": name, "error": "unreachable"})
            continue
        for model in running:
            upstream = str(model.get("name") or model.get("model"))
            out.append({"id": aliases.get((name, upstream), f"{name}/{upstream}"), "provider": name,
                        "upstream_model": upstream, "memory_bytes": model.get("size"),
                        "vram_bytes": model.get("size_vram"), "expires_at": model.get("expires_at")})
    return out


async def status(request: Request) -> Response:
    await authenticate(request)
    svc = services(request)
    payload: dict[str, Any] = {"object": "status", "memory_budget_bytes": 0, "memory_used_bytes": 0,
                               "memory_free_bytes": 0, "max_loaded_models": None, "models": []}
    if svc.models is not None:
        payload.update(svc.models.status())
        routes = svc.gateway.routing.routes
        for model in payload["models"]:
            route = routes.get(model["id"])
            model["queued"] = svc.gateway.attempts.queue_depth(route.primary) if route is not None else 0
    payload["upstream_models"] = await _upstream_models(request)
    payload.update(restarts(svc.supervision() if svc.supervision is not None else None))
    return _json(payload)


async def inference(request: Request) -> Response:
    """The inference route: a prompt (and optionally a JSON Schema) in, text (and the
    parsed object) out."""
    principal = await authenticate(request)
    svc = services(request)
    body = await read_json(request, svc.settings.max_body_bytes)
    if not isinstance(body, dict):
        raise BadRequestError("The body must be a JSON object.")
    model_id, prompt = body.get("model_id"), body.get("prompt")
    if not isinstance(model_id, str) or not model_id:
        raise BadRequestError("model_id is required.", param="model_id")
    if not isinstance(prompt, str):
        raise BadRequestError("prompt is required (a string).", param="prompt")
    chat: dict[str, Any] = {"model": model_id, "messages": [{"role": "user", "content": prompt}]}
    for name in ("temperature", "max_tokens", "top_p", "seed", "stop"):
        if body.get(name) is not None:
            chat[name] = body[name]
    schema = body.get("json_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise BadRequestError("json_schema must be a JSON Schema object.", param="json_schema",
                                  code="invalid_json_schema")
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    result = await svc.gateway.chat(principal, parse_chat_request(chat), call_context(request))
    answer = orjson.loads(result.body)
    choice = answer["choices"][0]
    text = choice["message"]["content"] or ""
    parsed = None
    if schema is not None and choice["finish_reason"] == "stop":
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
    return _json({"id": answer["id"], "object": "inference", "model_id": model_id, "text": text,
                  "output": parsed, "finish_reason": choice["finish_reason"], "usage": answer["usage"]})
