"""Anthropic Messages requests -> the gateway's OpenAI chat body. Pure: no I/O, table-testable.

An Anthropic client (the ``anthropic`` SDK, Claude Code) calls ``POST /v1/messages``; the request
becomes an OpenAI chat body that goes through ``parse_chat_request`` and the gateway like any
other. Decisions worth knowing:

* ``system`` given as several text blocks is joined with blank lines into one system message.
  ``system`` turns inside ``messages`` (string or text blocks) become OpenAI ``system`` messages
  in place; upstreams that take one system prompt merge them (``providers/anthropic``, ``gemini``).
* ``tool_result`` blocks become ``role: tool`` messages in order; ``is_error`` prefixes the text
  with ``"Error: "``; images inside a tool result follow as a user message (OpenAI tool messages
  carry text only).
* ``thinking`` / ``redacted_thinking`` blocks in assistant history are dropped (no OpenAI
  equivalent); ``citations`` on blocks are ignored. Other unknown block types are a 400 naming
  the field.
* ``cache_control`` (prompt caching) is kept, with ``keep_cache=True`` (the endpoint sets it for
  routes with an Anthropic deployment), on the OpenAI parts it maps to: text, image and document
  parts (a part with it is never collapsed to a plain string), system text parts, tool
  messages (as a text part) and tool definitions, as LiteLLM and OpenRouter carry it; the
  Anthropic provider puts it back on the blocks. Other routes get the plain translation (an
  OpenAI upstream may refuse the unknown field).
* ``thinking`` and ``output_config.effort`` become ``reasoning_effort`` (:func:`reasoning_effort`):
  ``effort`` wins (``max``/``xhigh`` -> ``high``); else ``enabled`` maps its ``budget_tokens``
  (under 4096 ``low``, under 16384 ``medium``, else ``high``) and ``adaptive`` is ``medium``.
  ``disabled`` sends nothing. The endpoint leaves it out for routes to Anthropic upstreams.
* ``metadata.user_id`` is never forwarded as given (Claude Code puts device and session ids in
  it): OpenAI's ``user`` gets ``"uid-"`` and the first 32 hex digits of its SHA-256.
* Other top-level Anthropic fields without an OpenAI meaning (``service_tier``, ...) are not
  forwarded; ``top_k`` is passed through as an extra field for upstreams that know it;
  ``output_config.format`` (structured outputs) becomes a ``json_schema`` ``response_format``.
* Errors use Anthropic's wording and dotted paths (``messages.1.content.0.type: ...``) so that
  clients' own fallbacks recognise them; ``param`` keeps the OpenAI-style path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest
from switchyard.errors import BadRequestError
from switchyard.protocol.openai import parse_chat_request
from switchyard.protocol.openai.requests import STEERING_FIELDS

__all__ = ["chat_request", "hashed_user", "openai_body", "reasoning_effort", "wants_thinking"]

_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
_TOOL_TYPES = frozenset({"custom"})
_USER_BLOCKS = "'text', 'image', 'document', 'tool_result', 'search_result'"
_ASSISTANT_BLOCKS = "'text', 'tool_use', 'thinking', 'redacted_thinking'"
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_INDEX = re.compile(r"\[(\d+)\]")


def _dotted(param: str) -> str:
    """``messages[1].content[0].type`` -> ``messages.1.content.0.type``, as Anthropic writes paths."""
    return _INDEX.sub(r".\1", param)


def _bad(param: str, problem: str) -> BadRequestError:
    return BadRequestError(f"{_dotted(param)}: {problem}", param=param)


def _bad_tag(param: str, kind: Any, expected: str) -> BadRequestError:
    return _bad(param, f"Input tag {kind!r} found using 'type' does not match any of the expected tags: {expected}")


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


def _cached(part: dict[str, Any], block: Mapping[str, Any], keep: bool) -> dict[str, Any]:
    """``part`` with the block's ``cache_control`` when it is kept."""
    if keep and isinstance(block.get("cache_control"), Mapping) and block["cache_control"]:
        part["cache_control"] = dict(block["cache_control"])
    return part


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One text part becomes a plain string (what every upstream takes); anything else stays a list."""
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return str(parts[0]["text"])
    return parts


def _tool_result(block: Mapping[str, Any], where: str, keep: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
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
                raise _bad_tag(f"{at}.type", kind, "'text', 'image', 'document', 'search_result'")
    elif raw is not None:
        raise _bad(f"{where}.content", "tool_result content must be a string or a list of blocks")
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = f"Error: {text}" if text else "Error"
    part = _cached({"type": "text", "text": text}, block, keep)
    if "cache_control" in part:
        return {"role": "tool", "tool_call_id": call_id, "content": [part]}, images
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_turn(blocks: list[Any], where: str, keep: bool) -> list[dict[str, Any]]:
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
            message, images = _tool_result(block, at, keep)
            out.append(message)
            deferred.extend(images)
        elif kind == "text":
            parts.append(_cached({"type": "text", "text": _text_of(block, at)}, block, keep))
        elif kind == "image":
            parts.append(_cached(_image_part(block, at), block, keep))
        elif kind == "document":
            parts.append(_cached(_document_part(block, at), block, keep))
        else:
            raise _bad_tag(f"{at}.type", kind, _USER_BLOCKS)
    flush()
    return out


def _assistant_turn(blocks: list[Any], where: str, keep: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        at = f"{where}[{i}]"
        kind = block.get("type") if isinstance(block, Mapping) else None
        if kind == "text":
            parts.append(_cached({"type": "text", "text": _text_of(block, at)}, block, keep))
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
            raise _bad_tag(f"{at}.type", kind, _ASSISTANT_BLOCKS)
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


def _messages(raw: Any, keep: bool) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise _bad("messages", "a non-empty list of messages is required")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _bad(where, "a message must be an object")
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "assistant", "system"):
            raise _bad(f"{where}.role", f"Input tag {role!r} found using 'role' does not match any of the "
                       "expected tags: 'user', 'assistant', 'system'")
        if role == "system":
            out.append({"role": "system", "content": _system(content, f"{where}.content", keep)})
        elif isinstance(content, str):
            out.append({"role": role, "content": content})
        elif isinstance(content, list):
            if role == "user":
                out.extend(_user_turn(content, f"{where}.content", keep))
            else:
                out.append(_assistant_turn(content, f"{where}.content", keep))
        else:
            raise _bad(f"{where}.content", "content must be a string or a list of content blocks")
    return out


def _system(raw: Any, where: str = "system", keep: bool = False) -> str | list[dict[str, Any]]:
    """A system prompt (top-level or a ``system`` turn): a string, or text blocks joined by blank
    lines; text parts when a block's ``cache_control`` is kept."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        parts = []
        for i, block in enumerate(raw):
            at = f"{where}[{i}]"
            kind = block.get("type") if isinstance(block, Mapping) else None
            if kind != "text":
                raise _bad_tag(f"{at}.type", kind, "'text'")
            parts.append(_cached({"type": "text", "text": _text_of(block, at)}, block, keep))
        if any("cache_control" in part for part in parts):
            return parts
        return "\n\n".join(part["text"] for part in parts)
    raise _bad(where, "Input should be a valid string or a list of text blocks")


