"""The OpenAI Responses API (/v1/responses), translated onto the chat-completions pipeline.

``POST /v1/responses`` is parsed by ``protocol.responses.to_chat`` (with the earlier turns of a
``previous_response_id`` chain as history), sent through the same gateway call as
``/v1/chat/completions`` (keys, scopes, limits, budgets, failover, accounting), and rendered as a
``Response`` object or the Responses event stream. With ``store`` (the default) the response and
its input items are kept, sealed, before the answer (or the stream's last event) is sent, so the
very next request can chain from it. Errors are OpenAI error bodies.

``POST /v1/responses/compact`` asks the model (one gateway chat call, governed and accounted like
any other) to summarize the conversation, and answers with its user messages and one
``compaction`` item holding the summary, sealed for the key that asked. Sent back in ``input``,
that item is opened into a user message carrying the summary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from switchyard.core.keys import Principal
from switchyard.errors import BadRequestError, GatewayError, NotFoundError
from switchyard.http.auth import authenticate
from switchyard.http.body import read_json
from switchyard.http.responses_native import create_native, relay_held, relayed_natively
from switchyard.http.sse import first_piece, open_stream
from switchyard.http.state import call_context, services
from switchyard.protocol.openai.requests import parse_chat_request
from switchyard.protocol.responses import (
    ChatTranslation,
    HostedTools,
    Resolve,
    ResponseStream,
    Seal,
    StreamRelay,
    new_id,
    normalize_input,
    response_from_completion,
    sse,
    to_chat,
    usage_object,
)
from switchyard.service.accounting import estimate_input_tokens
from switchyard.service.responses import ResponseLog, listed_items, not_found

__all__ = ["cancel_response", "compact_response", "create_response", "delete_response", "get_response",
           "input_items", "input_tokens"]

log = logging.getLogger("switchyard.responses")

REMOVED_TOOLS_HEADER = "x-switchyard-removed-tools"
SUMMARY_LEAD = "Summary of the conversation so far:\n"
COMPACT_PROMPT = (
    "Summarize the conversation so far, for whoever continues it: the user's goals and requests, the "
    "decisions made, what was done (files, commands and their results) and what is left to do. Be complete "
    "but concise, and write only the summary."
)
_COMPACT_FIELDS = ("model", "input", "instructions", "previous_response_id", "prompt_cache_key",
                   "safety_identifier", "user")
Save = Callable[[Mapping[str, Any]], Awaitable[None]]


def _log_of(request: Request) -> ResponseLog:
    found = services(request).responses
    if found is None:  # a server built without a store (never by create_app)
        raise not_found(request.path_params.get("response_id", ""))
    return found


async def _read(request: Request) -> tuple[Principal, Any]:
    principal = await authenticate(request)
    request.scope["state"]["principal"] = principal
    body = await read_json(request, services(request).settings.max_body_bytes)
    catalog = services(request).catalog
    if isinstance(body, dict) and not body.get("model") and catalog is not None and catalog.default_alias:
        body = {**body, "model": catalog.default_alias}
    return principal, body


def _sealed(item: Any) -> bool:
    """A ``compaction`` item, or a ``reasoning`` item carrying ``encrypted_content``."""
    if not isinstance(item, Mapping):
        return False
    kind = item.get("type")
    return kind == "compaction" or (kind == "reasoning" and isinstance(item.get("encrypted_content"), str))


def _opened(request: Request, principal: Principal, body: Any) -> tuple[Any, bool]:
    """``body`` with each sealed item of its ``input`` opened: a ``compaction`` into the user message
    it stands for, a reasoning item's ``encrypted_content`` into its reasoning text; and whether any
    reasoning was opened (then the translation restores reasoning onto the assistant messages)."""
    raw = body.get("input") if isinstance(body, dict) else None
    if not isinstance(raw, list) or not any(_sealed(item) for item in raw):
        return body, False
    items: list[Any] = []
    restored = False
    for i, item in enumerate(raw):
        if _sealed(item):
            token = item.get("encrypted_content")
            compaction = item.get("type") == "compaction"
            opened: str | None = None
            if isinstance(token, str):
                log_ = _log_of(request)
                opened = (log_.open_summary if compaction else log_.open_reasoning)(token, principal.key_id)
            if opened is None:
                at = f"input[{i}].encrypted_content"
                what = "compaction" if compaction else "reasoning item"
                raise BadRequestError(f"Invalid request: {at}: not a {what} this key was given by this server",
                                      param=at, code="invalid_encrypted_content")
            if compaction:
                item = {"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": SUMMARY_LEAD + opened}]}
            else:
                item = {k: v for k, v in item.items() if k != "encrypted_content"}
                item["content"] = [{"type": "reasoning_text", "text": opened}]
                restored = True
        items.append(item)
    return {**body, "input": items}, restored


async def _translate(request: Request, principal: Principal, body: Any,
                     history: list[dict[str, Any]] | None = None) -> tuple[ChatTranslation, Resolve]:
    """The translation, with a ``previous_response_id`` chain's items as history (read here unless
    given); ``item_reference`` ids are looked up among those items."""
    if history is None:
        history = await _history(request, principal, body)
    body, restored = _opened(request, principal, body)
    known = {item["id"]: item for item in history if isinstance(item.get("id"), str)}
    hosted: HostedTools = "remove"
    model = body.get("model") if isinstance(body, dict) else None
    if isinstance(model, str) and model and isinstance(body.get("tools"), list):
        if services(request).gateway.route_for(principal, model).hosted_tools == "reject":
            hosted = "reject"
    translation = to_chat(body, history=history, resolve=known.get, hosted_tools=hosted,
                          reasoning_history="reasoning_content" if restored else "drop")
    return translation, known.get


def _sealer(request: Request, principal: Principal, translation: ChatTranslation) -> Seal | None:
    """With ``include: ["reasoning.encrypted_content"]``, seals reasoning for this key."""
    responses = services(request).responses
    if "reasoning.encrypted_content" not in translation.include or responses is None:
        return None
    owner = principal.key_id
    return lambda text: responses.seal_reasoning(text, owner)


async def _history(request: Request, principal: Principal, body: Any) -> list[dict[str, Any]]:
    previous = body.get("previous_response_id") if isinstance(body, dict) else None
    if isinstance(previous, str) and previous:
        return await _log_of(request).history(previous, principal)
    return []


def _saver(request: Request, principal: Principal, translation: ChatTranslation, resolve: Resolve) -> Save | None:
    """Keeps the response (with ``store``), before the client sees it; a store failure is logged."""
    responses = services(request).responses
    if not translation.store or responses is None:
        return None
    items = listed_items([_dereferenced(item, resolve) for item in translation.input_items])

    async def save(response: Mapping[str, Any]) -> None:
        try:
            await responses.save(response, items, principal.key_id, translation.previous_response_id)
        except Exception:
            log.error("could not store response %s", response.get("id"), exc_info=True,
                      extra={"request_id": request.scope["state"].get("request_id")})

    return save


def _dereferenced(item: Mapping[str, Any], resolve: Resolve) -> Mapping[str, Any]:
    """An ``item_reference`` is kept as the item it names (the translation has already found it)."""
    if item.get("type") == "item_reference" or (item.get("type") is None and "role" not in item):
        found = resolve(str(item.get("id")))
        if found is not None:
            return found
    return item


async def _relay(first: bytes, chunks: AsyncIterator[bytes], stream: ResponseStream,
                 save: Save | None) -> AsyncIterator[bytes]:
    """The Responses events for the gateway's chat stream; an error after the first byte ends it
    with ``response.failed``. The batch that ends the stream is sent only once the response is
    stored (a stream ends once: after that it completes no more events)."""
    relay = StreamRelay(stream)
    try:
        try:
            out = relay.feed(first)
            if out and stream.ended and save is not None:
                await save(stream.response)
            if out:
                yield out
            async for chunk in chunks:
                out = relay.feed(chunk)
                if out:
                    if stream.ended and save is not None:
                        await save(stream.response)
                    yield out
            tail = stream.finish()
        except GatewayError as exc:
            tail = stream.fail(exc)
        if tail and save is not None:
            await save(stream.response)
        out = b"".join(sse(e) for e in tail)
        if out:
            yield out
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _removed_tools(request: Request, translation: ChatTranslation) -> dict[str, str]:
    removed = translation.removed_tools
    if not removed:
        return {}
    log.info("removed hosted tools the model cannot run: %s", ", ".join(removed),
             extra={"request_id": request.scope["state"].get("request_id")})
    return {REMOVED_TOOLS_HEADER: ",".join(removed)}


async def create_response(request: Request) -> Response:
    principal, body = await _read(request)
    if (native := await relayed_natively(request, principal, body)) is not None:
        return await create_native(request, principal, body, native)
    translation, resolve = await _translate(request, principal, body)
    headers = _removed_tools(request, translation)
    if translation.ignored:
        log.debug("ignored request fields: %s", ", ".join(translation.ignored))
    svc = services(request)
    ctx = call_context(request)
    ctx.endpoint = "responses"
    save = _saver(request, principal, translation, resolve)
    if translation.stream:
        chunks = svc.gateway.stream(principal, translation.request, ctx)
        # routing, scope and upstream errors surface here, before any byte: a normal HTTP error
        first = await first_piece(chunks, b"")
        events = ResponseStream(translation, seal=_sealer(request, principal, translation))
        relay = _relay(first, chunks, events, save)
        return await open_stream(relay, headers)  # type: ignore[return-value]
    result = await svc.gateway.chat(principal, translation.request, ctx)
    try:
        payload = orjson.loads(result.body)
    except orjson.JSONDecodeError:
        payload = {}
    response = response_from_completion(payload, translation, usage=result.usage,
                                        seal=_sealer(request, principal, translation))
    if save is not None:
        await save(response)
    return Response(orjson.dumps(response), headers=headers, media_type="application/json")


async def get_response(request: Request) -> Response:
    principal = await authenticate(request)
    response_id = request.path_params["response_id"]
    found = await _log_of(request).get(response_id, principal)
    if found.native is not None:  # the upstream holds it
        raw = await relay_held(request, found, response_id, "GET", aliased=True)
        return Response(raw, media_type="application/json")
    return Response(orjson.dumps(found.response), media_type="application/json")


async def delete_response(request: Request) -> Response:
    principal = await authenticate(request)
    response_id = request.path_params["response_id"]
    log_ = _log_of(request)
    found = await log_.get(response_id, principal)
    if found.native is not None:  # deleted at the upstream, then forgotten here
        try:
            raw = await relay_held(request, found, response_id, "DELETE")
        except NotFoundError:  # already gone there
            await log_.store.delete(response_id)
            raise
        await log_.store.delete(response_id)
        return Response(raw, media_type="application/json")
    await log_.delete(response_id, principal)
    return Response(orjson.dumps({"id": response_id, "object": "response", "deleted": True}),
                    media_type="application/json")


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise BadRequestError("limit must be an integer between 1 and 100.", param="limit")
    return limit


async def input_items(request: Request) -> Response:
    """``GET /v1/responses/{id}/input_items``: the response's own input items, paged by ``after``."""
    principal = await authenticate(request)
    response_id = request.path_params["response_id"]
    found = await _log_of(request).get(response_id, principal)
    if found.native is not None:  # the upstream holds it, and pages it
        return Response(await relay_held(request, found, response_id, "GET", "input_items"),
                        media_type="application/json")
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequestError("order must be 'asc' or 'desc'.", param="order")
    limit = _limit(request)
    items = found.input_items if order == "asc" else found.input_items[::-1]
    after = request.query_params.get("after")
    if after:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise BadRequestError(f"No input item with id '{after}' in this response.", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:limit]
    body = {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
    return Response(orjson.dumps(body), media_type="application/json")


async def cancel_response(request: Request) -> Response:
    """Only background responses can be cancelled, and this gateway makes none: a 400 (or 404).
    One an upstream holds is cancelled there (it may run background responses)."""
    principal = await authenticate(request)
    response_id = request.path_params["response_id"]
    found = await _log_of(request).get(response_id, principal)
    if found.native is not None:
        raw = await relay_held(request, found, response_id, "POST", "cancel", aliased=True)
        return Response(raw, media_type="application/json")
    raise BadRequestError("Only responses created with background=true can be cancelled")


async def input_tokens(request: Request) -> Response:
    """``POST /v1/responses/input_tokens``: an estimate (about four characters a token)."""
    principal, body = await _read(request)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in ("stream", "store")}
    translation, _ = await _translate(request, principal, body)
    services(request).gateway.target_for(principal, translation.request.model)
    tokens = estimate_input_tokens(translation.body)
    return Response(orjson.dumps({"object": "response.input_tokens", "input_tokens": tokens}),
                    media_type="application/json")


