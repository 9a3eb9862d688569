"""``/v1/responses`` relayed to upstreams that speak the Responses API (native pass-through), and
who may use what they hold.

The upstream keeps the response; the gateway records only its owner (``ResponseLog.save_native``:
the key, the provider and the alias, no content) before the client can see the id: from a whole
answer's ``id``, or from the first stream event carrying the ``response`` (``response.created``).
So a ``previous_response_id`` is checked before any upstream call (another key's, or one this
gateway never recorded, is the unknown-id 404), a chain goes to the provider holding its previous
response (among the route's deployments), and ``GET``/``DELETE``/``input_items``/``cancel``
of a recorded id are relayed to the provider that holds it, with its credential.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.keys import Principal
from switchyard.errors import GatewayError
from switchyard.http.sse import first_piece, open_stream
from switchyard.http.state import call_context, services
from switchyard.protocol.responses import error_event, native_request
from switchyard.service.call import CallContext
from switchyard.service.responses import StoredResponse, not_found

__all__ = ["NativeRelay", "create_native", "relay_held", "relayed_natively"]

log = logging.getLogger("switchyard.responses")

_MAX_SCAN = 1 << 20  # stream bytes read for the response id before giving up (it is in the first event)
Record = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NativeRelay:
    """A ``POST /v1/responses`` that goes as it is to upstreams that speak the Responses API."""

    pinned: str | None = None  # the configured provider holding its previous response: only it knows the id


async def relayed_natively(request: Request, principal: Principal, body: Any) -> NativeRelay | None:
    """Whether this request goes as it is to upstreams that speak the Responses API: its route's
    every deployment does, and its ``previous_response_id`` (if any) is not one of this gateway's
    stored responses (those chain through the translation). A chain is pinned to the provider
    that holds its previous response. A ``previous_response_id`` this key may not see (another
    key's, or one this gateway never recorded), or whose provider no longer serves the model, is
    the unknown-id 404 here, before any upstream call."""
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return None
    gateway = services(request).gateway
    route = gateway.route_for(principal, model)
    if not gateway.responses_native(route):
        return None
    previous = body.get("previous_response_id")
    responses = services(request).responses
    if not isinstance(previous, str) or not previous or responses is None:
        return NativeRelay()
    found = await responses.find(previous, principal)
    if found is None:
        raise not_found(previous, "previous_response_id")
    if found.native is None:
        return None
    holder = found.native.provider
    if not any(target.provider == holder for target in route.deployments):
        raise not_found(previous, "previous_response_id")
    return NativeRelay(holder)


def _recorder(request: Request, principal: Principal, body: Any, ctx: CallContext) -> Record | None:
    """Records the owner of a response the upstream keeps (with ``store``, the default)."""
    responses = services(request).responses
    if responses is None or body.get("store") is False:
        return None
    previous = body.get("previous_response_id")

    async def record(response_id: str) -> None:
        if ctx.provider is None or ctx.model is None:
            return
        try:
            await responses.save_native(response_id, principal.key_id, ctx.provider, ctx.model,
                                        previous if isinstance(previous, str) else None)
        except Exception:
            log.error("could not record response %s", response_id, exc_info=True,
                      extra={"request_id": ctx.request_id})

    return record


class _IdWatch:
    """The response id of a relayed stream: the first ``data:`` event carrying ``response.id``."""

    def __init__(self) -> None:
        self._buffer = b""
        self.done = False

    def feed(self, chunk: bytes) -> str | None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            try:
                event = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                continue
            response = event.get("response") if isinstance(event, dict) else None
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self.done = True
                return str(response["id"])
        if len(self._buffer) > _MAX_SCAN:
            self.done = True
        return None


async def _native_events(first: bytes, chunks: AsyncIterator[bytes], record: Record | None) -> AsyncIterator[bytes]:
    """The upstream's events as they came; a failure after the first byte ends them with ``error``.
    The owner is recorded before the chunk naming the response id is sent."""
    sequence = first.count(b"data: ")
    watch = _IdWatch() if record is not None else None
    try:
        if first:
            if watch is not None and record is not None and (found := watch.feed(first)) is not None:
                await record(found)
            yield first
        async for chunk in chunks:
            sequence += chunk.count(b"data: ")
            if watch is not None and record is not None and not watch.done and (found := watch.feed(chunk)):
                await record(found)
            yield chunk
    except GatewayError as exc:
        yield error_event(exc, sequence)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def create_native(request: Request, principal: Principal, body: Any, relay: NativeRelay) -> Response:
    """``POST /v1/responses`` relayed to an upstream that speaks it: its answer, byte for byte."""
    native = native_request(body)
    svc = services(request)
    ctx = call_context(request)
    ctx.endpoint = "responses"
    ctx.pinned_provider = relay.pinned
    record = _recorder(request, principal, body, ctx)
    if native.stream:
        chunks = svc.gateway.stream(principal, native, ctx)
        # routing, scope and upstream errors surface here, before any byte: a normal HTTP error
        first = await first_piece(chunks, b"")
        return await open_stream(_native_events(first, chunks, record))  # type: ignore[return-value]
    result = await svc.gateway.chat(principal, native, ctx)
    if record is not None:
        try:
            response_id = orjson.loads(result.body).get("id")
        except (orjson.JSONDecodeError, AttributeError):
            response_id = None
        if isinstance(response_id, str) and response_id:
            await record(response_id)
    return Response(result.body, media_type="application/json")


async def relay_held(request: Request, found: StoredResponse, response_id: str, method: str,
                     action: str = "", *, aliased: bool = False) -> bytes:
    """``METHOD /responses/{id}[/action]`` (with the client's query) at the provider holding the
    response. With ``aliased``, the answer's ``model`` is the alias it was made as. An upstream
    404 (or a provider no longer configured) is the unknown-id 404."""
    assert found.native is not None
    holder = services(request).gateway.holder(found.native.provider)
    if holder is None:
        raise not_found(response_id)
    try:
        raw = await holder.held_response(method, response_id, action, request.url.query)
    except GatewayError as exc:
        if exc.status_code == 404:
            raise not_found(response_id) from None
        raise
    if not aliased:
        return raw
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(payload, dict) and "model" in payload:
        payload["model"] = found.native.alias
        return orjson.dumps(payload)
    return raw
