"""POST /v1/messages and POST /v1/messages/count_tokens: the Anthropic Messages API, inbound.

The request is translated to an OpenAI chat body, validated by ``parse_chat_request`` and sent
through the same gateway calls as ``/v1/chat/completions`` (keys, scopes, limits, accounting),
then the answer is translated back. Every error is rendered in Anthropic's shape
(``{"type": "error", "error": {"type", "message"}}``) with our status code and headers.

``thinking`` / ``output_config.effort`` travel as ``reasoning_effort``, except on a route with an
Anthropic deployment (that provider refuses ``reasoning_effort``; there they are accepted and
not sent), and an upstream that refuses ``reasoning_effort`` (OpenAI's models without
reasoning answer 400) gets the request once more without it. The upstream's reasoning comes
back as ``thinking`` blocks unless thinking was turned off.

``anthropic-beta`` and ``anthropic-version`` ride with the request and are sent unchanged to
Anthropic upstreams (other upstreams ignore them). So does ``cache_control`` (prompt caching),
on routes with an Anthropic deployment; other routes get the request without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.chat import ChatRequest
from switchyard.core.keys import Principal
from switchyard.core.models import Route
from switchyard.errors import BadRequestError, GatewayError
from switchyard.http.auth import authenticate
from switchyard.http.body import read_json
from switchyard.http.sse import first_piece, open_stream
from switchyard.http.state import call_context, services
from switchyard.service.accounting import estimate_input_tokens

if TYPE_CHECKING:
    from switchyard.protocol.anthropic import StreamConverter

__all__ = ["count_tokens", "messages"]

_FORWARDED = ("anthropic-version", "anthropic-beta")


def _translate() -> ModuleType:
    """The Anthropic translation, imported on first use: most servers never load it (~1.6 MB)."""
    from switchyard.protocol import anthropic

    return anthropic


def _error_response(request: Request, exc: GatewayError) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    body = _translate().error_body(exc, request.scope.get("state", {}).get("request_id"))
    return Response(orjson.dumps(body), status_code=exc.status_code, headers=headers, media_type="application/json")


async def _anthropic_errors(request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
    try:
        return await handler(request)
    except GatewayError as exc:
        return _error_response(request, exc)


async def _read(request: Request) -> tuple[Principal, Any]:
    principal = await authenticate(request)
    return principal, await read_json(request, services(request).settings.max_body_bytes)


async def _relay(first: bytes, chunks: AsyncIterator[bytes], converter: StreamConverter) -> AsyncIterator[bytes]:
    """Anthropic events for the gateway's OpenAI SSE bytes; a gateway error becomes an ``error`` event.

    The gateway stream is read to its end even after an error event, so it is accounted as it
    ended upstream, not as a client that left.
    """
    try:
        try:
            yield converter.feed(first)
            async for chunk in chunks:
                out = converter.feed(chunk)
                if out:
                    yield out
            tail = converter.finish()
        except GatewayError as exc:
            tail = b"" if converter.ended else converter.error(exc)
        if tail:
            yield tail
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _for_route(chat: ChatRequest, route: Route) -> ChatRequest:
    """The request as the route can take it: without ``reasoning_effort`` where an Anthropic upstream may serve."""
    if "reasoning_effort" not in chat.body or all(t.provider_type != "anthropic" for t in route.deployments):
        return chat
    return replace(chat, body={k: v for k, v in chat.body.items() if k != "reasoning_effort"})


def _refuses_reasoning(exc: GatewayError) -> bool:
    """An upstream's 400 for ``reasoning_effort`` (OpenAI's models without reasoning answer so)."""
    return (isinstance(exc, BadRequestError) and exc.code == "upstream_bad_request"
            and (exc.param == "reasoning_effort" or "reasoning_effort" in exc.message))


def _to_anthropic(request: Request, principal: Principal, body: Any) -> bool:
    """Whether the body's model routes to an Anthropic deployment (it then keeps ``cache_control``).
    A model that does not resolve is refused later, after the body's own checks."""
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return False
    try:
        route = services(request).gateway.route_for(principal, model)
    except GatewayError:
        return False
    return any(t.provider_type == "anthropic" for t in route.deployments)


async def _messages(request: Request) -> Response:
    principal, body = await _read(request)
    translate = _translate()
    svc = services(request)
    chat = translate.chat_request(body, keep_cache=_to_anthropic(request, principal, body))
    chat = _for_route(chat, svc.gateway.route_for(principal, chat.model))
    forwarded = tuple((name, request.headers[name]) for name in _FORWARDED if name in request.headers)
    if forwarded:
        chat = replace(chat, upstream_headers=forwarded)
    thinking = translate.wants_thinking(body)
    try:
        return await _answer(request, principal, chat, thinking)
    except GatewayError as exc:
        if "reasoning_effort" not in chat.body or not _refuses_reasoning(exc):
            raise
    # thinking is best effort: once more without it (no byte has been sent yet)
    plain = replace(chat, body={k: v for k, v in chat.body.items() if k != "reasoning_effort"})
    return await _answer(request, principal, plain, thinking)


async def _answer(request: Request, principal: Principal, chat: ChatRequest, thinking: bool) -> Response:
    translate = _translate()
    svc = services(request)
    ctx = call_context(request)
    if chat.stream:
        chunks = svc.gateway.stream(principal, chat, ctx)
        # routing, scope and upstream errors surface here, before any byte: a normal HTTP error
        first = await first_piece(chunks, b"")
        converter = translate.StreamConverter(chat.model, thinking=thinking)
        return await open_stream(_relay(first, chunks, converter))  # type: ignore[return-value]
    result = await svc.gateway.chat(principal, chat, ctx)
    try:
        payload = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        payload = {}
    message = translate.message_from_completion(payload, chat.model, result.usage, thinking=thinking)
    return Response(orjson.dumps(message), media_type="application/json")


async def _count_tokens(request: Request) -> Response:
    """An estimate (about four characters a token): the gateway has no tokenizer for arbitrary models."""
    principal, body = await _read(request)
    chat = _translate().chat_request(body, need_max_tokens=False)
    services(request).gateway.target_for(principal, chat.model)
    tokens = estimate_input_tokens(chat.body)
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")


async def messages(request: Request) -> Response:
    return await _anthropic_errors(request, _messages)


async def count_tokens(request: Request) -> Response:
    return await _anthropic_errors(request, _count_tokens)
