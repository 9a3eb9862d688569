"""Anthropic's Messages API answers -> OpenAI shapes: results, the stream, errors. Pure: no I/O.

Requests are built in :mod:`.requests`. ``stop_reason`` becomes ``finish_reason`` and an error
``type`` its HTTP status as :mod:`switchyard.protocol.anthropic.codes` says. Prompt tokens count
cache writes and reads as well. Legacy completions answer in the ``text_completion`` shape.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError, RequestTooLargeError, UpstreamError
from switchyard.protocol.anthropic.codes import error_status, finish_reason
from switchyard.protocol.openai import DONE, ChunkWriter
from switchyard.protocol.sse import ServerSentEvent, SSEDecoder
from switchyard.providers.errors import error_for_status

__all__ = [
    "ANTHROPIC_VERSION",
    "MESSAGES_PATH",
    "MODELS_PATH",
    "StreamConverter",
    "chat_result",
    "embeddings_refused",
    "error_from_response",
    "model_page",
    "stream_error",
    "usage_of",
]

ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/messages"
MODELS_PATH = "/models"


# ---------------------------------------------------------------------------- responses
def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    return sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def _usage(usage: Mapping[str, Any]) -> Usage:
    return Usage(prompt_tokens=_prompt_tokens(usage), completion_tokens=_int(usage.get("output_tokens")),
                 cache_read_tokens=_int(usage.get("cache_read_input_tokens")),
                 cache_write_tokens=_int(usage.get("cache_creation_input_tokens")))


def usage_of(usage: Any) -> Usage:
    """Anthropic ``usage`` -> ours: input, cache writes and cache reads all count as prompt tokens
    (Anthropic's ``input_tokens`` is only the uncached part), the cache's parts kept apart."""
    if not isinstance(usage, Mapping):
        return Usage(estimated=True)
    return _usage(usage)


def _usage_json(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: cache reads as ``prompt_tokens_details.cached_tokens``; cache writes, which
    OpenAI's format has no field for, as ``cache_write_tokens`` beside them (as OpenRouter does)."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cache_read_tokens or usage.cache_write_tokens:
        details = {"cached_tokens": usage.cache_read_tokens}
        if usage.cache_write_tokens:
            details["cache_write_tokens"] = usage.cache_write_tokens
        out["prompt_tokens_details"] = details
    return out


def _response_id(payload: Mapping[str, Any], chat: bool) -> str:
    upstream = payload.get("id")
    suffix = upstream if isinstance(upstream, str) and upstream else uuid.uuid4().hex
    return f"{'chatcmpl' if chat else 'cmpl'}-{suffix}"


def chat_result(payload: Mapping[str, Any], request: ChatRequest, target: Target) -> tuple[dict[str, Any], Usage]:
    """An Anthropic message -> the OpenAI ``chat.completion`` (or ``text_completion``) body, and its usage."""
    content = payload.get("content")
    if not isinstance(content, list):
        raise UpstreamError("The upstream sent a malformed message.")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            calls.append({
                "id": str(block.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                "type": "function",
                "function": {"name": str(block.get("name") or ""),
                             "arguments": orjson.dumps(block.get("input") or {}).decode()},
            })
    usage = usage_of(payload.get("usage"))
    reason = finish_reason(payload.get("stop_reason"))
    text = "".join(texts)
    chat = request.kind is GenerationKind.CHAT
    head = {"id": _response_id(payload, chat), "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": target.alias}
    if not chat:
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {**head, "choices": [choice], "usage": _usage_json(usage)}, usage
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    return {**head, "choices": [choice], "usage": _usage_json(usage)}, usage


# ------------------------------------------------------------------------------- stream
def _event_payload(event: ServerSentEvent) -> dict[str, Any]:
    """One SSE event -> its JSON data, typed by the event name."""
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a malformed stream event.") from exc
    if not isinstance(payload, dict):
        raise UpstreamError("The upstream sent a malformed stream event.")
    payload.setdefault("type", event.event)
    return payload


class StreamConverter:
    """Anthropic's SSE events (in reads split anywhere) -> OpenAI chunk events.

    Call :meth:`feed` with each network read and relay the piece it returns; stop reading once
    :attr:`stop_reading`, and call :meth:`finish`: it raises the ``event: error`` that came (after
    the content before it was relayed), or an error when ``message_stop`` never came.
    """

    def __init__(self, request: ChatRequest, target: Target) -> None:
        self._out = ChunkWriter(request, target.alias)
        self._decoder = SSEDecoder()
        self._blocks: dict[int, tuple[str, int]] = {}  # Anthropic block index -> ("text" | "tool", tool index)
        self._tools = 0
        self._tool_args: dict[int, bool] = {}  # tool index -> any argument fragment relayed
        self._stop_reason: Any = None
        self._usage: dict[str, int] = {}
        self._failure: GatewayError | None = None
        self._role_pending = False
        self.done = False
        self.usage: Usage | None = None

    # ------------------------------------------------------------------ chunks
    def _arguments(self, tool: int, fragment: str) -> bytes:
        self._tool_args[tool] = True
        return self._out.delta({"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]})

    def _end(self) -> bytes:
        self.done = True
        usage = self._usage
        self.usage = _usage(usage)
        return self._out.finish(finish_reason(self._stop_reason)) + self._out.usage(_usage_json(self.usage)) + DONE

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, Mapping):
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"):
                if usage.get(key) is not None:  # message_delta's counts are cumulative: the latest wins
                    self._usage[key] = _int(usage[key])

    # ------------------------------------------------------------------ events
    def _handle(self, event: Mapping[str, Any]) -> tuple[bytes, int]:
        """SSE bytes for one Anthropic event, and how many content events they hold."""
        kind = event.get("type")
        if kind == "content_block_delta":
            block = self._blocks.get(_int(event.get("index")))
            delta = event.get("delta") or {}
            if block is None or not isinstance(delta, Mapping):
                return b"", 0
            if block[0] == "text" and delta.get("type") == "text_delta" and delta.get("text"):
                return self._out.text(str(delta["text"])), 1
            if block[0] == "tool" and delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                return self._arguments(block[1], str(delta["partial_json"])), 1
            return b"", 0  # thinking, signature and citation deltas carry nothing we relay
        if kind == "content_block_start":
            return self._block_start(_int(event.get("index")), event.get("content_block") or {})
        if kind == "content_block_stop":
            block = self._blocks.get(_int(event.get("index")))
            if block is not None and block[0] == "tool" and not self._tool_args.get(block[1]):
                return self._arguments(block[1], "{}"), 1  # a call without arguments still parses as JSON
            return b"", 0
        if kind == "message_start":
            message = event.get("message") or {}
            if isinstance(message, Mapping):
                if isinstance(message.get("id"), str):
                    self._out.id = self._out.id_for(message["id"])
                self._take_usage(message.get("usage"))
            # The role chunk waits for the first content: an error before any content then fails the
            # request before its first byte (a proper status, and retries / fallbacks still possible).
            self._role_pending = self._out.chat
            return b"", 0
        if kind == "message_delta":
            delta = event.get("delta") or {}
            if isinstance(delta, Mapping) and delta.get("stop_reason") is not None:
                self._stop_reason = delta["stop_reason"]
            self._take_usage(event.get("usage"))
            return b"", 0
        if kind == "message_stop":
            return self._end(), 0
        if kind == "error":
            self._failure = stream_error(event)
        return b"", 0  # ping, and event types added after this was written

    def _block_start(self, index: int, block: Any) -> tuple[bytes, int]:
        if not isinstance(block, Mapping):
            return b"", 0
        if block.get("type") == "text":
            self._blocks[index] = ("text", 0)
            return (self._out.text(str(block["text"])), 1) if block.get("text") else (b"", 0)
        if block.get("type") == "tool_use" and self._out.chat:
            tool = self._tools
            self._tools += 1
            self._blocks[index] = ("tool", tool)
            call = {"index": tool, "id": str(block.get("id") or f"call_{uuid.uuid4().hex[:24]}"), "type": "function",
                    "function": {"name": str(block.get("name") or ""), "arguments": ""}}
            return self._out.delta({"tool_calls": [call]}), 1
        return b"", 0

    # ---------------------------------------------------------------- plumbing
    def feed(self, data: bytes) -> StreamPiece | None:
        """The OpenAI events for every Anthropic event completed by this read (None if none)."""
        if self.done or self._failure is not None:
            return None
        out: list[bytes] = []
        events = 0
        for event in self._decoder.feed(data):
            if self.done or self._failure is not None:
                break
            payload = _event_payload(event)
            data_out, count = self._handle(payload)
            if data_out:
                if self._role_pending:  # as OpenAI opens: content "" before text, null before a tool call
                    self._role_pending = False
                    block = payload.get("content_block") if payload.get("type") == "content_block_start" else None
                    tool_first = isinstance(block, Mapping) and block.get("type") == "tool_use"
                    out.append(self._out.delta({"role": "assistant", "content": None if tool_first else "",
                                                "refusal": None}))
                out.append(data_out)
                events += count
        if not out:
            return None
        return StreamPiece(data=b"".join(out), events=events, usage=self.usage if self.done else None,
                           done=self.done)

    @property
    def stop_reading(self) -> bool:
        """``message_stop`` or an ``event: error`` came: nothing after it matters."""
        return self.done or self._failure is not None

    def check(self) -> None:
        """Raise the error the upstream reported mid-stream, if it did."""
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        self.check()
        if not self.done:
            raise UpstreamError("The upstream stream ended before it was complete.")


# ------------------------------------------------------------------------------- errors
def _mapped(status: int, message: str | None, headers: Mapping[str, str]) -> GatewayError:
    if status == 413:
        return RequestTooLargeError(f"The upstream rejected the request as too large: {message or 'no detail'}")
    return error_for_status(status, message, None, headers)


def _error_fields(payload: Any) -> tuple[str | None, str | None]:
    err = payload.get("error") if isinstance(payload, Mapping) else None
    if not isinstance(err, Mapping):
        return None, None
    kind, message = err.get("type"), err.get("message")
    return (kind if isinstance(kind, str) else None), (str(message) if message else None)


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    """An Anthropic error response ``{"type": "error", "error": {"type", "message"}}`` -> our error."""
    try:
        _, message = _error_fields(orjson.loads(raw))
    except orjson.JSONDecodeError:
        message = None
    if message is not None:
        message = message[:500]
    return _mapped(status, message, headers)


def stream_error(payload: Mapping[str, Any]) -> GatewayError:
    """An ``event: error`` in a stream -> our error, by the status its type stands for."""
    kind, message = _error_fields(payload)
    if message is not None:
        message = message[:500]
    text = f"{kind}: {message}" if kind and message else (message or kind)
    return _mapped(error_status(kind), text, {})


# ------------------------------------------------------------------------------- others
def model_page(payload: Any) -> tuple[list[str], str | None]:
    """Model ids from one ``GET /models`` page, and the ``after_id`` of the next page (None: last)."""
    try:
        ids = [str(m["id"]) for m in payload["data"]]
    except (KeyError, TypeError) as exc:
        raise UpstreamError("The upstream sent a malformed model list.") from exc
    last = payload.get("last_id")
    return ids, (str(last) if payload.get("has_more") and last else None)


def embeddings_refused() -> BadRequestError:
    return BadRequestError(
        "Anthropic does not offer embeddings; route embedding models to another provider.", param="model"
    )
