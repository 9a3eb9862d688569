"""OpenAI shapes <-> Google's Gemini API (generateContent, streamGenerateContent?alt=sse,
batchEmbedContents, models). Pure: no I/O, table-testable.

Decisions the gateway takes for Gemini (see also the provider's docstring):

* Images (and audio, files) go as ``inlineData`` from base64 data URLs. Any other URL is a 400:
  Gemini's ``fileData`` only takes URIs of its own Files API, and the gateway never fetches a
  URL on a client's behalf.
* Every ``system``/``developer`` message, wherever it stands, joins ``systemInstruction``.
* Tools are declared with ``parametersJsonSchema`` (plain JSON Schema, which is what OpenAI's
  ``parameters`` are); ``response_format: json_schema`` becomes ``responseJsonSchema``.
* A tool message's content goes as the ``functionResponse.response`` object when it is a JSON
  object, else as ``{"output": text}`` (Gemini's documented key for a function's output).
  Consecutive tool messages make one user turn, as Gemini requires.
* Gemini's thought signatures (which it requires back on replayed function calls) ride in the
  OpenAI tool call id, after ``__thought__``, and are put back on the ``functionCall`` part.
* ``logprobs``/``top_logprobs`` (and legacy ``echo``/``suffix``/``best_of``) are refused (400).
* ``finishReason`` MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL is a 502
  (``malformed_function_call``), never a "stop" that would pass leftover text off as an answer.
* A prompt blocked by ``promptFeedback.blockReason`` (no candidates) is a 200 with one choice,
  empty content and ``finish_reason: content_filter``, as OpenAI reports filtered output.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind, StreamPiece
from switchyard.core.embeddings import EmbeddingRequest
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import BadRequestError, GatewayError, UpstreamError
from switchyard.providers._chunks import sse_chunk
from switchyard.providers._http import redact
from switchyard.providers.errors import error_for_status

__all__ = [
    "THOUGHT_SEPARATOR",
    "StreamTranslator",
    "chat_body",
    "chat_path",
    "chat_result",
    "embed_body",
    "embed_vectors",
    "error_from_response",
    "finish_reason",
    "malformed_call_error",
    "model_names",
    "model_path",
    "usage_of",
]

THOUGHT_SEPARATOR = "__thought__"
_DONE = b"data: [DONE]\n\n"
_MODEL_NAME = re.compile(r"^(?:(?:models|tunedModels)/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILTERED = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
})
_MALFORMED = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})
_OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


# ---------------------------------------------------------------------------- requests
def model_path(model: str, method: str) -> str:
    """``/models/{model}:{method}``; a name that is not a plain model id is a 400, never a path."""
    if not _MODEL_NAME.match(model):
        raise BadRequestError(f"'{model}' is not a valid Gemini model name.", param="model")
    name = model if "/" in model else f"models/{model}"
    return f"/{quote(name, safe='/')}:{method}"


def chat_path(target: Target, stream: bool) -> str:
    if stream:
        return model_path(target.upstream_model, "streamGenerateContent") + "?alt=sse"
    return model_path(target.upstream_model, "generateContent")


def _refuse_unsupported(src: Mapping[str, Any]) -> None:
    if src.get("logprobs") not in (None, False):
        raise BadRequestError("logprobs are not supported for Gemini models by this gateway.", param="logprobs")
    if src.get("top_logprobs"):
        raise BadRequestError("top_logprobs are not supported for Gemini models by this gateway.",
                              param="top_logprobs")
    if src.get("echo"):
        raise BadRequestError("echo is not supported for Gemini models.", param="echo")
    if src.get("suffix"):
        raise BadRequestError("suffix is not supported for Gemini models.", param="suffix")
    if (src.get("best_of") or 1) > 1:
        raise BadRequestError("best_of is not supported for Gemini models.", param="best_of")


def _data_url(url: str, param: str) -> dict[str, Any]:
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise BadRequestError(
            "Gemini models take images and files as base64 data URLs (data:<mime>;base64,...); "
            "the gateway does not fetch remote URLs.",
            param=param,
        )
    mime = head[5:-7] or "application/octet-stream"
    return {"inlineData": {"mimeType": mime, "data": data}}


def _text_of(content: Any, param: str) -> str:
    """The text of a content that may only hold text (system, assistant, tool messages)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise BadRequestError(f"Content parts of type '{kind}' are not accepted here.", param=param)
    return "".join(texts)


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"text": content or ""}]
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif kind == "image_url":
            parts.append(_data_url(str((part.get("image_url") or {}).get("url", "")), param))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}",
                                         "data": str(audio.get("data", ""))}})
        elif kind == "file":
            file = part.get("file") or {}
            if not file.get("file_data"):
                raise BadRequestError("Gemini models take files as base64 file_data, not file ids.", param=param)
            parts.append(_data_url(str(file["file_data"]), param))
        else:
            raise BadRequestError(f"Content parts of type '{kind}' are not supported for Gemini models.",
                                  param=param)
    return parts or [{"text": ""}]


