"""OpenAI shapes <-> Ollama's native API (/api/chat, /api/generate, /api/embed). Pure: no I/O.

``reasoning_effort`` becomes ``/api/chat``'s ``think`` (:func:`think_value`): the level itself
(low/medium/high) for gpt-oss models, which take levels, ``true`` for the others, ``false`` for
``none``. The answer's ``message.thinking`` is the message's ``reasoning_content`` (streamed as
``reasoning_content`` deltas). Ollama's 400 for a model that cannot think names
``reasoning_effort``, so ``/v1/messages`` asks once more without it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError, UpstreamError
from switchyard.protocol.ndjson import MAX_LINE, LineTooLong, MalformedLine, NDJSONDecoder
from switchyard.protocol.openai import DONE, ChunkWriter
from switchyard.providers.errors import error_for_status

__all__ = [
    "StreamConverter",
    "chat_body",
    "chat_result",
    "embed_body",
    "error_from_response",
    "finish_reason",
    "objects",
    "think_value",
    "usage_of",
]

_OPTION_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def _text_and_images(content: Any, index: int) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if part.get("type") == "text":
            texts.append(str(part.get("text", "")))
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if not url.startswith("data:") or ";base64," not in url:
                raise BadRequestError(
                    "Ollama models take images as base64 data URLs only.", param=f"messages[{index}].content"
                )
            images.append(url.split(";base64,", 1)[1])
    return "".join(texts), images


def _message(msg: Mapping[str, Any], index: int) -> dict[str, Any]:
    text, images = _text_and_images(msg.get("content"), index)
    role = "system" if msg.get("role") == "developer" else msg.get("role")
    out: dict[str, Any] = {"role": role, "content": text}
    if images:
        out["images"] = images
    calls = msg.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {"function": {"name": c["function"]["name"], "arguments": _arguments(c["function"], index)}}
            for c in calls
        ]
    return out


def _arguments(function: Mapping[str, Any], index: int) -> Any:
    raw = function.get("arguments") or "{}"
    if not isinstance(raw, str):
        return raw
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("tool call arguments must be JSON", param=f"messages[{index}].tool_calls") from exc


def think_value(effort: Any, model: str) -> bool | str | None:
    """Ollama's ``think`` for OpenAI's ``reasoning_effort`` (None: nothing to send)."""
    if effort is None:
        return None
    if effort == "none":
        return False
    if effort not in _LEVELS:
        raise BadRequestError(
            "reasoning_effort must be one of 'none', 'minimal', 'low', 'medium', 'high' or 'xhigh'.",
            param="reasoning_effort",
        )
    return _LEVELS[effort] if "gpt-oss" in model else True


def chat_body(request: ChatRequest, target: Target) -> tuple[str, dict[str, Any]]:
    """The Ollama path and body for a chat or legacy completion request."""
    src = request.body
    if (src.get("n") or 1) > 1:
        raise BadRequestError("This model's provider (ollama) supports only n=1.", param="n")
    options = {dst: src[key] for key, dst in _OPTION_FIELDS.items() if src.get(key) is not None}
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    stop = src.get("stop")
    if stop:
        options["stop"] = [stop] if isinstance(stop, str) else list(stop)
    body: dict[str, Any] = {"model": target.upstream_model, "stream": request.stream, "options": options}
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    fmt = src.get("response_format") or {}
    if fmt.get("type") == "json_object":
        body["format"] = "json"
    elif fmt.get("type") == "json_schema":
        body["format"] = (fmt.get("json_schema") or {}).get("schema", "json")
    if request.kind is GenerationKind.COMPLETION:
        prompt = src.get("prompt", "")
        if not isinstance(prompt, str):
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt = prompt[0]
            else:
                raise BadRequestError("ollama takes a single string prompt", param="prompt")
        body["prompt"] = prompt
        body["raw"] = False
        return "/api/generate", body
    think = think_value(src.get("reasoning_effort"), target.upstream_model)
    if think is not None:
        body["think"] = think
    body["messages"] = [_message(m, i) for i, m in enumerate(src.get("messages", []))]
    tools = src.get("tools") or [{"type": "function", "function": f} for f in src.get("functions") or ()]
    if tools and src.get("tool_choice", src.get("function_call")) != "none":
        body["tools"] = tools
    return "/api/chat", body


def embed_body(inputs: Sequence[Any], target: Target, keep_alive: str | int | None) -> dict[str, Any]:
    if any(not isinstance(item, str) for item in inputs):
        raise BadRequestError("This model's provider (ollama) takes text input, not token arrays.", param="input")
    body: dict[str, Any] = {"model": target.upstream_model, "input": list(inputs)}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def usage_of(payload: Mapping[str, Any]) -> Usage:
    return Usage(
        prompt_tokens=int(payload.get("prompt_eval_count") or 0),
        completion_tokens=int(payload.get("eval_count") or 0),
    )


def finish_reason(payload: Mapping[str, Any], has_tool_calls: bool) -> str:
    if has_tool_calls:
        return "tool_calls"
    return "length" if payload.get("done_reason") == "length" else "stop"


def _tool_calls(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for i, call in enumerate(message.get("tool_calls") or []):
        fn = call.get("function", {})
        args = fn.get("arguments", {})
        calls.append(
            {
                "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": args if isinstance(args, str) else orjson.dumps(args).decode(),
                },
                "index": i,
            }
        )
    return calls


def chat_result(payload: Mapping[str, Any], request: ChatRequest, target: Target) -> dict[str, Any]:
    usage = usage_of(payload)
    usage_json = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    created = int(time.time())
    if request.kind is GenerationKind.COMPLETION:
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": created,
            "model": target.alias,
            "choices": [
                {"index": 0, "text": payload.get("response", ""), "logprobs": None,
                 "finish_reason": finish_reason(payload, False)}
            ],
            "usage": usage_json,
        }
    message = payload.get("message") or {}
    calls = _tool_calls(message)
    for call in calls:
        call.pop("index")
    out_msg: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None, "refusal": None}
    if message.get("thinking"):
        out_msg["reasoning_content"] = str(message["thinking"])
    if calls:
        out_msg["tool_calls"] = calls
    elif out_msg["content"] is None:
        out_msg["content"] = ""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": created,
        "model": target.alias,
        "choices": [
            {"index": 0, "message": out_msg, "logprobs": None, "finish_reason": finish_reason(payload, bool(calls))}
        ],
        "usage": usage_json,
    }


def objects(decoder: NDJSONDecoder, data: bytes | None, what: str) -> list[dict[str, Any]]:
    """The objects of the NDJSON lines ``data`` completes (None: the stream ended, so its last line
    too); a line that is not a JSON object is a 502 naming ``what`` the lines are."""
    try:
        values = decoder.feed(data) if data is not None else decoder.close()
    except LineTooLong as exc:
        raise UpstreamError(f"The upstream sent a line longer than {MAX_LINE >> 20} MiB.") from exc
    except MalformedLine as exc:
        raise UpstreamError(f"The upstream sent a malformed {what} line.") from exc
    if not all(isinstance(value, dict) for value in values):
        raise UpstreamError(f"The upstream sent a malformed {what} line.")
    return values


class StreamConverter:
    """Turns Ollama's NDJSON stream (in reads split anywhere) into OpenAI SSE chunk events.

    :meth:`feed` each network read and relay the piece it returns; :meth:`finish` when the
    connection ends (raises when the ``done`` object never came).
    """

    stop_reading = False  # the answer is read to its end, so its connection can be reused

    def __init__(self, request: ChatRequest, target: Target) -> None:
        self._out = ChunkWriter(request, target.alias)
        self._first = True
        self._saw_tools = False
        self._calls = 0  # tool calls streamed so far: each gets the next index
        self._decoder = NDJSONDecoder()
        self.done = False
        self.usage: Usage | None = None

    def _open(self) -> bytes:
        """The role chunk that opens the answer, before its first text."""
        if not self._first:
            return b""
        self._first = False
        return self._out.delta({"role": "assistant", "content": "", "refusal": None})

    def feed(self, data: bytes) -> StreamPiece | None:
        """The OpenAI events for every object this read completes (None if none)."""
        return self._piece(objects(self._decoder, data, "stream"))

    def finish(self) -> StreamPiece | None:
        """The last object if the stream did not end its line; raises if ``done`` never came."""
        piece = self._piece(objects(self._decoder, None, "stream"))
        if not self.done:
            raise UpstreamError("The upstream stream ended before it was complete.")
        return piece

    def _piece(self, payloads: list[dict[str, Any]]) -> StreamPiece | None:
        out = b""
        events = 0
        for payload in payloads:
            data, count = self._object(payload)
            out += data
            events += count
        if not out:
            return None
        return StreamPiece(data=out, events=events, usage=self.usage if self.done else None, done=self.done)

    def _object(self, payload: Mapping[str, Any]) -> tuple[bytes, int]:
        """SSE bytes for one NDJSON object, and how many content events they hold."""
        if "error" in payload:
            raise UpstreamError(f"The upstream failed mid-stream: {payload['error']}")
        out = b""
        events = 0
        if self._out.chat:
            message = payload.get("message") or {}
            if message.get("thinking"):
                out += self._open() + self._out.delta({"reasoning_content": str(message["thinking"])})
                events += 1
            if message.get("content"):
                out += self._open() + self._out.text(message["content"])
                events += 1
            for call in _tool_calls(message):  # as OpenAI streams a call: id and name, then the arguments
                self._saw_tools = True
                index, self._calls = self._calls, self._calls + 1
                head: dict[str, Any] = {"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                                        "function": {"name": call["function"]["name"],
                                                                     "arguments": ""}}]}
                if self._first:
                    self._first = False
                    head = {"role": "assistant", "content": None, "refusal": None, **head}
                out += self._out.delta(head)
                out += self._out.delta({"tool_calls": [{"index": index,
                                                    "function": {"arguments": call["function"]["arguments"]}}]})
                events += 2
        elif payload.get("response"):
            out += self._out.text(payload["response"])
            events += 1
        if payload.get("done"):
            self.done = True
            if self._out.chat:
                out += self._open()  # an empty answer still opens with the role, as OpenAI's do
            u = self.usage = usage_of(payload)
            out += self._out.finish(finish_reason(payload, self._saw_tools))
            out += self._out.usage({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                                    "total_tokens": u.total_tokens})
            out += DONE
        return out, events


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Ollama's ``{"error": "..."}`` as a gateway error; "does not support thinking" names ``reasoning_effort``."""
    message: str | None = None
    try:
        payload = orjson.loads(raw)
        if isinstance(payload, dict) and payload.get("error"):
            message = str(payload["error"])[:500]
    except orjson.JSONDecodeError:
        message = None
    param = "reasoning_effort" if message and "does not support thinking" in message else None
    return error_for_status(status, message, param, headers)
