"""The contract check: a request against the :class:`~switchyard.core.capabilities.Capabilities`
of the route that would serve it. Pure: no I/O, no mutable state.

:func:`enforce` checks an OpenAI ``/v1/chat/completions`` (or legacy ``/v1/completions``) body.
Each line: what the request uses -> when it is refused -> the error's ``param`` [drop entries
that remove it instead]:

- non-empty ``tools`` / ``functions`` -> ``not tools`` -> ``tools`` / ``functions``
  [``tools``; ``functions`` also by ``functions``]. Once they are dropped, ``tool_choice``,
  ``function_call`` and ``parallel_tool_calls`` are removed with them.
- ``tool_choice`` / ``function_call`` -> its mode not in ``tool_choice`` -> that name
  [``tool_choice``, ``tools``; ``function_call`` also by ``function_call``, ``functions``]
- ``parallel_tool_calls: false`` with tools -> ``not parallel_tool_calls`` -> ``parallel_tool_calls``
  [``parallel_tool_calls``, ``tools``]
- ``response_format`` ``json_object`` / ``json_schema`` -> that one unsupported -> ``response_format``
  [``response_format``]
- ``logprobs`` (``true``, or a legacy integer) -> ``not logprobs`` -> ``logprobs`` [``logprobs``]
- ``top_logprobs`` > 0 -> ``not logprobs`` -> ``top_logprobs`` [``top_logprobs``, ``logprobs``]
- ``n`` / ``best_of`` > ``max_n`` -> ``n`` / ``best_of`` [``n`` / ``best_of``: removed, so 1]
- ``image_url`` content parts -> ``not vision`` -> ``messages[i].content`` [``vision``, ``images``:
  the image parts are stripped, text kept; a content left empty becomes ``""``]
- ``stream: true`` -> ``not streaming`` -> ``stream`` [never]
- (``stop`` lists, ``max_tokens`` and tool and message counts: ``core/bounds.py``)
- prompt + completion tokens -> over ``context_length`` -> ``messages`` (``prompt`` for legacy
  completions), code ``context_length_exceeded`` [never]
- any chat or completions request -> ``not chat`` (an embedding-only model) -> ``model``, code
  ``unsupported_model`` [never]

Tool-choice modes: ``"auto"``, ``"none"``, ``"required"`` (the string) and ``"function"``
(``{"type": "function", "function": {"name": ...}}``, or legacy ``function_call: {"name": ...}``).
``parallel_tool_calls: true`` is the default behaviour (the model *may* call several tools), which
every tool-capable route honours; only ``false`` needs the upstream to enforce it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from switchyard.core.capabilities import DROP_GROUPS, TOOL_CHOICE_MODES, UNSUPPORTED, Capabilities, is_int
from switchyard.errors import BadRequestError

__all__ = ["enforce", "enforce_embeddings"]


def enforce_embeddings(caps: Capabilities) -> None:
    """Refuse an embeddings request for a model that has none (400, ``param="model"``)."""
    if not caps.embeddings:
        raise BadRequestError("This model does not support embeddings.", param="model", code="unsupported_model")


def _unsupported(message: str, param: str) -> BadRequestError:
    return BadRequestError(message, param=param, code=UNSUPPORTED)


class _Drops:
    """The expanded ``drop`` list, built only once something cannot be honoured."""

    __slots__ = ("_names",)

    def __init__(self, drop: Collection[str]) -> None:
        names: set[str] = set()
        for entry in drop:
            names |= DROP_GROUPS.get(entry, frozenset())
        self._names = names

    def __contains__(self, name: str) -> bool:
        return name in self._names


def _choice_mode(value: object) -> str | None:
    """The mode of a ``tool_choice`` / ``function_call`` value (``None``: malformed, not ours to judge).

    Every object form (``{"type": "function", ...}``, ``allowed_tools``, ``custom``, legacy
    ``{"name": ...}``) restricts the model to named tools: mode ``"function"``.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "function"
    return None


def _logprobs_requested(value: object) -> bool:
    # chat: true; legacy completions: an integer (0 still returns the sampled token's logprob)
    return value is True or is_int(value)


def _has_images(content: object) -> bool:
    if not isinstance(content, list):
        return False
    return any(isinstance(part, Mapping) and part.get("type") == "image_url" for part in content)


def _without_images(content: list[Any]) -> list[Any] | str:
    kept = [part for part in content if not (isinstance(part, Mapping) and part.get("type") == "image_url")]
    return kept or ""


