"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.chat import ChatRequest
from switchyard.http.auth import authenticate
from switchyard.http.body import read_json
from switchyard.http.sse import open_stream
from switchyard.http.state import call_context, services
from switchyard.protocol.openai import parse_chat_request, parse_completion_request

__all__ = ["chat_completions", "completions"]


async def _generate(request: Request, chat: ChatRequest) -> Response:
    svc = services(request)
    principal = request.scope["state"]["principal"]
    ctx = call_context(request)
    if chat.stream:
        return await open_stream(svc.gateway.stream(principal, chat, ctx))  # type: ignore[return-value]
    result = await svc.gateway.chat(principal, chat, ctx)
    return Response(result.body, media_type="application/json")


def _with_default_model(request: Request, body: Any) -> Any:
    """A request that names no model goes to the stored default model, when one is marked."""
    catalog = services(request).catalog
    if isinstance(body, dict) and not body.get("model") and catalog is not None and catalog.default_alias:
        return {**body, "model": catalog.default_alias}
    return body


async def chat_completions(request: Request) -> Response:
    request.scope["state"]["principal"] = await authenticate(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    return await _generate(request, parse_chat_request(_with_default_model(request, body)))


async def completions(request: Request) -> Response:
    request.scope["state"]["principal"] = await authenticate(request)
    body = await read_json(request, services(request).settings.max_body_bytes)
    return await _generate(request, parse_completion_request(_with_default_model(request, body)))
