"""The door: what no model can honour, refused before any upstream is called (pure).

:func:`check_bounds` runs on every chat/completions body, for each route a request may be
served by, beside the capability contract (:func:`switchyard.core.capabilities.enforce`). Each
line: what the request sends -> when it is refused -> the error's ``param`` and ``code``:

- ``max_completion_tokens`` / ``max_tokens`` / ``max_output_tokens`` -> above the model's
  ``context_length`` -> that name, ``context_length_exceeded`` (so a context-window fallback may
  still serve it); with no known context length, above ``Bounds.max_tokens`` -> that name,
  ``invalid_value``
- a ``stop`` list -> longer than the model's ``max_stop`` -> ``stop``, ``invalid_value``
- ``tools`` / ``functions`` -> more than ``Bounds.max_tools`` -> that name, ``invalid_value``
- ``messages`` -> more than ``Bounds.max_messages`` -> ``messages``, ``invalid_value``

``n`` above the model's ``max_n`` is the contract's (``unsupported_parameter``, droppable).
Non-finite numbers (``NaN``, ``Infinity``, ``1e999``) are not JSON: the body reader refuses
them, naming the field that holds one (:func:`non_finite_path`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from switchyard.core.capabilities import Capabilities
from switchyard.errors import BadRequestError

__all__ = ["DEFAULT_BOUNDS", "DEFAULT_MAX_MESSAGES", "DEFAULT_MAX_TOKENS", "DEFAULT_MAX_TOOLS", "Bounds",
           "check_bounds", "non_finite_path"]

DEFAULT_MAX_TOKENS: Final = 1_048_576
DEFAULT_MAX_TOOLS: Final = 512
DEFAULT_MAX_MESSAGES: Final = 100_000
_INVALID: Final = "invalid_value"
_OUTPUT_LIMITS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")
_CHECKED: Final = frozenset({*_OUTPUT_LIMITS, "stop", "tools", "functions", "messages"})


@dataclass(frozen=True, slots=True)
class Bounds:
    """The server-wide caps (settings ``max_tokens_ceiling``, ``max_tools_per_request`` and
    ``max_messages_per_request``). ``max_tokens`` applies only where the context length is unknown."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    max_tools: int = DEFAULT_MAX_TOOLS
    max_messages: int = DEFAULT_MAX_MESSAGES


DEFAULT_BOUNDS: Final = Bounds()


def check_bounds(body: Mapping[str, Any], caps: Capabilities, bounds: Bounds) -> None:
    """Refuse (``BadRequestError``, 400, ``param`` naming the field) what no deployment of a
    route with *caps* could honour; see the module table. Never changes *body*.

    On every request's path: one set operation finds which of the checked fields the body holds."""
    present = _CHECKED.intersection(body)
    if not present:
        return
    get = body.get
    for key in _OUTPUT_LIMITS:
        if key in present:
            value = get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                most = caps.context_length if caps.context_length is not None else bounds.max_tokens
                if value > most:
                    raise _too_large(key, value, caps, bounds)
    if "stop" in present and isinstance(stop := get("stop"), list) and len(stop) > caps.max_stop:
        raise BadRequestError(
            f"Too many stop sequences: this model takes at most {caps.max_stop}, got {len(stop)} ('stop').",
            param="stop", code=_INVALID)
    if "tools" in present:
        _check_items("tools", get("tools"), bounds.max_tools)
    if "functions" in present:
        _check_items("functions", get("functions"), bounds.max_tools)
    if "messages" in present and isinstance(messages := get("messages"), list) and len(messages) > bounds.max_messages:
        _check_items("messages", messages, bounds.max_messages)


def _too_large(key: str, wanted: float, caps: Capabilities, bounds: Bounds) -> BadRequestError:
    if caps.context_length is not None:
        return BadRequestError(
            f"{key} is too large: {wanted}. This model's maximum context length is "
            f"{caps.context_length} tokens.", param=key, code="context_length_exceeded")
    return BadRequestError(
        f"{key} is too large: {wanted}. This server accepts at most {bounds.max_tokens} completion "
        "tokens for a model whose context length is unknown.", param=key, code=_INVALID)


def _check_items(key: str, items: object, most: int) -> None:
    if isinstance(items, list) and len(items) > most:
        raise BadRequestError(
            f"Too many {key}: this server accepts at most {most} per request, got {len(items)}.",
            param=key, code=_INVALID)


def non_finite_path(node: Any, path: str = "") -> str | None:
    """Where *node* holds a NaN or an infinity (``temperature``, ``messages[2].x``), or None.

    For the body reader's error path only: the strict JSON parser refuses such numbers, and a
    lenient re-parse finds which field held one.
    """
    if isinstance(node, float):
        return None if math.isfinite(node) else (path or "body")
    if isinstance(node, Mapping):
        for key, value in node.items():
            found = non_finite_path(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = non_finite_path(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None