def _tools(raw: Any, keep: bool) -> list[dict[str, Any]]:
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
        out.append(_cached({"type": "function", "function": function}, tool, keep))
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


def hashed_user(user_id: str) -> str:
    """A stable stand-in for ``metadata.user_id`` that does not carry its content upstream."""
    return "uid-" + hashlib.sha256(user_id.encode()).hexdigest()[:32]


def _thinking(raw: Any) -> str | None:
    """The ``thinking`` type (``enabled``, ``adaptive``, ``disabled``) after checking its shape."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind not in ("enabled", "adaptive", "disabled"):
        raise _bad_tag("thinking.type", kind, "'enabled', 'disabled', 'adaptive'")
    if kind == "enabled":
        budget = raw.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise _bad("thinking.enabled.budget_tokens", "Input should be a valid positive integer")
    return str(kind)


def wants_thinking(body: Any) -> bool:
    """False only when the request turned thinking off: then no ``thinking`` blocks come back."""
    raw = body.get("thinking") if isinstance(body, Mapping) else None
    return not (isinstance(raw, Mapping) and raw.get("type") == "disabled")


def reasoning_effort(body: Mapping[str, Any]) -> str | None:
    """OpenAI's ``reasoning_effort`` for ``thinking`` and ``output_config.effort`` (None: not asked)."""
    kind = _thinking(body.get("thinking"))
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, Mapping) else None
    if effort is not None:
        if effort not in _EFFORTS:
            raise _bad("output_config.effort", "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
        return _EFFORTS[effort] if kind != "disabled" else None
    if kind == "enabled":
        budget = int(body["thinking"]["budget_tokens"])
        return "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    return "medium" if kind == "adaptive" else None


def openai_body(body: Any, *, need_max_tokens: bool = True, keep_cache: bool = False) -> dict[str, Any]:
    """An Anthropic Messages request -> an OpenAI chat completions body.

    ``need_max_tokens=False`` is for ``/v1/messages/count_tokens``, whose body has none;
    ``keep_cache=True`` keeps ``cache_control`` (for routes to Anthropic upstreams).
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
            raise _bad("max_tokens", "Field required")  # Anthropic's own wording
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "must be a positive integer")
    else:
        out["max_tokens"] = max_tokens
    messages = _messages(body.get("messages"), keep_cache)
    system = _system(body["system"], keep=keep_cache) if body.get("system") is not None else None
    out["messages"] = ([{"role": "system", "content": system}] if system is not None else []) + messages
    if body.get("tools") is not None:
        tools = _tools(body["tools"], keep_cache)
        if tools:
            out["tools"] = tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad("stop_sequences", "must be a list of strings")
        if stops:
            out["stop"] = stops
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    _output_config(body.get("output_config"), out)
    effort = reasoning_effort(body)
    if effort is not None:
        out["reasoning_effort"] = effort
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise _bad("metadata", "metadata must be an object")
        if isinstance(metadata.get("user_id"), str) and metadata["user_id"]:
            out["user"] = hashed_user(metadata["user_id"])
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "stream must be a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so message_delta can carry the real counts
    return out


def chat_request(body: Any, *, need_max_tokens: bool = True, keep_cache: bool = False) -> ChatRequest:
    """Translate, then validate exactly as ``/v1/chat/completions`` does (ranges, steering fields).

    Whatever that validation refuses is a field both APIs name alike (``temperature``, ``top_p``).
    """
    return parse_chat_request(openai_body(body, need_max_tokens=need_max_tokens, keep_cache=keep_cache))
