"""Reading request bodies: size-limited, then strict JSON (orjson rejects bad UTF-8, deep nesting
and numbers that are not finite: ``NaN``, ``Infinity``, ``1e999``)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request

from switchyard.core.bounds import non_finite_path
from switchyard.errors import BadRequestError, RequestTooLargeError

__all__ = ["read_json"]

_LENIENT_MAX = 1024 * 1024  # bodies re-read to find which field holds a non-finite number


def _non_finite(raw: bytes) -> BadRequestError | None:
    """The 400 for a body that is JSON but for a non-finite number, naming its field; None otherwise.

    Only on the error path: Python's parser takes ``NaN``/``Infinity`` and turns ``1e999`` into an
    infinity, so the field can be found (bounded to 1 MiB, as that parser is slower)."""
    if len(raw) > _LENIENT_MAX:
        return None
    try:
        body = json.loads(raw, parse_int=lambda text: float(text) if len(text) > 300 else int(text))
    except (ValueError, RecursionError):
        return None
    path = non_finite_path(body)
    if path is None:
        return None
    return BadRequestError(f"Invalid request: {path}: numbers must be finite (no NaN or infinity).",
                           param=path, code="invalid_value")


async def read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise BadRequestError("The request body is empty; send a JSON object.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        non_finite = _non_finite(raw) if "infinity" in str(exc) or b"NaN" in raw or b"Infinity" in raw else None
        if non_finite is not None:
            raise non_finite from None
        reason = "nested too deeply" if "recursion" in str(exc) else "not valid JSON (or not UTF-8)"
        raise BadRequestError(f"The request body is {reason}.") from None
