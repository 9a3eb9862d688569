"""Google's Gemini API answers -> OpenAI shapes: results, the stream, errors, model lists.
Pure: no I/O, table-testable. Requests are built in :mod:`.requests`.

* ``finishReason`` MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL is a 502
  (``malformed_function_call``), never a "stop" that would pass leftover text off as an answer.
* A prompt blocked by ``promptFeedback.blockReason`` (no candidates) is a 200 with one choice,
  empty content and ``finish_reason: content_filter``, as OpenAI reports filtered output.
* Thought signatures ride in the OpenAI tool call id, after ``__thought__`` (see :mod:`.requests`).
* Thought-summary parts (``"thought": true``) are the message's ``reasoning_content`` (streamed as
  ``reasoning_content`` deltas), never part of the answer text.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import GatewayError, UpstreamError
from switchyard.protocol.openai import DONE, ChunkWriter
from switchyard.protocol.sse import SSEDecoder
from switchyard.providers.errors import error_for_status
from switchyard.providers.gemini.requests import THOUGHT_SEPARATOR

__all__ = [
    "StreamConverter",
    "chat_result",
    "embed_vectors",
    "error_from_response",
    "finish_reason",
    "malformed_call_error",
    "model_names",
    "usage_of",
]

_FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})
_MALFORMED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def embed_vectors(payload: Any, count: int) -> list[list[float]]:
    try:
        vectors = [list(e["values"]) for e in payload["embeddings"]]
    except (KeyError, TypeError) as exc:
        raise UpstreamError("The upstream sent a malformed embeddings response.") from exc
    if len(vectors) != count:
        raise UpstreamError("The upstream sent a different number of embeddings than inputs.")
    return vectors


def model_names(payload: Any) -> list[str]:
    try:
        return [str(m["name"]).removeprefix("models/") for m in payload.get("models") or ()]
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamError("The upstream sent a malformed model list.") from exc


# --------------------------------------------------------------------------- responses
def usage_of(payload: Mapping[str, Any]) -> Usage | None:
    meta = payload.get("usageMetadata")
    if not isinstance(meta, Mapping):
        return None
    return Usage(
        prompt_tokens=int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0),
        cache_read_tokens=int(meta.get("cachedContentTokenCount") or 0),  # a part of promptTokenCount
    )


def _usage_json(usage: Usage, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    meta = (payload or {}).get("usageMetadata") or {}
    if meta.get("thoughtsTokenCount"):
        out["completion_tokens_details"] = {"reasoning_tokens": int(meta["thoughtsTokenCount"])}
    if meta.get("cachedContentTokenCount"):
        out["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    return out


def malformed_call_error(reason: str) -> UpstreamError:
    return UpstreamError(
        f"The model produced a malformed function call (Gemini finishReason {reason}), so there is no valid "
        "tool call or answer to return. Retrying the request may succeed.",
        code="malformed_function_call",
    )


def finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    """OpenAI's finish_reason for a Gemini finishReason (None: not finished yet)."""
    if reason is None:
        return None
    if reason in _MALFORMED:
        raise malformed_call_error(reason)
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    call = part.get("functionCall") or {}
    call_id = str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}")
    if part.get("thoughtSignature"):
        call_id = f"{call_id}{THOUGHT_SEPARATOR}{part['thoughtSignature']}"
    args = call.get("args")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": str(call.get("name") or ""), "arguments": orjson.dumps(args or {}).decode()},
    }


