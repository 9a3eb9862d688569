"""The thin client for Azure OpenAI (``https://RESOURCE.openai.azure.com``).

``target.upstream_model`` is the deployment name. The key goes in the ``api-key`` header (not
``Authorization``); ``api-version`` is the provider's ``api_version`` (default 2024-10-21).

``list_models`` (the readiness probe) lists ``GET /openai/models``: the models the resource can
use. Azure's data plane has no deployments listing in its GA api-versions (deployments are an
ARM, control-plane resource), so these ids are model names, not necessarily deployment names:
configure each deployment as a model alias (``model:`` is the deployment name).

``/v1/responses`` is relayed to the resource's Responses API, ``POST /openai/v1/responses`` (the
v1 API: no ``api-version``, the deployment name in the body's ``model``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from urllib.parse import quote

from switchyard.core.chat import ChatRequest, ChatResult, GenerationKind, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.errors import GatewayError, UpstreamError
from switchyard.providers._http import UpstreamClient
from switchyard.providers.azure import translate
from switchyard.providers.openai import translate as openai_translate
from switchyard.providers.openai.client import held_path, native_answer, native_stream

__all__ = ["AzureOpenAIProvider"]


class AzureOpenAIProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        base = spec.base_url.rstrip("/").removesuffix("/openai")
        headers = {"api-key": spec.api_key} if spec.api_key else {}
        self._version = spec.api_version or translate.DEFAULT_API_VERSION
        self._http = UpstreamClient(base, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    def _path(self, request: ChatRequest, target: Target) -> str:
        operation = "chat/completions" if request.kind is GenerationKind.CHAT else "completions"
        return translate.deployment_path(target.upstream_model, operation, self._version)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        if request.kind is GenerationKind.RESPONSES:
            return await native_answer(self._http, translate.RESPONSES_PATH, self._error, request, target)
        body = translate.chat_body(request, target, self._version)
        raw = await self._http.call("POST", self._path(request, target), self._error, json=body,
                                    timeout=target.timeout)
        data, usage = translate.chat_result(raw, target)
        return ChatResult(body=data, usage=usage)

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        if request.kind is GenerationKind.RESPONSES:
            async for piece in native_stream(self._http, translate.RESPONSES_PATH, self._error, request, target):
                yield piece
            return
        body = translate.chat_body(request, target, self._version)
        converter = translate.StreamConverter(request, target)
        async for piece in self._http.stream(self._path(request, target), self._error, converter, json=body,
                                             timeout=target.timeout):
            yield piece

    async def held_response(self, method: str, response_id: str, action: str = "", query: str = "") -> bytes:
        path = held_path(translate.RESPONSES_PATH, response_id, action, query)
        return await self._http.call(method, path, self._error)

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        body = openai_translate.embedding_body(request, target)
        path = translate.deployment_path(target.upstream_model, "embeddings", self._version)
        payload = await self._http.call_json("POST", path, self._error, json=body, timeout=target.timeout)
        try:
            vectors = [item["embedding"] for item in sorted(payload["data"], key=lambda d: d["index"])]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed embeddings response.") from exc
        return EmbeddingResult(vectors=vectors, usage=openai_translate.usage_from(payload), model=target.alias)

    async def list_models(self) -> Sequence[str]:
        path = f"/openai/models?api-version={quote(self._version, safe='')}"
        payload = await self._http.call_json("GET", path, self._error, timeout=10.0)
        try:
            return [str(m["id"]) for m in payload["data"]]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed model list.") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
