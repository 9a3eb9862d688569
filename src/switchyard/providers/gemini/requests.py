"""OpenAI requests -> Google's Gemini API bodies and paths (generateContent,
streamGenerateContent?alt=sse, batchEmbedContents). Pure: no I/O, table-testable.

Decisions the gateway takes for Gemini requests (see also the provider's docstring):

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
* ``reasoning_effort`` becomes ``generationConfig.thinkingConfig`` with ``includeThoughts: true``
  (:func:`thinking_config`): a ``thinkingLevel`` for Gemini 3 models (low, or high for medium and
  above: Gemini 3 Pro takes only those two), a ``thinkingBudget`` for the others (minimal 512,
  low 1024, medium 8192, high 24576: inside every 2.5 model's range), at most half of
  ``max_tokens`` (not under 512), since Gemini counts thoughts in ``maxOutputTokens`` and a
  budget that eats it leaves no answer. ``none`` sends nothing
  (2.5 Pro cannot turn thinking off), so the model thinks as it does by default, unseen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.embeddings import EmbeddingRequest
from switchyard.core.models import Target
from switchyard.errors import BadRequestError

__all__ = ["THOUGHT_SEPARATOR", "chat_body", "chat_path", "embed_body", "model_path", "thinking_config"]

THOUGHT_SEPARATOR = "__thought__"
_MODEL_NAME = re.compile(r"^(?:(?:models|tunedModels)/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
_OPTIONS = (
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
_BUDGETS = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}
_LEVELS = {"minimal": "low", "low": "low", "medium": "high", "high": "high", "xhigh": "high"}


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


def thinking_config(effort: Any, model: str, max_tokens: int | None = None) -> dict[str, Any] | None:
    """Gemini's ``thinkingConfig`` for OpenAI's ``reasoning_effort`` (None: nothing to send)."""
    if effort is None or effort == "none":
        return None
    if effort not in _BUDGETS:
        raise BadRequestError(
            "reasoning_effort must be one of 'none', 'minimal', 'low', 'medium', 'high' or 'xhigh'.",
            param="reasoning_effort",
        )
    if model.removeprefix("models/").startswith("gemini-3"):
        return {"includeThoughts": True, "thinkingLevel": _LEVELS[effort]}
    budget = _BUDGETS[effort]
    if max_tokens is not None:
        budget = min(budget, max(512, max_tokens // 2))
    return {"includeThoughts": True, "thinkingBudget": budget}


def _generation_config(request: ChatRequest, target: Target) -> dict[str, Any]:
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
    thinking = thinking_config(src.get("reasoning_effort"), target.upstream_model, request.max_tokens)
    if thinking is not None:
        config["thinkingConfig"] = thinking
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
    generation = _generation_config(request, target)
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

