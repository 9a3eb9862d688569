"""Anthropic Messages API shapes, for the inbound ``/v1/messages`` endpoint."""

from switchyard.protocol.anthropic.translate import (
    StreamConverter,
    chat_request,
    error_body,
    error_type,
    message_from_completion,
    openai_body,
    sse_event,
)

__all__ = [
    "StreamConverter",
    "chat_request",
    "error_body",
    "error_type",
    "message_from_completion",
    "openai_body",
    "sse_event",
]
