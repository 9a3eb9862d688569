"""OpenAI shapes <-> Anthropic's Messages API (``POST /v1/messages``). Pure: no I/O.

Requests
    * ``system`` / ``developer`` messages, wherever they stand, become the top-level ``system``
      (a string for one, text blocks for several, in order).
    * Every other message becomes content blocks; consecutive messages of the same Anthropic
      role are merged (the API wants user/assistant turns to alternate). ``tool`` messages are
      user turns holding ``tool_result`` blocks. Empty messages are dropped.
    * ``max_tokens`` is required by Anthropic: ``max_completion_tokens`` / ``max_tokens`` or 4096.
    * ``response_format`` ``json_schema`` maps to structured outputs (``output_config.format``),
      so the answer is still text; ``json_object`` has no exact equivalent and is refused.
    * Whatever Anthropic cannot honour is refused with a 400 naming the field, never dropped.
      Unknown top-level fields are refused too; only the metadata in ``_IGNORED`` is accepted
      and not sent (``seed`` is there: OpenAI itself documents it as best effort).
    * Legacy completions send the prompt as one user message and answer in the
      ``text_completion`` shape.

Responses
    ``stop_reason``: end_turn, stop_sequence and pause_turn (a server tool paused the turn;
    the client may send the conversation again) -> ``stop``; max_tokens and
    model_context_window_exceeded -> ``length``; tool_use -> ``tool_calls``; refusal ->
    ``content_filter``. Prompt tokens count cache writes and reads as well.
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
from switchyard.providers._chunks import sse_chunk
from switchyard.providers._http import redact
from switchyard.providers.errors import error_for_status

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "MESSAGES_PATH",
    "MODELS_PATH",
    "StreamTranslator",
    "chat_result",
    "embeddings_refused",
    "error_from_response",
    "finish_reason",
    "messages_body",
    "model_page",
    "stream_error",
    "usage_of",
]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
MESSAGES_PATH = "/messages"
MODELS_PATH = "/models"

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types and the HTTP status each stands for (an ``event: error`` has no status).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

# Top-level fields the translation reads.
_CHAT_FIELDS = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "stop", "tools", "tool_choice", "parallel_tool_calls", "user", "safety_identifier",
    "response_format", "n", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
    "modalities", "keep_alive",
})
_COMPLETION_FIELDS = frozenset({
    "model", "prompt", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "stop", "user",
    "n", "best_of", "logprobs", "echo", "suffix", "presence_penalty", "frequency_penalty", "logit_bias",
    "keep_alive",
})
# Metadata that changes nothing the model generates: accepted, not sent.
_IGNORED = frozenset({"metadata", "store", "service_tier", "prompt_cache_key", "prompt_cache_retention", "seed",
                      "prediction"})
_WHY_NOT = {
    "functions": "the legacy 'functions' field is not supported for Anthropic models; use 'tools'",
    "function_call": "the legacy 'function_call' field is not supported for Anthropic models; use 'tool_choice'",
    "reasoning_effort": "'reasoning_effort' is not supported for Anthropic models",
    "audio": "audio output is not supported for Anthropic models",
    "web_search_options": "'web_search_options' is not supported for Anthropic models",
    "thinking": "extended thinking is not available through the OpenAI-compatible endpoints for Anthropic models",
}


def _refuse(message: str, param: str) -> BadRequestError:
    return BadRequestError(f"{message} (provider: anthropic).", param=param)


# ----------------------------------------------------------------------------- requests
def _check_fields(src: Mapping[str, Any], chat: bool) -> None:
    known = _CHAT_FIELDS if chat else _COMPLETION_FIELDS
    for key, value in src.items():
        if value is None or key in known or key in _IGNORED:
            continue
        raise _refuse(_WHY_NOT.get(key, f"'{key}' is not supported for Anthropic models"), key)
    if (src.get("n") or 1) != 1:
        raise _refuse("Anthropic models return one choice per request; n must be 1", "n")
    if (src.get("best_of") or 1) != 1:
        raise _refuse("best_of is not supported for Anthropic models", "best_of")
    logprobs = src.get("logprobs")  # chat: a boolean; legacy completions: how many (0 included)
    if logprobs or (not chat and logprobs is not None):
        raise _refuse("Anthropic models do not return log probabilities", "logprobs")
    if src.get("top_logprobs"):
        raise _refuse("Anthropic models do not return log probabilities", "top_logprobs")
    for penalty in ("presence_penalty", "frequency_penalty"):
        if src.get(penalty):
            raise _refuse(f"{penalty} is not supported for Anthropic models; it must be 0 or absent", penalty)
    if src.get("logit_bias"):
        raise _refuse("logit_bias is not supported for Anthropic models", "logit_bias")
    if src.get("echo"):
        raise _refuse("echo is not supported for Anthropic models", "echo")
    if src.get("suffix"):
        raise _refuse("suffix (insertion) is not supported for Anthropic models", "suffix")
    modalities = src.get("modalities")
    if modalities is not None and (not isinstance(modalities, list) or set(modalities) - {"text"}):
        raise _refuse("Anthropic models answer in text only; modalities must be [\"text\"]", "modalities")
    temperature = src.get("temperature")
    if isinstance(temperature, int | float) and temperature > 1:
        raise _refuse("Anthropic models take a temperature between 0 and 1", "temperature")


def _image(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, Mapping) else spec
    if not isinstance(url, str) or not url:
        raise _refuse("an image_url part needs image_url.url", param)
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, *flags = header.split(";")
        media_type = media_type.strip().lower()
        if not sep or "base64" not in flags:
            raise _refuse("image data URLs must be base64 encoded", param)
        if media_type not in _IMAGE_TYPES:
            raise _refuse(f"Anthropic models take images of type {', '.join(_IMAGE_TYPES)}, not {media_type!r}",
                          param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _refuse("images must be http(s) URLs or base64 data URLs", param)


def _blocks(content: Any, param: str, *, images: bool = False, refusals: bool = False) -> list[dict[str, Any]]:
    """Content blocks for an OpenAI ``content`` (a string or a list of parts); empty text is left out."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _refuse("content must be a string or a list of parts", param)
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" or (refusals and kind == "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise _refuse(f"a {kind} part needs a string '{kind}'", param)
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url" and images:
            blocks.append(_image(part, param))
        else:
            raise _refuse(f"content parts of type {kind!r} are not supported here for Anthropic models", param)
    return blocks


