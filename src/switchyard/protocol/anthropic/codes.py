"""Anthropic's stop reasons and error types, and what each is in OpenAI's terms, both directions.

Outbound (an Anthropic upstream answering an OpenAI client, ``providers/anthropic``):
``stop_reason`` -> ``finish_reason``, and an error ``type`` -> the HTTP status it stands for
(an ``event: error`` in a stream has no status of its own).

Inbound (an Anthropic client answered by the gateway, ``protocol/anthropic``):
``finish_reason`` -> ``stop_reason``, and our HTTP status -> an error ``type``. 503 is
``overloaded_error`` but keeps status 503 (Anthropic's own 529 is unknown to generic HTTP
clients and proxies).
"""

from __future__ import annotations

from typing import Any

__all__ = ["error_status", "error_type", "finish_reason", "openai_error_type", "stop_reason"]

# stop_reason -> finish_reason. pause_turn: a server tool paused the turn; the client may send
# the conversation again.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# finish_reason -> stop_reason
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# error type -> HTTP status
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
# HTTP status -> error type
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
# OpenAI error type (in a stream's error event) -> error type
_FROM_OPENAI_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
}


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (``stop`` when unknown)."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: Any, has_tools: bool) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason`` (``end_turn`` when unknown)."""
    reason = _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"
    if has_tools and reason == "end_turn":
        return "tool_use"  # some servers say "stop" after a tool call
    return reason


def error_status(kind: str | None) -> int:
    """The HTTP status an Anthropic error ``type`` stands for (500 when unknown)."""
    return _ERROR_STATUS.get(kind or "", 500)


def error_type(status: int) -> str:
    """The Anthropic error ``type`` for an HTTP status."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def openai_error_type(kind: Any) -> str:
    """The Anthropic error ``type`` for the ``type`` of an OpenAI error (``api_error`` when unknown)."""
    return _FROM_OPENAI_ERROR_TYPES.get(str(kind), "api_error")