def enforce(
    body: Mapping[str, Any],
    caps: Capabilities,
    drop: Collection[str] = (),
    *,
    prompt_tokens: int | None = None,
) -> dict[str, Any]:
    """Check a chat/completions body against *caps*; return the body to send upstream.

    The result is a new (shallow) dict: keys that were kept are the very same objects as in
    *body*, which is never mutated. A parameter that cannot be honoured is removed when a
    ``drop`` entry covers it (see the module table), else ``BadRequestError`` (400,
    ``code="unsupported_parameter"``, ``param`` naming it) is raised. With ``prompt_tokens``
    and a known ``context_length``, a request whose prompt plus ``max_completion_tokens`` /
    ``max_tokens`` exceeds it gets ``code="context_length_exceeded"`` (never droppable).
    Unknown ``drop`` entries are ignored here; :func:`validate_drop` refuses them at start.
    """
    if not caps.chat:
        raise BadRequestError("This model does not support chat or completions; it makes embeddings only.",
                              param="model", code="unsupported_model")
    out = dict(body)
    drops: _Drops | None = None

    def droppable(param: str) -> bool:
        nonlocal drops
        if not drop:
            return False
        if drops is None:
            drops = _Drops(drop)
        return param in drops

    def refuse(param: str, message: str) -> None:
        if droppable(param):
            out.pop(param, None)
        else:
            raise _unsupported(message, param)

    # tools (and the legacy functions); once they are dropped, what steers them goes too
    if not caps.tools and (out.get("tools") or out.get("functions")):
        for param in ("tools", "functions"):
            if out.get(param):
                refuse(param, f"This model does not support '{param}' (tool calling).")
        if not (out.get("tools") or out.get("functions")):
            for param in ("tool_choice", "function_call", "parallel_tool_calls"):
                out.pop(param, None)
    for param in ("tool_choice", "function_call"):
        mode = _choice_mode(out.get(param))
        if mode is not None and mode not in caps.tool_choice:
            refuse(param, _mode_message(param, mode, caps))
    if (
        out.get("parallel_tool_calls") is False
        and not caps.parallel_tool_calls
        and (out.get("tools") or out.get("functions"))
    ):
        refuse("parallel_tool_calls", "This model does not support 'parallel_tool_calls': false (it cannot be "
                                      "stopped from calling several tools at once).")

    # response_format
    fmt = out.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if (kind == "json_object" and not caps.json_object) or (kind == "json_schema" and not caps.json_schema):
            refuse("response_format", f"This model does not support 'response_format' of type '{kind}'.")

    # logprobs
    if not caps.logprobs:
        if _logprobs_requested(out.get("logprobs")):
            refuse("logprobs", "This model does not support 'logprobs'.")
        top = out.get("top_logprobs")
        if top is not None and top is not False and top != 0:
            refuse("top_logprobs", "This model does not support 'top_logprobs'.")

    # n / best_of
    for param in ("n", "best_of"):
        count = out.get(param)
        if isinstance(count, int | float) and not isinstance(count, bool) and count > caps.max_n:
            refuse(param, f"This model supports at most {param}={caps.max_n}; got {param}={count}.")

    # images
    if not caps.vision:
        messages = out.get("messages")
        if isinstance(messages, list):
            stripped: list[Any] | None = None
            for i, msg in enumerate(messages):
                if isinstance(msg, Mapping) and _has_images(msg.get("content")):
                    if not droppable("images"):
                        raise _unsupported(
                            "This model does not support image inputs (vision).", f"messages[{i}].content"
                        )
                    if stripped is None:
                        stripped = list(messages)
                    stripped[i] = {**msg, "content": _without_images(msg["content"])}
            if stripped is not None:
                out["messages"] = stripped

    if out.get("stream") is True and not caps.streaming:
        raise _unsupported("This model does not support 'stream'.", "stream")

    if caps.context_length is not None and prompt_tokens is not None:
        _check_context(out, caps.context_length, prompt_tokens)
    return out


def _mode_message(param: str, mode: str, caps: Capabilities) -> str:
    supported = [m for m in TOOL_CHOICE_MODES if m in caps.tool_choice]
    listed = ", ".join(supported) if supported else "none at all"
    return f"This model does not support '{param}' mode '{mode}' (supported: {listed})."


def _check_context(body: Mapping[str, Any], limit: int, prompt_tokens: int) -> None:
    completion = 0
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if is_int(value):
            completion = value
            break
    if prompt_tokens + completion <= limit:
        return
    chat = "messages" in body or "prompt" not in body
    param, what = ("messages", "messages") if chat else ("prompt", "prompt")
    if completion and prompt_tokens <= limit:
        message = (
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + completion} tokens ({prompt_tokens} in the {what}, {completion} in the completion). "
            f"Please reduce the length of the {what} or completion."
        )
    else:
        message = (
            f"This model's maximum context length is {limit} tokens. However, your {what} resulted in "
            f"{prompt_tokens} tokens. Please reduce the length of the {what}."
        )
    raise BadRequestError(message, param=param, code="context_length_exceeded")
