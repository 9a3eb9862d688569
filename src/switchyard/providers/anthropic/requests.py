"""OpenAI chat and legacy completion requests -> Anthropic's Messages API body. Pure: no I/O.

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
* Legacy completions send the prompt as one user message.
* ``cache_control`` (prompt caching) is kept where a request carries it as LiteLLM and
  OpenRouter do: on text and image parts (system ones too), on a tool definition, and on a
  message (it goes on that message's last block); ``/v1/messages`` requests arrive so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.core.models import Target
from switchyard.errors import BadRequestError

__all__ = ["DEFAULT_MAX_TOKENS", "messages_body"]

DEFAULT_MAX_TOKENS = 4096
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


def _cache(block: dict[str, Any], source: Mapping[str, Any], param: str) -> dict[str, Any]:
    """``block`` with the ``cache_control`` of the part (or message) it came from."""
    control = source.get("cache_control")
    if control is None:
        return block
    if not isinstance(control, Mapping):
        raise _refuse("cache_control must be an object", param)
    block["cache_control"] = dict(control)
    return block


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
                blocks.append(_cache({"type": "text", "text": text}, part, param))
        elif kind == "image_url" and images:
            blocks.append(_cache(_image(part, param), part, param))
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
        for part in parts:  # a tool message's cache breakpoint marks its tool_result block
            if "cache_control" in part:
                block["cache_control"] = part.pop("cache_control")
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
            parts = _blocks(msg.get("content"), param)
            if parts:
                _cache(parts[-1], msg, f"messages[{i}].cache_control")
            system.extend(parts)
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
        _cache(blocks[-1], msg, f"messages[{i}].cache_control")
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
        out.append(_cache(entry, tool, f"tools[{j}].cache_control"))
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
        if len(system) == 1 and "cache_control" not in system[0]:
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
