"""The thin client for Anthropic's Messages API (``base_url`` includes ``/v1``).

A request from ``/v1/messages`` may carry the client's ``anthropic-version`` and
``anthropic-beta``: they are sent as given, over a connection pool of their own per distinct
pair (at most ``_MAX_HEADER_SETS``; past that, and for values that are not plain printable
ASCII of at most 512 characters, the provider's own headers are used).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.errors import GatewayError
from switchyard.providers._http import UpstreamClient
from switchyard.providers.anthropic import requests, translate

__all__ = ["AnthropicProvider"]

_MAX_MODEL_PAGES = 20
_MAX_HEADER_SETS = 16
_FORWARDABLE = frozenset({"anthropic-version", "anthropic-beta"})


def _plain(value: str) -> bool:
    return len(value) <= 512 and all(" " <= ch <= "~" for ch in value)


class AnthropicProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        headers = {"anthropic-version": translate.ANTHROPIC_VERSION}
        if spec.api_key:
            headers["x-api-key"] = spec.api_key
        self._spec, self._headers = spec, headers
        self._http = UpstreamClient(spec.base_url, headers, spec.timeout)
        self._variants: dict[tuple[tuple[str, str], ...], UpstreamClient] = {}

    def _client(self, request: ChatRequest) -> UpstreamClient:
        """The pool whose fixed headers include the client's forwarded ones (see the module docstring)."""
        extra = tuple((name, value) for name, value in request.upstream_headers
                      if name in _FORWARDABLE and _plain(value))
        if not extra:
            return self._http
        client = self._variants.get(extra)
        if client is None:
            if len(self._variants) >= _MAX_HEADER_SETS:
                return self._http
            client = self._variants[extra] = UpstreamClient(self._spec.base_url, {**self._headers, **dict(extra)},
                                                            self._spec.timeout)
        return client

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        return await self._http.call_object(method, path, self._error, json=body, timeout=timeout)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        body = requests.messages_body(request, target)
        payload = await self._client(request).call_object("POST", translate.MESSAGES_PATH, self._error, json=body,
                                                          timeout=target.timeout)
        result, usage = translate.chat_result(payload, request, target)
        return ChatResult(body=orjson.dumps(result), usage=usage)

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        converter = translate.StreamConverter(request, target)
        async for piece in self._client(request).stream(translate.MESSAGES_PATH, self._error, converter,
                                             json=requests.messages_body(request, target), timeout=target.timeout):
            yield piece

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        raise translate.embeddings_refused()

    async def list_models(self) -> Sequence[str]:
        ids: list[str] = []
        path = f"{translate.MODELS_PATH}?limit=1000"
        for _ in range(_MAX_MODEL_PAGES):
            page, after = translate.model_page(await self._json("GET", path, None, 10.0))
            ids += page
            if after is None:
                break
            path = f"{translate.MODELS_PATH}?limit=1000&after_id={quote(after, safe='')}"
        return ids

    async def aclose(self) -> None:
        await self._http.aclose()
        for client in self._variants.values():
            await client.aclose()
