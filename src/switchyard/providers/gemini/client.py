"""The thin client for Google's Gemini API (``https://generativelanguage.googleapis.com/v1beta``).

The key goes in the ``x-goog-api-key`` header, never in a ``?key=`` query (URLs end up in logs).
Translation, and every decision about what is supported, lives in :mod:`.translate`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.core.usage import Usage
from switchyard.errors import GatewayError
from switchyard.providers._http import UpstreamClient
from switchyard.providers.gemini import requests, translate

__all__ = ["GeminiProvider"]

_MAX_MODEL_PAGES = 5


class GeminiProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        headers = {"x-goog-api-key": spec.api_key} if spec.api_key else {}
        self._http = UpstreamClient(spec.base_url, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def _json(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        return await self._http.call_object(method, path, self._error, json=body, timeout=timeout)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        body = requests.chat_body(request, target)
        payload = await self._json("POST", requests.chat_path(target, stream=False), body, target.timeout)
        result, usage = translate.chat_result(payload, request, target)
        return ChatResult(body=orjson.dumps(result), usage=usage)

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        body = requests.chat_body(request, target)
        converter = translate.StreamConverter(request, target)
        async for piece in self._http.stream(requests.chat_path(target, stream=True), self._error, converter,
                                             json=body, timeout=target.timeout):
            yield piece

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        body = requests.embed_body(request, target)
        path = requests.model_path(target.upstream_model, "batchEmbedContents")
        payload = await self._json("POST", path, body, target.timeout)
        vectors = translate.embed_vectors(payload, len(request.inputs))
        # batchEmbedContents reports no token counts: about four characters a token, marked estimated.
        tokens = sum(max(1, len(str(text)) // 4) for text in request.inputs)
        return EmbeddingResult(vectors=vectors, usage=Usage(prompt_tokens=tokens, estimated=True), model=target.alias)

    async def list_models(self) -> Sequence[str]:
        names: list[str] = []
        token = ""
        for _ in range(_MAX_MODEL_PAGES):
            path = "/models?pageSize=1000" + (f"&pageToken={quote(token, safe='')}" if token else "")
            payload = await self._json("GET", path, None, 10.0)
            names += translate.model_names(payload)
            token = str(payload.get("nextPageToken") or "")
            if not token:
                break
        return names

    async def aclose(self) -> None:
        await self._http.aclose()