def _tool_use(call: Any, index: int) -> dict[str, Any]:
    param = f"messages[{index}].tool_calls"
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not fn.get("name") or not call.get("id"):
        raise _refuse("each tool call needs an id and a function name", param)
    raw = fn.get("arguments")
    if raw is None or raw == "":
        args: Any = {}
    elif isinstance(raw, str):
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _refuse("tool call arguments must be a JSON object", param) from exc
    else:
        args = raw
    if not isinstance(args, dict):
        raise _refuse("tool call arguments must be a JSON object", param)
    return {"type": "tool_use", "id": str(call["id"]), "name": str(fn["name"]), "input": args}


def _tool_result(msg: Mapping[str, Any], index: int) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(msg.get("tool_call_id"))}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _blocks(content, f"messages[{index}].content")
        if parts:
            block["content"] = parts
    return block


def _conversation(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system text blocks, alternating Anthropic messages)."""
    if not isinstance(messages, list) or not messages:
        raise _refuse("messages must be a non-empty list", "messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, Mapping) else None
        param = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.extend(_blocks(msg.get("content"), param))
            continue
        if role == "user":
            target, blocks = "user", _blocks(msg.get("content"), param, images=True)
        elif role == "assistant":
            if msg.get("function_call") is not None:
                raise _refuse("legacy function_call messages are not supported; use tool_calls",
                              f"messages[{i}].function_call")
            blocks = _blocks(msg.get("content"), param, refusals=True)
            blocks += [_tool_use(call, i) for call in msg.get("tool_calls") or []]
            target = "assistant"
        elif role == "tool":
            target, blocks = "user", [_tool_result(msg, i)]
        else:
            raise _refuse(f"messages with role {role!r} are not supported; use tool messages",
                          f"messages[{i}].role")
        if not blocks:
            continue
        if out and out[-1]["role"] == target:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": target, "content": blocks})
    if not out:
        raise _refuse("Anthropic models need at least one non-empty user or assistant message", "messages")
    return system, out


def _tools(src: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = src.get("tools") or []
    if not isinstance(tools, list):
        raise _refuse("tools must be a list", "tools")
    out: list[dict[str, Any]] = []
    for j, tool in enumerate(tools):
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise _refuse("only function tools are supported for Anthropic models", f"tools[{j}].type")
        fn = tool.get("function")
        if not isinstance(fn, Mapping) or not fn.get("name"):
            raise _refuse("a function tool needs function.name", f"tools[{j}].function.name")
        entry: dict[str, Any] = {
            "name": str(fn["name"]),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            entry["description"] = str(fn["description"])
        if fn.get("strict") is True:
            entry["strict"] = True
        out.append(entry)
    return out


def _tool_choice(src: Mapping[str, Any], has_tools: bool) -> dict[str, Any] | None:
    choice = src.get("tool_choice")
    parallel = src.get("parallel_tool_calls")
    out: dict[str, Any] | None
    if choice is None:
        out = {"type": "auto"} if has_tools and parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif (isinstance(choice, Mapping) and choice.get("type") == "function"
          and isinstance(choice.get("function"), Mapping) and choice["function"].get("name")):
        out = {"type": "tool", "name": str(choice["function"]["name"])}
    else:
        raise _refuse("tool_choice must be 'auto', 'none', 'required' or a named function", "tool_choice")
    if not has_tools:
        if out is not None and out["type"] in ("any", "tool"):
            raise _refuse("tool_choice asks for a tool call but no tools were given", "tool_choice")
        return None
    if parallel is False and out is not None and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _output_config(src: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = src.get("response_format")
    if not isinstance(fmt, Mapping) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise _refuse("response_format json_schema needs json_schema.schema", "response_format")
        return {"format": {"type": "json_schema", "schema": schema}}
    raise _refuse("response_format json_object has no Anthropic equivalent; use json_schema with a schema",
                  "response_format")


def _prompt_message(src: Mapping[str, Any]) -> list[dict[str, Any]]:
    prompt = src.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _refuse("Anthropic models take a single string prompt", "prompt")
    if not prompt:
        raise _refuse("the prompt must not be empty", "prompt")
    return [{"role": "user", "content": [{"type": "text", "text": prompt}]}]


def messages_body(request: ChatRequest, target: Target) -> dict[str, Any]:
    """The ``POST /messages`` body for a chat or legacy completion request."""
    src = request.body
    chat = request.kind is GenerationKind.CHAT
    _check_fields(src, chat)
    body: dict[str, Any] = {"model": target.upstream_model, "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS}
    if chat:
        system, messages = _conversation(src.get("messages"))
        if len(system) == 1:
            body["system"] = system[0]["text"]
        elif system:
            body["system"] = system
        body["messages"] = messages
    else:
        body["messages"] = _prompt_message(src)
    stop = src.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(s for s in stops):
        body["stop_sequences"] = [s for s in stops if s]
    for key in ("temperature", "top_p", "top_k"):
        if src.get(key) is not None:
            body[key] = src[key]
    user = src.get("user") or src.get("safety_identifier")
    if user:
        body["metadata"] = {"user_id": str(user)}
    if chat:
        tools = _tools(src)
        choice = _tool_choice(src, bool(tools))
        if tools:
            body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        output = _output_config(src)
        if output is not None:
            body["output_config"] = output
    if request.stream:
        body["stream"] = True
    return body


# ---------------------------------------------------------------------------- responses
def finish_reason(stop_reason: Any) -> str:
    return _STOP_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    return sum(_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def usage_of(usage: Any) -> Usage:
    """Anthropic ``usage`` -> ours: input, cache writes and cache reads all count as prompt tokens."""
    if not isinstance(usage, Mapping):
        return Usage(estimated=True)
    return Usage(prompt_tokens=_prompt_tokens(usage), completion_tokens=_int(usage.get("output_tokens")))


def _usage_json(usage: Usage, cached: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
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
    raw_usage = payload.get("usage")
    usage = usage_of(raw_usage)
    cached = _int(raw_usage.get("cache_read_input_tokens")) if isinstance(raw_usage, Mapping) else 0
    reason = finish_reason(payload.get("stop_reason"))
    text = "".join(texts)
    chat = request.kind is GenerationKind.CHAT
    head = {"id": _response_id(payload, chat), "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": target.alias}
    if not chat:
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {**head, "choices": [choice], "usage": _usage_json(usage, cached)}, usage
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    return {**head, "choices": [choice], "usage": _usage_json(usage, cached)}, usage


# ------------------------------------------------------------------------------- stream
def _event_payload(raw: bytes) -> dict[str, Any] | None:
    """One SSE event (its lines, without the blank line) -> its JSON data, typed by the event name."""
    name = ""
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    if not data:
        return None
    try:
        payload = orjson.loads(b"\n".join(data))
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a malformed stream event.") from exc
    if not isinstance(payload, dict):
        raise UpstreamError("The upstream sent a malformed stream event.")
    payload.setdefault("type", name)
    return payload


class StreamTranslator:
    """Anthropic's SSE events (in reads split anywhere) -> OpenAI chunk events.

    Call :meth:`feed` with each network read and relay the piece it returns, then
    :meth:`check` (an ``event: error`` arrived: raise it, after the content before it was
    relayed); :meth:`finish` when the connection ends (raises when ``message_stop`` never came).
    """

    def __init__(self, request: ChatRequest, target: Target, secret: str | None = None) -> None:
        self._chat = request.kind is GenerationKind.CHAT
        self._wants_usage = request.include_usage
        self._secret = secret
        self._id = f"{'chatcmpl' if self._chat else 'cmpl'}-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._model = target.alias
        self._buffer = b""
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
    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return sse_chunk(self._id, chat=self._chat, created=self._created, model=self._model, choices=choices,
                         usage=usage, wants_usage=self._wants_usage)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def _text(self, text: str) -> bytes:
        if self._chat:
            return self._delta({"content": text})
        return self._chunk([{"index": 0, "text": text, "logprobs": None, "finish_reason": None}])

    def _arguments(self, tool: int, fragment: str) -> bytes:
        self._tool_args[tool] = True
        return self._delta({"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]})

    def _end(self) -> bytes:
        self.done = True
        usage = self._usage
        self.usage = Usage(prompt_tokens=_prompt_tokens(usage), completion_tokens=usage.get("output_tokens", 0))
        reason = finish_reason(self._stop_reason)
        last: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": reason}
        last["delta" if self._chat else "text"] = {} if self._chat else ""
        out = self._chunk([last])
        if self._wants_usage:
            out += self._chunk([], _usage_json(self.usage, usage.get("cache_read_input_tokens", 0)))
        return out + b"data: [DONE]\n\n"

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
                return self._text(str(delta["text"])), 1
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
                    self._id = f"{'chatcmpl' if self._chat else 'cmpl'}-{message['id']}"
                self._take_usage(message.get("usage"))
            # The role chunk waits for the first content: an error before any content then fails the
            # request before its first byte (a proper status, and retries / fallbacks still possible).
            self._role_pending = self._chat
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
            self._failure = stream_error(event, self._secret)
        return b"", 0  # ping, and event types added after this was written

    def _block_start(self, index: int, block: Any) -> tuple[bytes, int]:
        if not isinstance(block, Mapping):
            return b"", 0
        if block.get("type") == "text":
            self._blocks[index] = ("text", 0)
            return (self._text(str(block["text"])), 1) if block.get("text") else (b"", 0)
        if block.get("type") == "tool_use" and self._chat:
            tool = self._tools
            self._tools += 1
            self._blocks[index] = ("tool", tool)
            call = {"index": tool, "id": str(block.get("id") or f"call_{uuid.uuid4().hex[:24]}"), "type": "function",
                    "function": {"name": str(block.get("name") or ""), "arguments": ""}}
            return self._delta({"tool_calls": [call]}), 1
        return b"", 0

    # ---------------------------------------------------------------- plumbing
    def feed(self, data: bytes) -> StreamPiece | None:
        """The OpenAI events for every Anthropic event completed by this read (None if none)."""
        if self.done or self._failure is not None:
            return None
        buffer = self._buffer + data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        events = 0
        start = 0
        while not self.done and self._failure is None:
            cut = buffer.find(b"\n\n", start)
            if cut < 0:
                break
            payload = _event_payload(buffer[start:cut])
            start = cut + 2
            if payload is not None:
                data_out, count = self._handle(payload)
                if data_out:
                    if self._role_pending:  # as OpenAI opens: content "" before text, null before a tool call
                        self._role_pending = False
                        block = payload.get("content_block") if payload.get("type") == "content_block_start" else None
                        tool_first = isinstance(block, Mapping) and block.get("type") == "tool_use"
                        out.append(self._delta({"role": "assistant", "content": None if tool_first else "",
                                                "refusal": None}))
                    out.append(data_out)
                    events += count
        self._buffer = buffer[start:]
        if not out:
            return None
        return StreamPiece(data=b"".join(out), events=events, usage=self.usage if self.done else None,
                           done=self.done)

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


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str], secret: str | None) -> GatewayError:
    """An Anthropic error response ``{"type": "error", "error": {"type", "message"}}`` -> our error."""
    try:
        _, message = _error_fields(orjson.loads(raw))
    except orjson.JSONDecodeError:
        message = None
    if message is not None:
        message = redact(message[:500], secret)
    return _mapped(status, message, headers)


def stream_error(payload: Mapping[str, Any], secret: str | None) -> GatewayError:
    """An ``event: error`` in a stream -> our error, by the status its type stands for."""
    kind, message = _error_fields(payload)
    if message is not None:
        message = redact(message[:500], secret)
    text = f"{kind}: {message}" if kind and message else (message or kind)
    return _mapped(_ERROR_STATUS.get(kind or "", 500), text, {})


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
