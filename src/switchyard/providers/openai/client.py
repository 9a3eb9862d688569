"""The thin client for OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, LM Studio).

A ``/v1/responses`` request routed to an upstream that speaks the Responses API itself
(``GenerationKind.RESPONSES``) goes to its ``/responses``, relayed as it is (``responses.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, GenerationKind, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.errors import GatewayError, UpstreamError
from switchyard.providers._http import ErrorMapper, UpstreamClient
from switchyard.providers.openai import responses, translate

__all__ = ["OpenAIProvider", "held_path", "native_answer", "native_stream"]


async def native_answer(http: UpstreamClient, path: str, error: ErrorMapper, request: ChatRequest,
                        target: Target) -> ChatResult:
    """A whole Responses answer from an upstream that speaks the API: its bytes, and its usage."""
    raw = await http.call("POST", path, error, json=responses.responses_body(request, target), timeout=target.timeout)
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a response that is not JSON.") from exc
    return ChatResult(body=raw, usage=responses.usage_from_response(payload))


async def native_stream(http: UpstreamClient, path: str, error: ErrorMapper, request: ChatRequest,
                        target: Target) -> AsyncIterator[StreamPiece]:
    """A Responses event stream from an upstream that speaks the API, relayed as it comes."""
    async for piece in http.stream(path, error, responses.ResponsesStreamConverter(),
                                   json=responses.responses_body(request, target), timeout=target.timeout):
        yield piece


def held_path(base: str, response_id: str, action: str, query: str) -> str:
    """``base/{id}[/action][?query]``: a response the upstream keeps (the id quoted whole)."""
    path = f"{base}/{quote(response_id, safe='')}" + (f"/{action}" if action else "")
    return f"{path}?{query}" if query else path


class OpenAIProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._http = UpstreamClient(spec.base_url, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        if request.kind is GenerationKind.RESPONSES:
            return await native_answer(self._http, "/responses", self._error, request, target)
        body = translate.chat_body(request, target)
        raw = await self._http.call("POST", translate.chat_path(request), self._error, json=body,
                                    timeout=target.timeout)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The upstream sent a response that is not JSON.") from exc
        return ChatResult(body=raw, usage=translate.usage_from(payload))

    def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        # the client's own generator, not one around it: one step less on every read of a stream
        # (nothing here can fail: the request is made when the caller first advances it)
        if request.kind is GenerationKind.RESPONSES:
            return native_stream(self._http, "/responses", self._error, request, target)
        converter = translate.StreamConverter(client_wants_usage=request.include_usage)
        return self._http.stream(translate.chat_path(request), self._error, converter,
                                 json=translate.chat_body(request, target), timeout=target.timeout)

    async def held_response(self, method: str, response_id: str, action: str = "", query: str = "") -> bytes:
        return await self._http.call(method, held_path("/responses", response_id, action, query), self._error)

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        body = translate.embedding_body(request, target)
        payload = await self._http.call_json("POST", "/embeddings", self._error, json=body, timeout=target.timeout)
        try:
            vectors = [item["embedding"] for item in sorted(payload["data"], key=lambda d: d["index"])]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed embeddings response.") from exc
        usage = translate.usage_from(payload)
        return EmbeddingResult(vectors=vectors, usage=usage, model=str(payload.get("model", target.alias)))

    async def list_models(self) -> Sequence[str]:
        payload = await self._http.call_json("GET", "/models", self._error, timeout=10.0)
        try:
            return [str(m["id"]) for m in payload["data"]]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed model list.") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
