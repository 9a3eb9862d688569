"""An OpenAI ``chat.completion`` -> a Responses ``Response`` object. Pure.

Output items, in order: ``reasoning`` (from the upstream's ``reasoning_content`` / ``reasoning``),
one ``message`` (``output_text``, then ``refusal``), then one ``function_call`` or
``custom_tool_call`` per tool call. ``finish_reason: length`` makes the response ``incomplete``
(``max_output_tokens``), ``content_filter`` too (``content_filter``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from switchyard.core.usage import Usage
from switchyard.errors import GatewayError
from switchyard.protocol.responses.request import ChatTranslation
from switchyard.protocol.responses.tools import CUSTOM_INPUT

__all__ = [
    "Seal",
    "custom_input",
    "error_object",
    "new_id",
    "reasoning_item",
    "reasoning_text",
    "response_from_completion",
    "response_object",
    "status_of",
    "tool_call_item",
    "usage_object",
]

Seal = Callable[[str], str]
"""Seals a reasoning text into an item's ``encrypted_content`` (``include: ["reasoning.encrypted_content"]``)."""

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """``resp_``, ``msg_``, ``fc_``, ``ctc_``, ``rs_``, ``call_`` + 32 hex digits."""
    return prefix + os.urandom(16).hex()


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_object(usage: Mapping[str, Any] | Usage | None) -> dict[str, Any] | None:
    """Chat ``usage`` (or a core :class:`Usage`) -> Responses ``usage``; None stays None."""
    if usage is None:
        return None
    if isinstance(usage, Usage):
        prompt, completion, reasoning = usage.prompt_tokens, usage.completion_tokens, 0
        cached, written = usage.cache_read_tokens, usage.cache_write_tokens
    else:  # counts are nearly always ints: the others go through _int
        given, got = usage.get("prompt_tokens"), usage.get("completion_tokens")
        prompt = given if type(given) is int else _int(given)
        completion = got if type(got) is int else _int(got)
        cached = written = reasoning = 0
        if (details := usage.get("prompt_tokens_details")) is not None:
            details = _mapping(details)
            cached, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
        if (done := usage.get("completion_tokens_details")) is not None:
            reasoning = _int(_mapping(done).get("reasoning_tokens"))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def status_of(finish_reason: Any) -> tuple[str, dict[str, Any] | None]:
    """A chat ``finish_reason`` -> (Response ``status``, ``incomplete_details``)."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def error_object(exc: GatewayError) -> dict[str, Any]:
    """A ``Response.error``; its ``code`` is one of the few the schema allows."""
    code = "rate_limit_exceeded" if exc.status_code == 429 else "server_error"
    return {"code": code, "message": exc.message}


def custom_input(arguments: Any) -> str:
    """A custom tool's input from its function's arguments ``{"input": "..."}``.

    Arguments that are not that shape are returned as the model wrote them.
    """
    if isinstance(arguments, Mapping):
        value: Any = arguments
    elif isinstance(arguments, str):
        try:
            value = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return arguments
    else:
        return ""
    if isinstance(value, Mapping):
        if isinstance(value.get(CUSTOM_INPUT), str):
            return str(value[CUSTOM_INPUT])
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(value) == 1 and strings:
            return strings[0]
    return arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()


def reasoning_text(message: Mapping[str, Any]) -> str | None:
    """The reasoning an upstream put on a message or delta (``reasoning_content`` or ``reasoning``)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def reasoning_item(text: str, seal: Seal | None = None) -> dict[str, Any]:
    """A ``reasoning`` output item; with ``seal``, its text sealed into ``encrypted_content`` too."""
    item: dict[str, Any] = {"id": new_id("rs_"), "type": "reasoning", "summary": [],
                            "content": [{"type": "reasoning_text", "text": text}]}
    if seal is not None:
        item["encrypted_content"] = seal(text)
    return item


