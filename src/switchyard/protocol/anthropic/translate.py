"""Anthropic Messages API <-> the gateway's OpenAI chat shape. Pure: no I/O, table-testable.

Inbound only: an Anthropic client (the ``anthropic`` SDK, Claude Code) calls ``POST /v1/messages``;
the request becomes an OpenAI chat body that goes through ``parse_chat_request`` and the gateway
like any other, and the OpenAI answer (JSON, or SSE bytes) is turned back into Anthropic shapes.

Decisions worth knowing:

* ``system`` given as several text blocks is joined with blank lines into one system message.
* ``tool_result`` blocks become ``role: tool`` messages in order; ``is_error`` prefixes the text
  with ``"Error: "``; images inside a tool result follow as a user message (OpenAI tool messages
  carry text only).
* ``thinking`` / ``redacted_thinking`` blocks in assistant history are dropped (no OpenAI
  equivalent); ``cache_control`` and ``citations`` on blocks are ignored. Other unknown block
  types are a 400 naming the field.
* Top-level Anthropic fields without an OpenAI meaning (``thinking``, ``service_tier``,
  ``output_config.effort``, ...) are not forwarded; ``top_k`` is passed through as an extra field
  for upstreams that know it; ``output_config.format`` (structured outputs) becomes a
  ``json_schema`` ``response_format``.
* ``stop_sequence`` is always ``null``: an OpenAI upstream reports ``finish_reason: stop`` for a
  stop sequence and for a natural end alike, so both become ``end_turn``.
* Streams: ``message_start`` carries ``input_tokens: 0`` (the upstream reports usage only at the
  end); the real ``input_tokens`` and ``output_tokens`` come in ``message_delta`` (cumulative, as
  the Anthropic SDKs read them).
* Error ``type`` follows the HTTP status: 503 is ``overloaded_error`` but keeps status 503
  (Anthropic uses 529, which generic HTTP clients and proxies do not know).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError
from switchyard.protocol.openai import parse_chat_request
from switchyard.protocol.openai.requests import STEERING_FIELDS

__all__ = [
    "StreamConverter",
    "chat_request",
    "error_body",
    "error_type",
    "message_from_completion",
    "openai_body",
    "sse_event",
]

_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
}
_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_TOOL_TYPES = frozenset({"custom"})


# ---------------------------------------------------------------------------- errors
def error_type(status: int) -> str:
    """The Anthropic error ``type`` for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def error_body(exc: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` (+ ``request_id`` when known)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type(exc.status_code), "message": exc.message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def sse_event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# --------------------------------------------------------------------------- request
def _bad(param: str, problem: str) -> BadRequestError:
    return BadRequestError(f"Invalid request: {param}: {problem}", param=param)


def _text_of(block: Mapping[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad(f"{where}.text", "a text block needs a string text")
    return text


def _image_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, Mapping):
        raise _bad(f"{where}.source", "an image block needs a source object")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str) or not data:
            raise _bad(f"{where}.source", "a base64 image source needs media_type and data")
        url = f"data:{media};base64,{data}"
    elif kind == "url":
        given = source.get("url")
        if not isinstance(given, str) or not given:
            raise _bad(f"{where}.source.url", "a url image source needs a url")
        url = given
    else:
        raise _bad(f"{where}.source.type", f"unsupported image source type {kind!r} (use base64 or url)")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    if isinstance(source, Mapping) and kind == "text" and isinstance(source.get("data"), str):
        return {"type": "text", "text": source["data"]}
    if isinstance(source, Mapping) and kind == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") or "application/pdf"
        file: dict[str, Any] = {"file_data": f"data:{media};base64,{source['data']}"}
        if isinstance(block.get("title"), str):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    raise _bad(f"{where}.source", f"unsupported document source type {kind!r} (use text or base64)")


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One text part becomes a plain string (what every upstream takes); anything else stays a list."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        return str(parts[0]["text"])
    return parts


def _tool_result(block: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.tool_use_id", "a tool_result block needs tool_use_id")
    raw = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(raw, str):
        texts.append(raw)
    elif isinstance(raw, list):
        for j, part in enumerate(raw):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "text":
                texts.append(_text_of(part, at))
            elif kind == "image":
                images.append(_image_part(part, at))
            elif kind == "document":
                doc = _document_part(part, at)
                if doc["type"] == "text":
                    texts.append(doc["text"])
                else:
                    images.append(doc)
            else:
                raise _bad(f"{at}.type", f"unsupported tool_result content block type {kind!r}")
    elif raw is not None:
        raise _bad(f"{where}.content", "tool_result content must be a string or a list of blocks")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_turn(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []  # images from tool results: after the tool messages

    def flush() -> None:
        if parts or deferred:
            out.append({"role": "user", "content": _content(deferred + parts)})
            parts.clear()
            deferred.clear()

    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "tool_result":
            if parts:
                flush()
            message, images = _tool_result(block, at)
            out.append(message)
            deferred.extend(images)
        elif kind == "text":
            parts.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "document":
            parts.append(_document_part(block, at))
        else:
            raise _bad(f"{at}.type", f"unsupported content block type {kind!r} in a user message")
    flush()
    return out


def _assistant_turn(blocks: list[Any], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            parts.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "tool_use":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{at}.id", "a tool_use block needs an id")
            if not isinstance(name, str) or not name:
                raise _bad(f"{at}.name", "a tool_use block needs a name")
            if not isinstance(args, Mapping):
                raise _bad(f"{at}.input", "tool_use input must be an object")
            calls.append({"id": call_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(args).decode()}})
        elif kind in _DROPPED_BLOCKS:
            continue
        else:
            raise _bad(f"{at}.type", f"unsupported content block type {kind!r} in an assistant message")
    message: dict[str, Any] = {"role": "assistant"}
    if parts:
        message["content"] = _content(parts)
    elif calls:
        message["content"] = None
    else:
        message["content"] = ""
    if calls:
        message["tool_calls"] = calls
    return message


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "a non-empty list of messages is required")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _bad(where, "a message must be an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "assistant"):
            raise _bad(f"{where}.role", "role must be 'user' or 'assistant'")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            if role == "user":
                out.extend(_user_turn(content, f"{where}.content"))
            else:
                out.append(_assistant_turn(content, f"{where}.content"))
        else:
            raise _bad(f"{where}.content", "content must be a string or a list of content blocks")
    return out


def _system(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        texts = []
        for i, block in enumerate(raw):
            at = f"system[{i}]"
            if not isinstance(block, Mapping) or block.get("type") != "text":
                raise _bad(f"{at}.type", "system blocks must be text blocks")
            texts.append(_text_of(block, at))
        return "\n\n".join(texts)
    raise _bad("system", "system must be a string or a list of text blocks")


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _bad("tools", "tools must be a list")
    out = []
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise _bad(at, "a tool must be an object")
        kind = tool.get("type")
        if kind is not None and kind not in _TOOL_TYPES:
            raise _bad(f"{at}.type", f"unsupported tool type {kind!r}: only client (custom) tools are supported")
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not name:
            raise _bad(f"{at}.name", "a tool needs a name")
        if not isinstance(schema, Mapping):
            raise _bad(f"{at}.input_schema", "a tool needs an input_schema object")
        function: dict[str, Any] = {"name": name, "parameters": dict(schema)}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(raw: Any, body: dict[str, Any]) -> None:
    if not isinstance(raw, Mapping):
        raise _bad("tool_choice", "tool_choice must be an object")
    kind = raw.get("type")
    if kind == "auto":
        choice: Any = "auto"
    elif kind == "any":
        choice = "required"
    elif kind == "none":
        choice = "none"
    elif kind == "tool":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "tool_choice of type tool needs a name")
        choice = {"type": "function", "function": {"name": name}}
    else:
        raise _bad("tool_choice.type", "tool_choice.type must be auto, any, tool or none")
    if "tools" in body:  # OpenAI refuses tool_choice / parallel_tool_calls without tools
        body["tool_choice"] = choice
        if raw.get("disable_parallel_tool_use") is True and choice != "none":
            body["parallel_tool_calls"] = False


def _output_config(raw: Any, body: dict[str, Any]) -> None:
    """``output_config.format`` (structured outputs) -> ``response_format``; ``effort`` has no portable meaning."""
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        raise _bad("output_config", "output_config must be an object")
    fmt = raw.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        raise _bad("output_config.format.type", "output_config.format.type must be json_schema")
    schema = fmt.get("schema")
    if not isinstance(schema, Mapping):
        raise _bad("output_config.format.schema", "a json_schema format needs a schema object")
    body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": dict(schema)}}


def openai_body(body: Any, *, need_max_tokens: bool = True) -> dict[str, Any]:
    """An Anthropic Messages request -> an OpenAI chat completions body.

    ``need_max_tokens=False`` is for ``/v1/messages/count_tokens``, whose body has none.
    """
    if not isinstance(body, Mapping):
        raise BadRequestError("The request body must be a JSON object.")
    steering = sorted(STEERING_FIELDS.intersection(body))
    if steering:
        raise BadRequestError(
            f"Invalid request: {steering[0]}: not accepted; the gateway decides where requests go.",
            param=steering[0], code="field_not_allowed",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a model is required")
    out: dict[str, Any] = {"model": model}
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if need_max_tokens:
            raise _bad("max_tokens", "Field required")
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "must be a positive integer")
    else:
        out["max_tokens"] = max_tokens
    messages = _messages(body.get("messages"))
    system = _system(body.get("system"))
    out["messages"] = ([{"role": "system", "content": system}] if system is not None else []) + messages
    if body.get("tools") is not None:
        tools = _tools(body["tools"])
        if tools:
            out["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        if len(stops) > 4:
            raise _bad("stop_sequences", "at most 4 stop sequences (what OpenAI-compatible upstreams take)")
        if stops:
            out["stop"] = stops
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    _output_config(body.get("output_config"), out)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _bad("metadata", "metadata must be an object")
        if isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
            out["user"] = metadata["user_id"]
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "stream must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so message_delta can carry the real counts
    return out


def chat_request(body: Any, *, need_max_tokens: bool = True) -> ChatRequest:
    """Translate, then validate exactly as ``/v1/chat/completions`` does (ranges, steering fields).

    Whatever that validation refuses is a field both APIs name alike (``temperature``, ``top_p``).
    """
    return parse_chat_request(openai_body(body, need_max_tokens=need_max_tokens))


# -------------------------------------------------------------------------- response
def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _stop_reason(finish: Any, has_tools: bool) -> str:
    reason = _FINISH.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if has_tools and reason == "end_turn":
        return "tool_use"  # some servers say "stop" after a tool call
    return reason


def _tool_input(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    # Not an object: keep what the model wrote, so the tool's input validation reports it.
    return dict(value) if isinstance(value, dict) else {"_raw_arguments": arguments}


def _flat_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def message_from_completion(payload: Any, model: str, usage: Usage | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic ``message`` (first choice)."""
    choices = payload.get("choices") if isinstance(payload, Mapping) else None
    choice = _mapping(choices[0]) if isinstance(choices, list) and choices else {}
    message = _mapping(choice.get("message"))
    content: list[dict[str, Any]] = []
    text = _flat_text(message.get("content")) or (message.get("refusal") or "")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, Mapping):
            continue
        function = _mapping(call.get("function"))
        content.append({
            "type": "tool_use",
            "id": call.get("id") or _new_id("toolu_"),
            "name": function.get("name") or "",
            "input": _tool_input(function.get("arguments")),
        })
    has_tools = any(block["type"] == "tool_use" for block in content)
    reported = payload.get("usage") if isinstance(payload, Mapping) else None
    if isinstance(reported, Mapping):
        input_tokens = int(reported.get("prompt_tokens") or 0)
        output_tokens = int(reported.get("completion_tokens") or 0)
    else:
        input_tokens = usage.prompt_tokens if usage else 0
        output_tokens = usage.completion_tokens if usage else 0
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), has_tools),
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


# ---------------------------------------------------------------------------- stream
class StreamConverter:
    """OpenAI chat.completion.chunk SSE bytes -> Anthropic Messages SSE events.

    ``feed`` takes bytes as the gateway yields them (any number of whole or partial events)
    and returns the Anthropic events they complete; ``message_start`` comes with the first
    call. ``[DONE]`` closes the message (block stops, ``message_delta``, ``message_stop``).
    An OpenAI ``data: {"error": ...}`` event, or ``error(exc)``, ends it with an Anthropic
    ``error`` event and no ``message_stop``. Every tool-call argument fragment is relayed as
    its own ``input_json_delta``, in order.
    """

    def __init__(self, model: str, *, message_id: str | None = None, input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = message_id or _new_id("msg_")
        self._input_tokens = input_tokens
        self._buffer = b""
        self._started = False
        self.ended = False
        self._open: int | None = None  # index of the block now open
        self._open_kind: str | None = None
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls[].index -> block index
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._deltas = 0

    # -- public
    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start())
        buffer = self._buffer + data
        if b"\r" in buffer:  # CRLF framing, possibly split across pieces
            buffer = buffer.replace(b"\r\n", b"\n")
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return b"".join(out)
        complete, self._buffer = buffer[:cut], buffer[cut + 2 :]
        for event in complete.split(b"\n\n"):
            if not self.ended:
                self._event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the message if the stream ended without ``[DONE]``; nothing when already ended."""
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start())
        if self._buffer.strip() and not self.ended:
            self._event(self._buffer, out)
            self._buffer = b""
        if not self.ended:
            self._close(out)
        return b"".join(out)

    def error(self, exc: GatewayError) -> bytes:
        return self._error(error_type(exc.status_code), exc.message)

    # -- internals
    def _message_start(self) -> bytes:
        self._started = True
        return sse_event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }})

    def _error(self, kind: str, message: str) -> bytes:
        self.ended = True
        out = self._message_start() if not self._started else b""
        return out + sse_event("error", {"type": "error", "error": {"type": kind, "message": message}})

    def _event(self, event: bytes, out: list[bytes]) -> None:
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data:
            return
        if data == b"[DONE]":
            self._close(out)
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        err = chunk.get("error")
        if err is not None:
            info = err if isinstance(err, Mapping) else {"message": str(err)}
            kind = _OPENAI_ERROR_TYPES.get(str(info.get("type")), "api_error")
            out.append(self._error(kind, str(info.get("message") or "The upstream failed mid-stream.")))
            return
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                self._text(text, out)
            for position, call in enumerate(delta.get("tool_calls") or ()):
                if isinstance(call, Mapping):
                    self._tool_call(call, position, out)
        if choice.get("finish_reason"):
            self._finish = str(choice["finish_reason"])

    def _start_block(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._stop_open(out)
        index = self._next
        self._next += 1
        self._open, self._open_kind = index, kind
        out.append(sse_event("content_block_start",
                             {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _stop_open(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": self._open}))
            self._open = self._open_kind = None

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        self._deltas += 1
        out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open_kind != "text":
            self._start_block("text", {"type": "text", "text": ""}, out)
        assert self._open is not None
        self._delta(self._open, {"type": "text_delta", "text": text}, out)

    def _tool_call(self, call: Mapping[str, Any], position: int, out: list[bytes]) -> None:
        key = call.get("index")
        key = key if isinstance(key, int) else position
        function = _mapping(call.get("function"))
        index = self._tools.get(key)
        if index is None:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or _new_id("toolu_"),
                     "name": function.get("name") or "", "input": {}}
            index = self._tools[key] = self._start_block("tool", block, out)
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # some servers send the whole object at once
            arguments = orjson.dumps(arguments).decode()
        if isinstance(arguments, str) and arguments:
            # to its own block even if another one opened meanwhile (interleaved calls): never drop a fragment
            self._delta(index, {"type": "input_json_delta", "partial_json": arguments}, out)

    def _close(self, out: list[bytes]) -> None:
        self._stop_open(out)
        self.ended = True
        usage: dict[str, Any] = {"output_tokens": self._deltas}
        if self._usage is not None:
            usage = {"input_tokens": int(self._usage.get("prompt_tokens") or 0),
                     "output_tokens": int(self._usage.get("completion_tokens") or 0)}
        out.append(sse_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(self._finish, bool(self._tools)), "stop_sequence": None},
            "usage": usage,
        }))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
