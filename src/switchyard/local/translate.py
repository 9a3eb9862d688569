"""OpenAI requests in, OpenAI responses and stream chunks out, for local engines. Pure."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.time import parse_duration
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError
from switchyard.local.engine import Constraint, SamplingParams
from switchyard.local.tools import CallArgs, CallStart, Event, ToolPlan, tool_plan
from switchyard.protocol.openai import DONE, ChunkWriter

__all__ = ["Generation", "StreamWriter", "keep_alive_of", "result_body", "wanted"]


@dataclass(frozen=True, slots=True)
class Generation:
    """What the client asked for, in engine terms (max_tokens is settled against the context)."""

    messages: Sequence[Mapping[str, Any]] | None
    prompt: str | Sequence[int] | None
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    constraint: Constraint | None
    tools: ToolPlan | None = None

    def params(self, prompt_tokens: int, context_length: int, default_max: int | None = None) -> SamplingParams:
        """Sampling parameters, or 400 ``context_length_exceeded`` when the prompt (plus the
        completion asked for) does not fit the model's context. With no max_tokens asked for,
        ``default_max`` (when set) or the context's room."""
        room = context_length - prompt_tokens
        asked = self.max_tokens
        if room <= 0 or (asked is not None and asked > room):
            wanted = f"{prompt_tokens} tokens in the prompt" + (f" and {asked} for the completion" if asked else "")
            raise BadRequestError(
                f"This model's maximum context length is {context_length} tokens; the request has {wanted}.",
                param="messages" if self.messages is not None else "prompt", code="context_length_exceeded",
            )
        limit = asked if asked is not None else min(room, default_max or room)
        return SamplingParams(max_tokens=limit, temperature=self.temperature,
                              top_p=self.top_p, seed=self.seed)


def _number(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    return default if value is None else float(value)


def wanted(request: ChatRequest) -> Generation:
    body = request.body
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    seed = body.get("seed")
    constraint = None
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "json_object":
            constraint = Constraint("json_object")
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, Mapping) else None
            if not isinstance(schema, Mapping):
                raise BadRequestError("response_format.json_schema.schema must be a JSON Schema object.",
                                      param="response_format.json_schema.schema", code="invalid_json_schema")
            constraint = Constraint("json_schema", schema)
    prompt: str | Sequence[int] | None = None
    messages = None
    tools = None
    if request.kind is GenerationKind.CHAT:
        messages = body.get("messages") or []
        tools = tool_plan(body)
        if tools is not None and tools.choice != "none":
            if constraint is not None:
                raise BadRequestError("Local models take either tools or response_format in one request, not both "
                                      "(unless tool_choice is none).", param="response_format")
            constraint = tools.constraint()
    else:
        raw = body.get("prompt", "")
        if isinstance(raw, list):
            if len(raw) == 1 and isinstance(raw[0], str | list):
                raw = raw[0]
            elif raw and all(isinstance(t, int) for t in raw):
                pass
            else:
                raise BadRequestError("Local models take one prompt per request.", param="prompt")
        prompt = raw
    return Generation(
        messages=messages, prompt=prompt, max_tokens=int(max_tokens) if max_tokens is not None else None,
        temperature=_number(body, "temperature", 1.0), top_p=_number(body, "top_p", 1.0),
        seed=int(seed) if seed is not None else None, stop=stops, constraint=constraint, tools=tools,
    )


def keep_alive_of(value: str | int | float | None) -> float | EllipsisType | None:
    """A request's keep_alive in seconds (None: for ever); Ellipsis when it gave none."""
    if value is None:
        return Ellipsis
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadRequestError(str(exc), param="keep_alive") from None


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def result_body(request: ChatRequest, model: str, text: str, finish: str, usage: Usage,
                calls: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """The whole answer; with ``calls`` (tool calls), ``content`` is the text or null and the
    finish reason ``tool_calls`` (unless the output was cut off: ``length``)."""
    created = int(time.time())
    if request.kind is GenerationKind.COMPLETION:
        return orjson.dumps({
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
            "usage": _usage(usage),
        })
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["content"] = text or None
        message["tool_calls"] = list(calls)
        finish = "length" if finish == "length" else "tool_calls"
    return orjson.dumps({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(usage),
    })


class StreamWriter(ChunkWriter):
    """OpenAI SSE events for a local generation: the role chunk, text deltas, the finish chunk,
    the usage chunk when asked for, then ``[DONE]``."""

    __slots__ = ()

    def opening(self) -> bytes:
        return self.delta({"role": "assistant", "content": "", "refusal": None}) if self.chat else b""

    def tool_event(self, event: Event) -> bytes:
        """A tool call's first delta (its id and name) or a piece of its arguments; text as text."""
        if isinstance(event, CallStart):
            return self.delta({"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                               "function": {"name": event.name, "arguments": ""}}]})
        if isinstance(event, CallArgs):
            return self.delta({"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]})
        return self.text(event.text)

    def closing(self, finish: str, usage: Usage) -> bytes:
        return self.finish(finish) + self.usage(_usage(usage)) + DONE
