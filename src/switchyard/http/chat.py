"""POST /v1/chat/completions and POST /v1/completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.chat import ChatRequest
from switchyard.core.keys import Principal
from switchyard.http.auth import authenticate
from switchyard.http.body import read_json
from switchyard.http.sse import open_stream
from switchyard.http.state import call_context, services
from switchyard.protocol.openai import parse_chat_request, parse_completion_request

__all__ = ["chat_completions", "completions"]


async def _generate(request: Request, principal: Principal, chat: ChatRequest) -> Response:
    svc = services(request)
    ctx = call_context(request)
    if chat.stream:
        return await open_stream(svc.gateway.stream(principal, chat, ctx))  # type: ignore[return-value]
    result = await svc.gateway.chat(principal, chat, ctx)
    return Response(result.body, media_type="application/json")


async def chat_completions(request: Request) -> Response:
    principal = await authenticate(request)
    svc = services(request)
    body = svc.gateway.routing.with_default_model(await read_json(request, svc.settings.max_body_bytes))
    return await _generate(request, principal, parse_chat_request(body))


async def completions(request: Request) -> Response:
    principal = await authenticate(request)
    svc = services(request)
    body = svc.gateway.routing.with_default_model(await read_json(request, svc.settings.max_body_bytes))
    return await _generate(request, principal, parse_completion_request(body))
