"""Admin request bodies: validation into a wire model (a 400 naming the field), and RFC 7396
JSON merge patches (the one implementation; every PATCH of the admin API uses it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from switchyard.errors import BadRequestError

__all__ = ["merge_patch", "validate"]

M = TypeVar("M", bound=BaseModel)


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any], *, merge: bool = True) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes a field. With
    ``merge=False`` each field the patch names is replaced whole (its objects are not merged)."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif merge and isinstance(value, Mapping):
            current = out.get(key)
            out[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def validate(model: type[M], body: Any) -> M:
    """``model`` from a JSON body, or a 400 naming the first bad field (``limits.rpm``)."""
    if not isinstance(body, dict):
        raise BadRequestError("The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        raise BadRequestError(f"Invalid request: {param}: {err['msg']}", param=param) from None
