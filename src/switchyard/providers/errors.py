"""Upstream errors -> gateway errors: by status code (never by message text). The text they quote
was redacted where it came in (``providers/_http.py``, with ``core/redaction.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from switchyard.errors import (
    BadRequestError,
    GatewayError,
    NotFoundError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)

__all__ = ["error_for_status", "retry_after"]


def retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_for_status(
    status: int, message: str | None, param: str | None, headers: Mapping[str, str]
) -> GatewayError:
    """Map an upstream error response (its text already redacted, as all upstream text is)."""
    text = message or f"The upstream answered {status}."
    after = retry_after(headers)
    if status == 429:
        return UpstreamRateLimitError(f"The upstream is rate limiting: {text}", retry_after=after)
    if status in (401, 403):
        # The client's key was fine; the gateway's upstream credential was not.
        return UpstreamError("The upstream rejected the gateway's credentials.", code="upstream_auth_error")
    if status == 404:
        return NotFoundError(f"The upstream reported not found: {text}", code="upstream_not_found")
    if status == 408 or status == 504:
        return UpstreamTimeoutError("The upstream timed out.", retry_after=after)
    if status in (400, 409, 413, 422):
        return BadRequestError(text, param=param, code="upstream_bad_request")
    if status in (503, 529):
        return ServiceUnavailableError(f"The upstream is unavailable: {text}", retry_after=after)
    if status >= 500:
        return UpstreamError(f"The upstream failed ({status}): {text}", retry_after=after)
    return UpstreamError(f"Unexpected upstream status {status}: {text}")
