"""The thin client for Ollama's native API."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, ChatResult, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest, EmbeddingResult
from switchyard.core.models import Target, UpstreamSpec
from switchyard.core.usage import Usage
from switchyard.errors import GatewayError, ModelNotFoundError, UpstreamError
from switchyard.protocol.ndjson import NDJSONDecoder
from switchyard.providers._http import UpstreamClient
from switchyard.providers.ollama import translate

__all__ = ["OllamaProvider"]

# Ollama streams a failed pull as one {"error": "..."} line after a 200, so there is no status to
# map. Go's os.ErrNotExist text after the manifest stage is its only sign of "no such model".
_NO_MANIFEST = ("pull model manifest", "file does not exist")


class OllamaProvider:
    def __init__(self, spec: UpstreamSpec) -> None:
        base = spec.base_url.rstrip("/")
        if base.endswith("/v1"):  # an OLLAMA_BASE_URL often points at the /v1 shim
            base = base[:-3]
        headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._http = UpstreamClient(base, headers, spec.timeout)

    def _error(self, status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
        return translate.error_from_response(status, raw, headers)

    async def _json(self, method: str, path: str, body: dict[str, object] | None, timeout: float) -> dict[str, Any]:
        return await self._http.call_object(method, path, self._error, json=body, timeout=timeout)

    async def chat(self, request: ChatRequest, target: Target) -> ChatResult:
        path, body = translate.chat_body(request, target)
        payload = await self._json("POST", path, body, target.timeout)
        result = translate.chat_result(payload, request, target)
        return ChatResult(body=orjson.dumps(result), usage=translate.usage_of(payload))

    async def stream(self, request: ChatRequest, target: Target) -> AsyncIterator[StreamPiece]:
        path, body = translate.chat_body(request, target)
        converter = translate.StreamConverter(request, target)
        async for piece in self._http.stream(path, self._error, converter, json=body, timeout=target.timeout):
            yield piece

    async def embed(self, request: EmbeddingRequest, target: Target) -> EmbeddingResult:
        body = translate.embed_body(request.inputs, target, request.keep_alive)
        payload = await self._json("POST", "/api/embed", body, target.timeout)
        vectors = payload.get("embeddings")
        if not isinstance(vectors, list):
            raise UpstreamError("The upstream sent a malformed embeddings response.")
        usage = Usage(prompt_tokens=int(payload.get("prompt_eval_count") or 0))
        return EmbeddingResult(vectors=vectors, usage=usage, model=target.alias)

    async def list_models(self) -> Sequence[str]:
        payload = await self._json("GET", "/api/tags", None, 10.0)
        try:
            return [str(m["name"]) for m in payload["models"]]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed model list.") from exc

    async def running_models(self) -> Sequence[dict[str, object]]:
        """Models loaded in memory now (/api/ps): name, size, VRAM and when keep-alive expires."""
        payload = await self._json("GET", "/api/ps", None, 10.0)
        try:
            return [
                {"name": m["name"], "size": m.get("size"), "size_vram": m.get("size_vram"),
                 "expires_at": m.get("expires_at")}
                for m in payload["models"]
            ]
        except (KeyError, TypeError) as exc:
            raise UpstreamError("The upstream sent a malformed process list.") from exc

    # ------------------------------------------------------------ model management
    async def load_model(self, model: str, keep_alive: str | int | float | None = None) -> None:
        """Load ``model`` into memory: /api/generate with no prompt (Ollama's documented way).
        Waits as long as the provider's timeout allows: a big model takes a while to load."""
        body: dict[str, object] = {"model": model}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        await self._manage(body)

    async def unload_model(self, model: str) -> None:
        """Free ``model``'s memory now: /api/generate with no prompt and keep_alive 0."""
        await self._manage({"model": model, "keep_alive": 0})

    async def _ndjson(self, path: str, body: dict[str, Any], timeout: float | None,
                      what: str) -> AsyncGenerator[dict[str, Any], None]:
        """POST ``body`` and yield each object of the NDJSON answer; an error status is raised
        the way every call's is, a line that is not a JSON object is a 502."""
        async with self._http.request("POST", path, json=body, timeout=timeout, stream=True) as resp:
            if resp.status >= 400:
                raise self._error(resp.status, await resp.read(), resp.headers)
            decoder = NDJSONDecoder()
            async for data in resp.chunks():
                for payload in translate.objects(decoder, data, what):
                    yield payload
            for payload in translate.objects(decoder, None, what):
                yield payload

    async def _manage(self, body: dict[str, object]) -> None:
        payload = await self._http.call_object("POST", "/api/generate", self._error, json=body)
        if payload.get("done") is not True:
            raise UpstreamError("The upstream sent an unexpected answer to a model load or unload.")

    async def pull(self, model: str) -> AsyncIterator[dict[str, object]]:
        """Download ``model`` into Ollama (/api/pull), yielding each NDJSON progress object:
        ``{"status"}``, or ``{"status", "digest", "total", "completed"}`` while a layer downloads
        (``completed`` is absent while it is 0). The last is ``{"status": "success"}``."""
        body = {"model": model, "stream": True}
        finished = False
        async with aclosing(self._ndjson("/api/pull", body, None, "progress")) as lines:
            async for payload in lines:
                if "error" in payload:
                    raise self._pull_error(model, str(payload["error"]))
                finished = payload.get("status") == "success"
                yield payload
        if not finished:
            raise UpstreamError(f"The upstream stopped pulling '{model}' before it was complete.")

    def _pull_error(self, model: str, message: str) -> GatewayError:
        head, tail = _NO_MANIFEST
        if message.startswith(head) and message.endswith(tail):
            return ModelNotFoundError(model)
        return UpstreamError(f"The upstream failed to pull '{model}': {message[:500]}")

    async def aclose(self) -> None:
        await self._http.aclose()