def _arguments(function: Mapping[str, Any], param: str) -> dict[str, Any]:
    raw = function.get("arguments") or "{}"
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequestError("Tool call arguments must be a JSON object.", param=param) from exc
    if not isinstance(raw, dict):
        raise BadRequestError("Tool call arguments must be a JSON object.", param=param)
    return raw


def _call_part(call: Mapping[str, Any], param: str, names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") or {}
    name = str(function.get("name") or "")
    part: dict[str, Any] = {"functionCall": {"name": name, "args": _arguments(function, param)}}
    call_id = str(call.get("id") or "")
    if THOUGHT_SEPARATOR in call_id:
        part["thoughtSignature"] = call_id.split(THOUGHT_SEPARATOR, 1)[1]
    if call_id:
        names[call_id] = name
    return part


def _response_part(msg: Mapping[str, Any], index: int, names: dict[str, str]) -> dict[str, Any]:
    if msg.get("role") == "function":
        name = str(msg.get("name") or "")
    else:
        name = names.get(str(msg.get("tool_call_id"))) or str(msg.get("name") or "")
        if not name:
            raise BadRequestError(
                f"messages[{index}] answers tool call '{msg.get('tool_call_id')}', which no earlier assistant "
                "message made.",
                param=f"messages[{index}].tool_call_id",
            )
    text = _text_of(msg.get("content"), f"messages[{index}].content")
    response: Any = None
    if text.lstrip().startswith("{"):
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, to answer by name
    tool_turn: dict[str, Any] | None = None  # the user turn collecting consecutive tool answers
    for i, msg in enumerate(messages):
        role = msg.get("role")
        param = f"messages[{i}].content"
        if role in ("tool", "function"):
            if tool_turn is None:
                tool_turn = {"role": "user", "parts": []}
                contents.append(tool_turn)
            tool_turn["parts"].append(_response_part(msg, i, names))
            continue
        tool_turn = None
        if role in ("system", "developer"):
            system.append({"text": _text_of(msg.get("content"), param)})
        elif role == "user":
            contents.append({"role": "user", "parts": _user_parts(msg.get("content"), param)})
        elif role == "assistant":
            parts: list[dict[str, Any]] = []
            text = _text_of(msg.get("content"), param)
            if text:
                parts.append({"text": text})
            for call in msg.get("tool_calls") or ():
                parts.append(_call_part(call, f"messages[{i}].tool_calls", names))
            legacy = msg.get("function_call")
            if isinstance(legacy, Mapping):
                parts.append(_call_part({"function": legacy}, f"messages[{i}].function_call", names))
            if parts:
                contents.append({"role": "model", "parts": parts})
        else:
            raise BadRequestError(f"Unsupported message role '{role}'.", param=f"messages[{i}].role")
    return system, contents


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise BadRequestError("Gemini models take a single string prompt.", param="prompt")


def _tools(tools: Any) -> list[dict[str, Any]]:
    declarations = []
    for i, tool in enumerate(tools or ()):
        if tool.get("type", "function") != "function":
            raise BadRequestError(f"Tools of type '{tool.get('type')}' are not supported for Gemini models.",
                                  param=f"tools[{i}].type")
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": str(function.get("name") or "")}
        if function.get("description"):
            declaration["description"] = str(function["description"])
        if function.get("parameters"):
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return declarations


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, Mapping) and (choice.get("function") or {}).get("name"):
        name = str(choice["function"]["name"])
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    raise BadRequestError("tool_choice must be auto, none, required or a named function.", param="tool_choice")


