"""The gateway's OpenAI answers -> Anthropic Messages shapes: the message, errors. Pure.

* ``stop_sequence`` is always ``null``: an OpenAI upstream reports ``finish_reason: stop`` for a
  stop sequence and for a natural end alike, so both become ``end_turn``.
* Error ``type`` follows the HTTP status (:mod:`.codes`).
* The upstream's reasoning (``reasoning_content``, as vLLM and DeepSeek send it, or
  ``reasoning``, as Ollama and OpenRouter do) comes first as a ``thinking`` block. Its
  ``signature`` is opaque (a digest of the text): no upstream but Anthropic signs its thinking,
  and the thinking blocks a client sends back are dropped before they go upstream.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.usage import Usage
from switchyard.errors import GatewayError
from switchyard.protocol.anthropic.codes import error_type, stop_reason

__all__ = ["anthropic_usage", "as_mapping", "error_body", "message_from_completion", "new_id", "reasoning_of",
           "signature", "sse_event"]


def error_body(exc: GatewayError, request_id: str | None = None) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` (+ ``request_id`` when known)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type(exc.status_code), "message": exc.message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def sse_event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def new_id(prefix: str) -> str:
    """An Anthropic-style id: ``msg_`` or ``toolu_`` and 24 hex digits."""
    return prefix + uuid.uuid4().hex[:24]


def reasoning_of(message: Mapping[str, Any]) -> str:
    """The reasoning text an OpenAI-compatible message or delta carries ("" when none)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def signature(thinking: str) -> str:
    """The opaque ``signature`` of a thinking block the gateway made."""
    return "sy1" + hashlib.sha256(thinking.encode()).hexdigest()[:40]


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0


def anthropic_usage(reported: Any, usage: Usage | None = None) -> dict[str, int]:
    """OpenAI ``usage`` (else a core :class:`Usage`) -> Anthropic's: ``input_tokens`` is only the
    uncached part there; cache reads (``prompt_tokens_details.cached_tokens``) and writes
    (``cache_write_tokens``) are reported beside it, so their sum is OpenAI's ``prompt_tokens``."""
    if isinstance(reported, Mapping):
        details = as_mapping(reported.get("prompt_tokens_details"))
        prompt, output = _count(reported.get("prompt_tokens")), _count(reported.get("completion_tokens"))
        read, write = _count(details.get("cached_tokens")), _count(details.get("cache_write_tokens"))
    elif usage is not None:
        prompt, output = usage.prompt_tokens, usage.completion_tokens
        read, write = usage.cache_read_tokens, usage.cache_write_tokens
    else:
        prompt = output = read = write = 0
    return {"input_tokens": max(0, prompt - read - write), "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read, "output_tokens": output}


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


def message_from_completion(payload: Any, model: str, usage: Usage | None = None, *,
                            thinking: bool = True) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic ``message`` (first choice).

    ``thinking=False`` (the request turned thinking off) leaves the upstream's reasoning out."""
    choices = payload.get("choices") if isinstance(payload, Mapping) else None
    choice = as_mapping(choices[0]) if isinstance(choices, list) and choices else {}
    message = as_mapping(choice.get("message"))
    content: list[dict[str, Any]] = []
    reasoning = reasoning_of(message) if thinking else ""
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": signature(reasoning)})
    text = _flat_text(message.get("content")) or (message.get("refusal") or "")
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        if not isinstance(call, Mapping):
            continue
        function = as_mapping(call.get("function"))
        content.append({
            "type": "tool_use",
            "id": call.get("id") or new_id("toolu_"),
            "name": function.get("name") or "",
            "input": _tool_input(function.get("arguments")),
        })
    has_tools = any(block["type"] == "tool_use" for block in content)
    reported = payload.get("usage") if isinstance(payload, Mapping) else None
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), has_tools),
        "stop_sequence": None,
        "usage": anthropic_usage(reported, usage),
    }
