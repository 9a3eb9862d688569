"""OpenAI wire format <-> core types. Pure: no I/O, table-testable.

OpenAI-compatible upstreams already speak the gateway's canonical shape, so translation is a
pass-through with three jobs: swap in the upstream's model name, ask for usage on streams,
and find the usage report (dropping it when the client did not ask for it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import GatewayError, UpstreamError
from switchyard.protocol.sse import EventFramer, SSEDecoder
from switchyard.providers.errors import error_for_status

__all__ = [
    "StreamConverter",
    "chat_body",
    "chat_path",
    "embedding_body",
    "error_from_response",
    "usage_from",
]

_DONE = b"data: [DONE]"
_REPORT = re.compile(rb'"usage"\s*:\s*\{|"error"')  # an event that may carry a usage report or an error
# Fields that are the gateway's own and never go upstream.
_GATEWAY_FIELDS = ("keep_alive",)


def chat_path(request: ChatRequest) -> str:
    return "/chat/completions" if request.kind is GenerationKind.CHAT else "/completions"


def chat_body(request: ChatRequest, target: Target) -> dict[str, Any]:
    body = {k: v for k, v in request.body.items() if k not in _GATEWAY_FIELDS}
    body["model"] = target.upstream_model
    if request.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # always, so streamed tokens are counted exactly
        body["stream_options"] = options
    return body


def embedding_body(request: EmbeddingRequest, target: Target) -> dict[str, Any]:
    body = {k: v for k, v in (request.body or {}).items() if k not in _GATEWAY_FIELDS}
    body["model"] = target.upstream_model
    body["input"] = list(request.inputs)
    body["encoding_format"] = "float"  # every compatible server has float; we re-encode
    return body


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def usage_from(payload: Mapping[str, Any] | None, estimate: Usage | None = None) -> Usage:
    """The usage report of an OpenAI answer. ``prompt_tokens`` includes the cached tokens:
    ``prompt_tokens_details.cached_tokens`` (read from the prompt cache) and, where an upstream
    reports it (OpenRouter, other gateways), ``cache_write_tokens``."""
    usage = payload.get("usage") if payload else None
    if isinstance(usage, Mapping):
        details = usage.get("prompt_tokens_details")
        read = write = 0
        if isinstance(details, Mapping):
            read, write = _count(details.get("cached_tokens")), _count(details.get("cache_write_tokens"))
        return Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=read,
            cache_write_tokens=write,
        )
    return estimate or Usage(estimated=True)


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    message: str | None = None
    param: str | None = None
    try:
        payload = orjson.loads(raw)
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            message = str(err.get("message") or "") or None
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    except orjson.JSONDecodeError:
        message = None
    if message is not None:
        message = message[:500]
    return error_for_status(status, message, param, headers)


class StreamConverter:
    """Relays an upstream SSE byte stream as its complete events arrive, unchanged.

    Only events that carry a usage report (or an error) are parsed; everything else is forwarded
    as the bytes that arrived (line ends made ``\\n``), so relaying costs a framing and a count
    per network read.
    """

    stop_reading = False  # the answer is read to its end, so its connection can be reused

    def __init__(self, client_wants_usage: bool) -> None:
        self._wants_usage = client_wants_usage
        self._frame = EventFramer().feed
        self._decoder = SSEDecoder()
        self.done = False
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> StreamPiece | None:
        complete = self._frame(data)
        if not complete:
            return None
        usage = None
        if b'"usage":{' in complete or b'"usage": {' in complete or b'"error"' in complete:
            complete, usage = self._inspect(complete)
        if _DONE in complete:
            self.done = True
        events = complete.count(b"data: {")
        return StreamPiece(data=complete, events=events, usage=usage, done=self.done)

    def _inspect(self, complete: bytes) -> tuple[bytes, Usage | None]:
        kept: list[bytes] = []
        usage: Usage | None = None
        for event in complete.split(b"\n\n"):
            if not event:
                continue
            if _REPORT.search(event) is None:  # the usual content chunk: relayed as it came, unparsed
                kept.append(event)
                continue
            payload = self._json(event)
            if payload is not None and isinstance(payload.get("error"), Mapping):
                raise UpstreamError(f"The upstream failed mid-stream: {payload['error'].get('message', '')}")
            if payload is not None and isinstance(payload.get("usage"), Mapping):
                usage = usage_from(payload)
                self.usage = usage
                if not self._wants_usage:
                    if not payload.get("choices"):
                        continue  # the usage-only chunk the client never asked for
                    payload["usage"] = None
                    event = b"data: " + orjson.dumps(payload)
            kept.append(event)
        return (b"\n\n".join(kept) + b"\n\n" if kept else b""), usage

    def _json(self, event: bytes) -> dict[str, Any] | None:
        parsed = self._decoder.event(event)
        if parsed is None or parsed.data == b"[DONE]":
            return None
        try:
            value = orjson.loads(parsed.data)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    def finish(self) -> None:
        if not self.done:
            raise UpstreamError("The upstream stream ended before it was complete.")