def _generation_config(request: ChatRequest) -> dict[str, Any]:
    src = request.body
    config = {dst: src[key] for key, dst in _OPTIONS if src.get(key) is not None}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    stop = src.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    n = src.get("n")
    if n is not None and n != 1:
        config["candidateCount"] = n
    fmt = src.get("response_format") or {}
    if fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = schema
    return config


def chat_body(request: ChatRequest, target: Target) -> dict[str, Any]:
    """The generateContent request body for a chat or legacy completion request."""
    src = request.body
    _refuse_unsupported(src)
    body: dict[str, Any]
    if request.kind is GenerationKind.COMPLETION:
        body = {"contents": [{"role": "user", "parts": [{"text": _prompt(src.get("prompt"))}]}]}
    else:
        system, contents = _contents(src.get("messages") or ())
        body = {"contents": contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        declarations = _tools(src.get("tools"))
        if declarations:
            body["tools"] = [{"functionDeclarations": declarations}]
            config = _tool_config(src.get("tool_choice"))
            if config is not None:
                body["toolConfig"] = config
    generation = _generation_config(request)
    if generation:
        body["generationConfig"] = generation
    return body


def embed_body(request: EmbeddingRequest, target: Target) -> dict[str, Any]:
    if any(not isinstance(item, str) for item in request.inputs):
        raise BadRequestError("Gemini embedding models take text input, not token arrays.", param="input")
    name = target.upstream_model if "/" in target.upstream_model else f"models/{target.upstream_model}"
    requests = []
    for text in request.inputs:
        one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if request.dimensions is not None:
            one["outputDimensionality"] = request.dimensions
        requests.append(one)
    return {"requests": requests}


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


def _parts(candidate: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The answer text (thought summaries left out) and tool calls of one candidate."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if part.get("thought"):
            continue
        if "functionCall" in part:
            calls.append(_tool_call(part))
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "".join(texts), calls


def _raise_if_error(payload: Mapping[str, Any], secret: str | None) -> None:
    err = payload.get("error")
    if isinstance(err, Mapping):
        message = redact(str(err.get("message") or "")[:500], secret)
        raise UpstreamError(f"The upstream failed: {message}")


def _blocked(payload: Mapping[str, Any]) -> bool:
    return not payload.get("candidates") and bool((payload.get("promptFeedback") or {}).get("blockReason"))


def chat_result(
    payload: Mapping[str, Any], request: ChatRequest, target: Target, secret: str | None = None
) -> tuple[dict[str, Any], Usage]:
    """The OpenAI response for a whole generateContent response, and its usage."""
    _raise_if_error(payload, secret)
    chat = request.kind is GenerationKind.CHAT
    usage = usage_of(payload) or Usage(estimated=True)
    candidates = list(payload.get("candidates") or ())
    if not candidates and not _blocked(payload):
        raise UpstreamError("The upstream answered with no candidates.")
    choices: list[dict[str, Any]] = []
    for pos, candidate in enumerate(candidates or [{"finishReason": "SAFETY"}]):
        index = int(candidate.get("index", pos))
        text, calls = _parts(candidate)
        reason = finish_reason(str(candidate.get("finishReason") or "STOP"), bool(calls))
        if not chat:
            choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": reason})
            continue
        message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
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


def _sse_json(event: bytes) -> Any:
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    data = b"\n".join(lines)
    if data.strip() == b"[DONE]":
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("The upstream sent a malformed stream event.") from exc


class StreamTranslator:
    """Turns Gemini's SSE stream (``data: {GenerateContentResponse}``) into OpenAI chunk events.

    Feed it bytes as they arrive, in any split; :meth:`finish` at the end of the upstream
    stream gives the usage chunk and ``[DONE]``, or raises if the stream was not complete.
    """

    def __init__(self, request: ChatRequest, target: Target, secret: str | None = None) -> None:
        self._chat = request.kind is GenerationKind.CHAT
        self._wants_usage = request.include_usage
        self._secret = secret
        self._id = f"{'chatcmpl' if self._chat else 'cmpl'}-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._model = target.alias
        self._buffer = b""
        self._seen: set[int] = set()
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}
        self._last: Mapping[str, Any] | None = None
        self.usage: Usage | None = None

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        return sse_chunk(self._id, chat=self._chat, created=self._created, model=self._model, choices=choices,
                         usage=usage, wants_usage=self._wants_usage)

    def _choice(self, index: int, delta: dict[str, Any] | None, text: str = "",
                reason: str | None = None) -> dict[str, Any]:
        if self._chat:
            return {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def _start(self, index: int) -> bytes:
        """The role chunk that opens a choice, as OpenAI sends it before text (or a finish)."""
        if index in self._started:
            return b""
        self._started.add(index)
        if not self._chat:
            return b""
        return self._event([self._choice(index, {"role": "assistant", "content": "", "refusal": None})])

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
            out += self._event([self._choice(index, head)])
            args = {"tool_calls": [{"index": first + k, "function": {"arguments": function["arguments"]}}]}
            out += self._event([self._choice(index, args)])
        return out, 2 * len(calls)

    def _candidate(self, candidate: Mapping[str, Any], pos: int) -> tuple[bytes, int]:
        index = int(candidate.get("index", pos))
        if index in self._finished:
            return b"", 0
        self._seen.add(index)
        out = b""
        events = 0
        text, calls = _parts(candidate)
        if text:
            out += self._start(index)
            out += self._event([self._choice(index, {"content": text}, text)])
            events += 1
        if calls and self._chat:
            data, count = self._tool_calls(index, calls)
            out += data
            events += count
        raw_reason = candidate.get("finishReason")
        if raw_reason:
            reason = finish_reason(str(raw_reason), self._calls.get(index, 0) > 0)
            out += self._start(index)
            out += self._event([self._choice(index, {}, "", reason)])
            self._finished.add(index)
        return out, events

    def _translate(self, payload: Any) -> tuple[bytes, int]:
        if not isinstance(payload, Mapping):
            raise UpstreamError("The upstream sent a malformed stream event.")
        if isinstance(payload.get("error"), Mapping):
            message = redact(str(payload["error"].get("message") or "")[:500], self._secret)
            raise UpstreamError(f"The upstream failed mid-stream: {message}")
        usage = usage_of(payload)
        if usage is not None:
            self.usage, self._last = usage, payload
        out = b""
        events = 0
        if _blocked(payload):
            self._seen.add(0)
            out += self._start(0)
            out += self._event([self._choice(0, {}, "", "content_filter")])
            self._finished.add(0)
        for pos, candidate in enumerate(payload.get("candidates") or ()):
            data, count = self._candidate(candidate, pos)
            out += data
            events += count
        return out, events

    def feed(self, data: bytes) -> StreamPiece | None:
        buffer = (self._buffer + data).replace(b"\r\n", b"\n")
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return None
        complete, self._buffer = buffer[:cut], buffer[cut + 2 :]
        out = b""
        events = 0
        for event in complete.split(b"\n\n"):
            payload = _sse_json(event)
            if payload is not None:
                data_out, count = self._translate(payload)
                out += data_out
                events += count
        return StreamPiece(data=out, events=events) if out else None

    def finish(self) -> StreamPiece:
        """The closing events once the upstream stream ended; raises if it ended early."""
        out = b""
        events = 0
        rest = self._buffer.strip()
        self._buffer = b""
        if rest:  # a last event without its blank line
            payload = _sse_json(rest)
            if payload is not None:
                out, events = self._translate(payload)
        if not self._finished or self._seen - self._finished:
            raise UpstreamError("The upstream stream ended before it was complete.")
        if self._wants_usage:
            usage = self.usage or Usage()
            out += self._event([], _usage_json(usage, self._last))
        return StreamPiece(data=out + _DONE, events=events, usage=self.usage, done=True)


# ------------------------------------------------------------------------------ errors
def _retry_delay(details: Any) -> str | None:
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return match[1]
    return None


def error_from_response(status: int, raw: bytes, headers: Mapping[str, str], secret: str | None) -> GatewayError:
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
        message = redact(message[:500], secret)
    reasons = {d.get("reason") for d in details if isinstance(d, Mapping)} if isinstance(details, list) else set()
    if status == 400 and reasons & _AUTH_REASONS:
        status = 401
    merged = dict(headers)
    if "Retry-After" not in headers and "retry-after" not in headers:
        delay = _retry_delay(details)
        if delay is not None:
            merged["Retry-After"] = delay
    return error_for_status(status, message, None, merged)
