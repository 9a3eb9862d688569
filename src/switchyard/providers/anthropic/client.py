"""The thin client for Anthropic's Messages API (``base_url`` includes ``/v1``)."""

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


class AnthropicProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        headers = {"anthropic-version": translate.ANTHROPIC_VERSION}
        if spec.api_key:
            headers["x-api-key"] = spec.api_key
        self._http = UpstreamClient(spec.base_url, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        return await self._http.call_object(method, path, self._error, json=body, timeout=timeout)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        body = requests.messages_body(request, target)
        payload = await self._json("POST", translate.MESSAGES_PATH, body, target.timeout)
        result, usage = translate.chat_result(payload, request, target)
        return ChatResult(body=orjson.dumps(result), usage=usage)

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        converter = translate.StreamConverter(request, target)
        async for piece in self._http.stream(translate.MESSAGES_PATH, self._error, converter,
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
