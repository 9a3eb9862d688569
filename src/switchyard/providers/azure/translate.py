"""Azure OpenAI <-> the gateway: OpenAI's wire format behind deployments. Pure: no I/O.

Request bodies are OpenAI's (:mod:`switchyard.providers.openai.translate` builds them; ``model``
carries the deployment name, which Azure accepts and ignores: the URL's deployment decides).
What differs, and what the gateway does about it:

* Paths are ``/openai/deployments/{deployment}/{operation}?api-version=...``.
* Azure names the deployed model in responses (``gpt-4o-2024-08-06``); the gateway answers with
  the model name the client asked for (the alias), as it does for every translated provider.
* Azure's content-filter annotations (``prompt_filter_results``, ``content_filter_results``,
  ``content_filter_offsets``) are dropped, so answers have OpenAI's shape. What the filter did
  still shows: a filtered completion keeps ``finish_reason: content_filter``, and a prompt the
  filter rejected stays a 400 with ``code: content_filter``. In streams, Azure's first chunk
  (no choices, only ``prompt_filter_results``, empty ``id``/``object``) and annotation-only
  choices (no ``delta``) are dropped.
* ``stream_options.include_usage`` is only asked for with api-versions from 2024-09-01 on;
  older ones reject the field, and their streams are accounted as estimated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError, UpstreamError
from switchyard.protocol.sse import SSEDecoder
from switchyard.providers.openai import translate as openai_translate

__all__ = [
    "DEFAULT_API_VERSION",
    "RESPONSES_PATH",
    "StreamConverter",
    "chat_body",
    "chat_result",
    "deployment_path",
    "error_from_response",
    "normalize",
]

DEFAULT_API_VERSION = "2024-10-21"
RESPONSES_PATH = "/openai/v1/responses"  # the v1 API: no api-version, the deployment in the body's model
_USAGE_SINCE = "2024-09-01"  # the first api-version (2024-09-01-preview) with stream_options
_DEPLOYMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ANNOTATIONS = ("prompt_filter_results", "prompt_annotations")
_CHOICE_ANNOTATIONS = ("content_filter_results", "content_filter_offsets")
_DONE = b"data: [DONE]"


def deployment_path(deployment: str, operation: str, api_version: str) -> str:
    if not _DEPLOYMENT.match(deployment):
        raise BadRequestError(f"'{deployment}' is not a valid Azure OpenAI deployment name.", param="model")
    return f"/openai/deployments/{deployment}/{operation}?api-version={quote(api_version, safe='')}"


def chat_body(request: ChatRequest, target: Target, api_version: str) -> dict[str, Any]:
    body = openai_translate.chat_body(request, target)
    if request.stream and api_version[:10] < _USAGE_SINCE:
        if "stream_options" in request.body:
            body["stream_options"] = request.body["stream_options"]
        else:
            body.pop("stream_options", None)
    return body


def normalize(payload: dict[str, Any], alias: str) -> dict[str, Any]:
    """A response or chunk in OpenAI's shape: Azure's annotations out, the client's model name in."""
    for key in _ANNOTATIONS:
        payload.pop(key, None)
    for choice in payload.get("choices") or ():
        if isinstance(choice, dict):
            for key in _CHOICE_ANNOTATIONS:
                choice.pop(key, None)
    payload["model"] = alias
    return payload


def chat_result(raw: bytes, target: Target) -> tuple[bytes, Usage]:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a response that is not JSON.") from exc
    if not isinstance(payload, dict):
        raise UpstreamError("The upstream sent an unexpected response.")
    return orjson.dumps(normalize(payload, target.alias)), openai_translate.usage_from(payload)


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Azure's errors are OpenAI-shaped (``code`` is often the status as a string); a prompt
    rejected by the content filter stays a 400 with ``code: content_filter``."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    err = payload.get("error") if isinstance(payload, dict) else None
    if status == 400 and isinstance(err, dict) and err.get("code") == "content_filter":
        message = str(err.get("message") or "The prompt was rejected by the content filter.")[:500]
        param = err.get("param") if isinstance(err.get("param"), str) else None
        return BadRequestError(message, param=param, code="content_filter")
    return openai_translate.error_from_response(status, raw, headers)


class StreamConverter:
    """Relays Azure's SSE stream event by event, each in OpenAI's shape (see the module doc)."""

    stop_reading = False  # the answer is read to its end, so its connection can be reused

    def __init__(self, request: ChatRequest, target: Target) -> None:
        self._wants_usage = request.include_usage
        self._content_key = "delta" if request.kind is GenerationKind.CHAT else "text"
        self._alias = target.alias
        self._decoder = SSEDecoder()
        self.done = False
        self.usage: Usage | None = None

    def _event(self, data: bytes) -> tuple[bytes, int]:
        data = data.strip()
        if not data:
            return b"", 0
        if data == _DONE[6:]:
            self.done = True
            return _DONE + b"\n\n", 0
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The upstream sent a malformed stream event.") from exc
        if not isinstance(payload, dict):
            raise UpstreamError("The upstream sent a malformed stream event.")
        if isinstance(payload.get("error"), Mapping):
            raise UpstreamError(f"The upstream failed mid-stream: {payload['error'].get('message', '')}")
        normalize(payload, self._alias)
        choices = [c for c in payload.get("choices") or () if isinstance(c, dict) and self._content_key in c]
        payload["choices"] = choices
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            self.usage = openai_translate.usage_from(payload)
        if not self._wants_usage:
            payload.pop("usage", None)
            if not choices:
                return b"", 0
        elif not choices and not isinstance(usage, Mapping):
            return b"", 0  # Azure's prompt-filter chunk, or a chunk that only carried annotations
        return b"data: " + orjson.dumps(payload) + b"\n\n", 1 if choices else 0

    def feed(self, data: bytes) -> StreamPiece | None:
        out = b""
        events = 0
        usage_before = self.usage
        for event in self._decoder.feed(data):
            data_out, count = self._event(event.data)
            out += data_out
            events += count
        usage = self.usage if self.usage is not usage_before else None
        if not out and usage is None:
            return None
        return StreamPiece(data=out, events=events, usage=usage, done=self.done)

    def finish(self) -> None:
        if not self.done:
            raise UpstreamError("The upstream stream ended before it was complete.")