def response_object(translation: ChatTranslation, *, response_id: str, created_at: int, status: str,
                    output: list[dict[str, Any]] | None = None, usage: dict[str, Any] | None = None,
                    incomplete: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response object: the request's echoed fields with this status, output and usage."""
    out: dict[str, Any] = {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error, "incomplete_details": incomplete,
        **translation.echo,
        "output": output if output is not None else [], "usage": usage,
    }
    if status == "completed":
        out["completed_at"] = int(time.time())
    return out


def _logprobs(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in _mapping(choice.get("logprobs")).get("content") or ():
        if not isinstance(entry, Mapping) or not isinstance(entry.get("token"), str):
            continue
        token = entry["token"]
        tops = [{"token": t["token"], "logprob": float(t.get("logprob") or 0.0),
                 "bytes": t.get("bytes") or list(t["token"].encode())}
                for t in entry.get("top_logprobs") or () if isinstance(t, Mapping) and isinstance(t.get("token"), str)]
        out.append({"token": token, "logprob": float(entry.get("logprob") or 0.0),
                    "bytes": entry.get("bytes") or list(token.encode()), "top_logprobs": tops})
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""


def tool_call_item(translation: ChatTranslation, call_id: str, name: str, arguments: str,
                   status: str = "completed") -> dict[str, Any]:
    """A chat tool call -> a ``function_call`` item, or a ``custom_tool_call`` for a custom tool
    (with ``namespace`` and the member's own name for a namespace's tool)."""
    kind = translation.tools.kind(name)
    space: dict[str, str] = {}
    if name in translation.tools.members:
        namespace, name = translation.tools.members[name]
        space = {"namespace": namespace}
    if kind == "custom":
        return {"id": new_id("ctc_"), "type": "custom_tool_call", "call_id": call_id, "name": name,
                "input": custom_input(arguments), **space}
    return {"id": new_id("fc_"), "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status, **space}


def _output(choice: Mapping[str, Any], translation: ChatTranslation, status: str,
            seal: Seal | None) -> list[dict[str, Any]]:
    message = _mapping(choice.get("message"))
    output: list[dict[str, Any]] = []
    thought = reasoning_text(message)
    if thought:
        output.append(reasoning_item(thought, seal))
    parts: list[dict[str, Any]] = []
    text = _text(message.get("content"))
    if text:
        part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
        if translation.body.get("logprobs"):
            part["logprobs"] = _logprobs(choice)
        parts.append(part)
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append({"id": new_id("msg_"), "type": "message", "role": "assistant", "status": status,
                       "content": parts})
    for call in message.get("tool_calls") or ():
        function = _mapping(_mapping(call).get("function"))
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            arguments = orjson.dumps(arguments).decode()
        call_id = _mapping(call).get("id") or new_id("call_")
        output.append(tool_call_item(translation, str(call_id), str(function.get("name") or ""),
                                     arguments if isinstance(arguments, str) else "", status))
    return output


def response_from_completion(completion: Any, translation: ChatTranslation, *, response_id: str | None = None,
                             created_at: int | None = None, usage: Usage | None = None,
                             seal: Seal | None = None) -> dict[str, Any]:
    """A ``chat.completion`` (first choice) -> a Response object.

    ``usage``: what to report when the completion carries none (a core :class:`Usage`).
    ``seal``: given, each reasoning item carries its text sealed in ``encrypted_content``.
    """
    payload = _mapping(completion)
    choices = payload.get("choices")
    choice = _mapping(choices[0]) if isinstance(choices, list) and choices else {}
    status, incomplete = status_of(choice.get("finish_reason"))
    reported = payload.get("usage")
    return response_object(
        translation, response_id=response_id or new_id("resp_"),
        created_at=created_at if created_at is not None else int(time.time()), status=status,
        output=_output(choice, translation, status, seal), incomplete=incomplete,
        usage=usage_object(reported if isinstance(reported, Mapping) else usage),
    )
