"""Reading request bodies: size-limited, then strict JSON (orjson rejects bad UTF-8 and deep nesting)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from switchyard.errors import BadRequestError, RequestTooLargeError

__all__ = ["read_json"]


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
        reason = "nested too deeply" if "recursion" in str(exc) else "not valid JSON (or not UTF-8)"
        raise BadRequestError(f"The request body is {reason}.") from None
