"""A Responses ``CreateResponse`` body -> an OpenAI chat-completions body. Pure.

:func:`to_chat` returns a :class:`ChatTranslation`: the chat body (already validated exactly as
``/v1/chat/completions`` validates, as a :class:`~switchyard.core.chat.ChatRequest`), and what
the way back needs: which functions are custom tools, which hosted tools were removed, and the
request fields a ``Response`` object repeats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from switchyard.core.chat import ChatRequest
from switchyard.errors import BadRequestError
from switchyard.protocol.openai import parse_chat_request
from switchyard.protocol.openai.requests import STEERING_FIELDS
from switchyard.protocol.responses.items import ReasoningHistory, Resolve, input_messages, normalize_input
from switchyard.protocol.responses.tools import HostedTools, ToolSet, apply_tool_choice, bad, translate_tools

__all__ = ["ChatTranslation", "to_chat"]

# Read by the translation.
_READ = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text", "reasoning",
    "max_output_tokens", "temperature", "top_p", "top_logprobs", "metadata", "include", "prompt_cache_key",
    "safety_identifier", "user", "stream", "store", "previous_response_id", "truncation", "background",
    "conversation", "prompt", "moderation",
})
# Accepted, and without effect on what a chat model generates: not forwarded, not reported.
# Any other field is not forwarded either, and is reported in ``ChatTranslation.ignored`` (for a
# log line): new client releases add fields, and refusing them would break those clients.
_IGNORED = frozenset({
    "service_tier", "stream_options", "prompt_cache_retention", "prompt_cache_options", "max_tool_calls",
    "context_management", "access_programs", "image", "background_options", "client_metadata",
})
# Platform features the translation cannot give: refused when set.
_REFUSED = {
    "conversation": "conversations are not supported; use previous_response_id",
    "prompt": "prompt templates are not supported",
    "moderation": "moderation is not supported",
}
_KNOWN = _READ | _IGNORED
_SAMPLING = frozenset({"temperature", "top_p", "top_logprobs"})
_IDENTITY_ORDER = ("prompt_cache_key", "safety_identifier", "user")
_IDENTITY = frozenset(_IDENTITY_ORDER)
_ECHOED_ORDER = ("user", "safety_identifier", "prompt_cache_key", "top_logprobs", "max_tool_calls")
_ECHOED = frozenset(_ECHOED_ORDER)
_REFUSED_OR_BACKGROUND = frozenset({*_REFUSED, "background"})
_INCLUDES = frozenset({
    "message.output_text.logprobs", "reasoning.encrypted_content", "message.input_image.image_url",
    "file_search_call.results", "web_search_call.results", "web_search_call.action.sources",
    "code_interpreter_call.outputs", "computer_call_output.output.image_url",
})
_REASONING_KEYS = ("effort", "summary", "generate_summary", "context", "mode")


@dataclass(frozen=True)
class ChatTranslation:
    """One Responses request, translated."""

    body: dict[str, Any]  # the chat-completions body
    request: ChatRequest  # the body, validated as /v1/chat/completions validates it
    tools: ToolSet  # what the model was offered; ``tools.kind(name)`` says function or custom
    echo: dict[str, Any]  # the request fields a Response object repeats
    input_items: list[dict[str, Any]]  # ``input`` as items (a string becomes one user message)
    stream: bool
    store: bool
    previous_response_id: str | None
    include: tuple[str, ...]
    ignored: tuple[str, ...] = ()  # top-level fields the translation does not know, not forwarded

    @property
    def removed_tools(self) -> tuple[str, ...]:
        """The hosted tool types removed from the request, in order (empty when none)."""
        return tuple(self.tools.removed)


def _opt(body: Mapping[str, Any], key: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        raise bad(key, f"must be {what}")
    return value


def _check_fields(body: Mapping[str, Any]) -> tuple[str, ...]:
    """Refuse steering fields and platform features; return the unknown fields."""
    if not STEERING_FIELDS.isdisjoint(body):
        steering = sorted(STEERING_FIELDS.intersection(body))
        raise BadRequestError(
            f"Invalid request: {steering[0]}: not accepted; the gateway decides where requests go.",
            param=steering[0], code="field_not_allowed",
        )
    if not _REFUSED_OR_BACKGROUND.isdisjoint(body):  # on every request: set operations, not a lookup a field
        for key, why in _REFUSED.items():
            if body.get(key) is not None:
                raise bad(key, why, code="unsupported_parameter")
        if body.get("background") is True:
            raise bad("background", "background responses are not supported", code="unsupported_parameter")
    unknown = body.keys() - _KNOWN
    return tuple(sorted(unknown)) if unknown else ()


def _text_format(raw: Any, out: dict[str, Any]) -> dict[str, Any]:
    """``text`` -> ``response_format`` on the chat body; returns the ``text`` a Response repeats."""
    if raw is None:
        return {"format": {"type": "text"}}
    if not isinstance(raw, Mapping):
        raise bad("text", "must be an object")
    fmt = raw.get("format") or {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    echo: dict[str, Any] = {}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise bad("text.format.name", "a json_schema format needs a name")
        if not isinstance(schema, Mapping):
            raise bad("text.format.schema", "a json_schema format needs a schema object")
        spec: dict[str, Any] = {"name": name, "schema": dict(schema)}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
        echo["format"] = {"type": "json_schema", **spec}
    elif kind == "json_object":
        out["response_format"] = {"type": "json_object"}
        echo["format"] = {"type": "json_object"}
    elif kind == "text":
        echo["format"] = {"type": "text"}
    else:
        raise bad("text.format.type", "must be text, json_object or json_schema")
    if raw.get("verbosity") is not None:
        echo["verbosity"] = raw["verbosity"]
    return echo


def _reasoning(raw: Any, out: dict[str, Any]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise bad("reasoning", "must be an object")
    effort = raw.get("effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise bad("reasoning.effort", "must be a string")
        out["reasoning_effort"] = effort
    return {key: raw[key] for key in _REASONING_KEYS if raw.get(key) is not None}


def _include(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise bad("include", "must be a list of strings")
    for i, value in enumerate(raw):
        if value not in _INCLUDES:
            raise bad(f"include[{i}]", f"unknown value {value!r}")
    return tuple(raw)


def _metadata(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or len(raw) > 16:
        raise bad("metadata", "must be an object of at most 16 string values")
    for key, value in raw.items():
        if not isinstance(value, str) or len(str(key)) > 64 or len(value) > 512:
            raise bad(f"metadata.{key}", "keys are at most 64 characters, values strings of at most 512")
    return dict(raw)


def _sampling(body: Mapping[str, Any], out: dict[str, Any], include: tuple[str, ...]) -> None:
    max_out = body.get("max_output_tokens")
    if max_out is not None:
        if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1:
            raise bad("max_output_tokens", "must be a positive integer")
        out["max_tokens"] = max_out  # the name every OpenAI-compatible server knows
    top = None
    if not _SAMPLING.isdisjoint(body):  # most requests set none of these: one set operation
        for key in ("temperature", "top_p"):
            value = _opt(body, key, (int, float), "a number")
            if value is not None:
                out[key] = value
        top = _opt(body, "top_logprobs", (int,), "an integer from 0 to 20")
        if top is not None and not 0 <= top <= 20:
            raise bad("top_logprobs", "must be an integer from 0 to 20")
    if top or "message.output_text.logprobs" in include:
        out["logprobs"] = True
        if top:
            out["top_logprobs"] = top
    if not _IDENTITY.isdisjoint(body):
        for key in _IDENTITY_ORDER:
            value = _opt(body, key, (str,), "a string")
            if value is not None:
                out[key] = value


def _echo(body: Mapping[str, Any], tools: ToolSet, text: dict[str, Any],
          reasoning: dict[str, Any] | None, metadata: dict[str, str] | None) -> dict[str, Any]:
    truncation = body.get("truncation") or "disabled"
    if truncation not in ("auto", "disabled"):
        raise bad("truncation", "must be auto or disabled")
    echo: dict[str, Any] = {
        "model": body["model"], "instructions": body.get("instructions"), "metadata": metadata,
        "tools": tools.echo, "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"), "previous_response_id": body.get("previous_response_id"),
        "reasoning": reasoning, "text": text, "truncation": truncation,
    }
    if not _ECHOED.isdisjoint(body):
        for key in _ECHOED_ORDER:
            if body.get(key) is not None:
                echo[key] = body[key]
    return echo


def to_chat(body: Any, *, history: Sequence[Mapping[str, Any]] = (), resolve: Resolve | None = None,
            hosted_tools: HostedTools = "remove", reasoning_history: ReasoningHistory = "drop") -> ChatTranslation:
    """A Responses request body -> a :class:`ChatTranslation`.

    ``history``: the items of the earlier turns (a ``previous_response_id`` chain's inputs and
    outputs, oldest first), put before ``input``. ``resolve``: looks up ``item_reference`` ids.
    ``hosted_tools="reject"`` refuses hosted tools instead of removing them.
    ``reasoning_history``: where reasoning items of earlier turns go on the assistant message
    (``reasoning_content`` or ``reasoning``, for upstreams that take them), or ``drop``.
    Invalid input is a :class:`BadRequestError` whose ``param`` names the field (``input[2].type``).
    """
    if not isinstance(body, Mapping):
        raise BadRequestError("The request body must be a JSON object.")
    ignored = _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "a model is required")
    raw_input = body.get("input")
    items = normalize_input(raw_input) if raw_input is not None else []
    if not items and not history:
        raise bad("input", "an input is required")
    instructions = _opt(body, "instructions", (str,), "a string")
    messages = [{"role": "system", "content": instructions}] if instructions else []
    messages += input_messages(history, resolve=resolve, reasoning=reasoning_history, where="history")
    messages += input_messages(items, resolve=resolve, reasoning=reasoning_history)
    if not messages:
        raise bad("input", "an input is required")
    out: dict[str, Any] = {"model": model, "messages": messages}
    tools = translate_tools(body.get("tools"), hosted_tools)
    apply_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"), tools, out)
    text = _text_format(body.get("text"), out)
    reasoning = _reasoning(body.get("reasoning"), out)
    include = _include(body.get("include"))
    _sampling(body, out, include)
    metadata = _metadata(body.get("metadata"))
    stream = _opt(body, "stream", (bool,), "a boolean")
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # so response.completed carries the real usage
    store = _opt(body, "store", (bool,), "a boolean")
    previous = _opt(body, "previous_response_id", (str,), "a string")
    return ChatTranslation(
        body=out, request=parse_chat_request(out), tools=tools,
        echo=_echo(body, tools, text, reasoning, metadata), input_items=items, stream=bool(stream),
        store=store is not False, previous_response_id=previous, include=include, ignored=ignored,
    )
