"""Anthropic Messages API shapes, for the inbound ``/v1/messages`` endpoint. Pure: no I/O.

An Anthropic client's request becomes an OpenAI chat body (:mod:`.requests`) that goes through
``parse_chat_request`` and the gateway like any other; the OpenAI answer, JSON or SSE bytes, is
turned back into Anthropic shapes (:mod:`.responses`, :mod:`.stream`). :mod:`.codes` holds the
stop reasons and error types, for both directions.
"""

from switchyard.protocol.anthropic.codes import error_type
from switchyard.protocol.anthropic.requests import chat_request, openai_body, wants_thinking
from switchyard.protocol.anthropic.responses import error_body, message_from_completion, sse_event
from switchyard.protocol.anthropic.stream import StreamConverter

__all__ = [
    "StreamConverter",
    "chat_request",
    "error_body",
    "error_type",
    "message_from_completion",
    "openai_body",
    "sse_event",
    "wants_thinking",
]