def _parts(candidate: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """The answer text, the thought summaries and the tool calls of one candidate."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "functionCall" in part:
            calls.append(_tool_call(part))
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    return "".join(texts), "".join(thoughts), calls


def _raise_if_error(payload: Mapping[str, Any]) -> None:
    err = payload.get("error")
    if isinstance(err, Mapping):
        message = str(err.get("message") or "")[:500]
        raise UpstreamError(f"The upstream failed: {message}")


def _blocked(payload: Mapping[str, Any]) -> bool:
    return not payload.get("candidates") and bool((payload.get("promptFeedback") or {}).get("blockReason"))


def chat_result(
    payload: Mapping[str, Any], request: ChatRequest, target: Target
) -> tuple[dict[str, Any], Usage]:
    """The OpenAI response for a whole generateContent response, and its usage."""
    _raise_if_error(payload)
    chat = request.kind is GenerationKind.CHAT
    usage = usage_of(payload) or Usage(estimated=True)
    candidates = list(payload.get("candidates") or ())
    if not candidates and not _blocked(payload):
        raise UpstreamError("The upstream answered with no candidates.")
    choices: list[dict[str, Any]] = []
    for pos, candidate in enumerate(candidates or [{"finishReason": "SAFETY"}]):
        index = int(candidate.get("index", pos))
        text, thoughts, calls = _parts(candidate)
        reason = finish_reason(str(candidate.get("finishReason") or "STOP"), bool(calls))
        if not chat:
            choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": reason})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
        if thoughts:
            message["reasoning_content"] = thoughts
        if calls:
            message["tool_calls"] = calls
        elif message["content"] is None:
            message["content"] = ""
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": reason})
    choices.sort(key=lambda c: c["index"])
    response_id = payload.get("responseId") or uuid.uuid4().hex
    result = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{response_id}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": target.alias,
        "choices": choices,
        "usage": _usage_json(usage, payload),
    }
    return result, usage


def _sse_json(data: bytes) -> Any:
    if data.strip() == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a malformed stream event.") from exc


class StreamConverter:
    """Turns Gemini's SSE stream (``data: {GenerateContentResponse}``) into OpenAI chunk events.

    Feed it bytes as they arrive, in any split; :meth:`finish` at the end of the upstream
    stream gives the usage chunk and ``[DONE]``, or raises if the stream was not complete.
    """

    stop_reading = False  # the answer is read to its end, so its connection can be reused

    def __init__(self, request: ChatRequest, target: Target) -> None:
        self._out = ChunkWriter(request, target.alias)
        self._decoder = SSEDecoder()
        self.done = False
        self._seen: set[int] = set()
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}
        self._last: Mapping[str, Any] | None = None
        self.usage: Usage | None = None

    def _start(self, index: int) -> bytes:
        """The role chunk that opens a choice, as OpenAI sends it before text (or a finish)."""
        if index in self._started:
            return b""
        self._started.add(index)
        if not self._out.chat:
            return b""
        return self._out.delta({"role": "assistant", "content": "", "refusal": None}, index)

    def _tool_calls(self, index: int, calls: list[dict[str, Any]]) -> tuple[bytes, int]:
        """Each call as OpenAI streams one: its id and name (opening the choice, if first), then its arguments."""
        out = b""
        first = self._calls.get(index, 0)
        self._calls[index] = first + len(calls)
        for k, call in enumerate(calls):
            function = call["function"]
            head: dict[str, Any] = {"tool_calls": [{"index": first + k, "id": call["id"], "type": "function",
                                                    "function": {"name": function["name"], "arguments": ""}}]}
            if index not in self._started:
                self._started.add(index)
                head = {"role": "assistant", "content": None, "refusal": None, **head}
            out += self._out.delta(head, index)
            args = {"tool_calls": [{"index": first + k, "function": {"arguments": function["arguments"]}}]}
            out += self._out.delta(args, index)
        return out, 2 * len(calls)

    def _candidate(self, candidate: Mapping[str, Any], pos: int) -> tuple[bytes, int]:
        index = int(candidate.get("index", pos))
        if index in self._finished:
            return b"", 0
        self._seen.add(index)
        out = b""
        events = 0
        text, thoughts, calls = _parts(candidate)
        if thoughts and self._out.chat:
            out += self._start(index)
            out += self._out.delta({"reasoning_content": thoughts}, index)
            events += 1
        if text:
            out += self._start(index)
            out += self._out.text(text, index)
            events += 1
        if calls and self._out.chat:
            data, count = self._tool_calls(index, calls)
            out += data
            events += count
        raw_reason = candidate.get("finishReason")
        if raw_reason:
            reason = finish_reason(str(raw_reason), self._calls.get(index, 0) > 0)
            out += self._start(index)
            out += self._out.finish(reason, index)
            self._finished.add(index)
        return out, events

    def _translate(self, payload: Any) -> tuple[bytes, int]:
        if not isinstance(payload, Mapping):
            raise UpstreamError("The upstream sent a malformed stream event.")
        if isinstance(payload.get("error"), Mapping):
            message = str(payload["error"].get("message") or "")[:500]
            raise UpstreamError(f"The upstream failed mid-stream: {message}")
        usage = usage_of(payload)
        if usage is not None:
            self.usage, self._last = usage, payload
        out = b""
        events = 0
        if _blocked(payload):
            self._seen.add(0)
            out += self._start(0)
            out += self._out.finish("content_filter")
            self._finished.add(0)
        for pos, candidate in enumerate(payload.get("candidates") or ()):
            data, count = self._candidate(candidate, pos)
            out += data
            events += count
        return out, events

    def feed(self, data: bytes) -> StreamPiece | None:
        out = b""
        events = 0
        for event in self._decoder.feed(data):
            payload = _sse_json(event.data)
            if payload is not None:
                data_out, count = self._translate(payload)
                out += data_out
                events += count
        return StreamPiece(data=out, events=events) if out else None

    def finish(self) -> StreamPiece:
        """The closing events once the upstream stream ended; raises if it ended early."""
        out = b""
        events = 0
        last = self._decoder.close()  # an event without its blank line
        if last is not None:
            payload = _sse_json(last.data)
            if payload is not None:
                out, events = self._translate(payload)
        if not self._finished or self._seen - self._finished:
            raise UpstreamError("The upstream stream ended before it was complete.")
        out += self._out.usage(_usage_json(self.usage or Usage(), self._last))
        self.done = True
        return StreamPiece(data=out + DONE, events=events, usage=self.usage, done=True)


# ------------------------------------------------------------------------------ errors
def _retry_delay(details: Any) -> str | None:
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return match[1]
    return None


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    """A Google error body (``{"error": {"code", "message", "status", "details"}}``) as a gateway error.

    Google answers a bad API key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID): that is the
    gateway's credential failing, so it is mapped like a 401, not passed off as the client's 400.
    RetryInfo's ``retryDelay`` stands in for a missing Retry-After.
    """
    message: str | None = None
    details: Any = None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, list) and payload:  # the non-SSE stream endpoint wraps errors in an array
        payload = payload[0]
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        message = str(err.get("message") or "") or None
        details = err.get("details")
    if message is not None:
        message = message[:500]
    reasons = {d.get("reason") for d in details if isinstance(d, Mapping)} if isinstance(details, list) else set()
    if status == 400 and reasons & _AUTH_REASONS:
        status = 401
    merged = dict(headers)
    if "Retry-After" not in headers and "retry-after" not in headers:
        delay = _retry_delay(details)
        if delay is not None:
            merged["Retry-After"] = delay
    return error_for_status(status, message, None, merged)