def _user_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The user messages among ``items``, as the message items a compaction keeps."""
    out: list[dict[str, Any]] = []
    for item in items:
        if item.get("role") != "user" or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        parts = [{"type": "input_text", "text": content}] if isinstance(content, str) else content
        out.append({"id": new_id("msg_"), "type": "message", "role": "user", "status": "completed",
                    "content": parts})
    return out


async def compact_response(request: Request) -> Response:
    """``POST /v1/responses/compact``: the conversation's user messages and one ``compaction`` item,
    the model's summary of it sealed for this key."""
    principal, body = await _read(request)
    if isinstance(body, dict):
        body = {k: body[k] for k in _COMPACT_FIELDS if k in body}
    history = await _history(request, principal, body)
    translation, _ = await _translate(request, principal, body, history)
    raw = body.get("input") if isinstance(body, dict) else None
    kept = _user_messages([*history, *(normalize_input(raw) if raw is not None else [])])
    chat: dict[str, Any] = {"model": translation.body["model"],
                            "messages": [*translation.body["messages"], {"role": "user", "content": COMPACT_PROMPT}]}
    for key in ("prompt_cache_key", "safety_identifier", "user"):
        if key in translation.body:
            chat[key] = translation.body[key]
    ctx = call_context(request)
    ctx.endpoint = "responses"
    result = await services(request).gateway.chat(principal, parse_chat_request(chat), ctx)
    try:
        payload = orjson.loads(result.body)
        summary = str(payload["choices"][0]["message"].get("content") or "")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        summary = ""
    sealed = _log_of(request).seal_summary(summary, principal.key_id)
    compacted = {"id": new_id("resp_"), "object": "response.compaction", "created_at": int(time.time()),
                 "output": [*kept, {"id": new_id("cmp_"), "type": "compaction", "encrypted_content": sealed}],
                 "usage": usage_object(result.usage) or usage_object({})}
    return Response(orjson.dumps(compacted), media_type="application/json")
