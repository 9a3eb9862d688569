"""Query-string parameters the admin reports share (``/admin/usage``, ``/admin/audit``)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from switchyard.core.time import parse_since
from switchyard.errors import BadRequestError

__all__ = ["query_time"]


def query_time(request: Request, name: str, now: datetime | None = None) -> datetime | None:
    """``since``/``until``: an ISO 8601 time, Unix seconds, or an age such as ``24h`` (``core.time``);
    None when absent or empty; 400 otherwise."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_since(value, now)
    except ValueError as exc:
        raise BadRequestError(f"Invalid {name}: {exc}", param=name) from None
