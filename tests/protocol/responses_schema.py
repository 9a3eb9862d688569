"""Strict validation against OpenAI's own Responses schemas (the openai SDK's generated types).

The SDK's models accept unknown keys (``extra="allow"``) and coerce types, so validating with
them alone would pass a typo'd field or a number sent as a string. :func:`strict` validates in
pydantic's strict mode (no coercion) and then walks the validated tree: any model that kept an
unknown key at any depth is a failure. Nothing outside the repository is read.
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

__all__ = ["strict", "strict_event", "strict_response"]

_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
_RESPONSE: TypeAdapter[Any] = TypeAdapter(Response)


def _unknown(value: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in value.__pydantic_extra__ or {}]
        for name in type(value).model_fields:
            found += _unknown(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, entry in enumerate(value):
            found += _unknown(entry, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, entry in value.items():
            found += _unknown(entry, f"{path}.{key}")
    return found


def strict(adapter: TypeAdapter[Any], data: Any) -> Any:
    """Validate without coercion, and refuse unknown keys at every level."""
    value = adapter.validate_python(data, strict=True)
    unknown = _unknown(value, "")
    if unknown:
        raise AssertionError(f"keys not in OpenAI's schema: {', '.join(unknown)}")
    return value


def strict_event(data: Any) -> Any:
    return strict(_EVENT, data)


def strict_response(data: Any) -> Any:
    return strict(_RESPONSE, data)
