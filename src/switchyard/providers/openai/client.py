"""The thin client for OpenAI and any OpenAI-compatible server (vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.errors import GatewayError, UpstreamError
from switchyard.providers._http import UpstreamClient
from switchyard.providers.openai import translate

__all__ = ["OpenAIProvider"]


class OpenAIProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._http = UpstreamClient(spec.base_url, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
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
        converter = translate.StreamConverter(client_wants_usage=request.include_usage)
        return self._http.stream(translate.chat_path(request), self._error, converter,
                                 json=translate.chat_body(request, target), timeout=target.timeout)

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
