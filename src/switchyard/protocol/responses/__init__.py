"""OpenAI Responses API shapes, translated onto chat completions (for ``/v1/responses``). Pure: no I/O.

:func:`to_chat` turns a ``CreateResponse`` body into a chat-completions body (a
:class:`ChatTranslation`); :func:`response_from_completion` turns the chat answer into a
``Response`` object; :class:`ResponseStream` turns chat stream chunks into the Responses event
sequence, and :func:`sse` frames one event.
"""

from switchyard.protocol.responses.items import ReasoningHistory, Resolve, normalize_input
from switchyard.protocol.responses.native import error_event, native_request
from switchyard.protocol.responses.relay import StreamRelay
from switchyard.protocol.responses.request import ChatTranslation, to_chat
from switchyard.protocol.responses.response import (
    Seal,
    error_object,
    new_id,
    response_from_completion,
    response_object,
    usage_object,
)
from switchyard.protocol.responses.stream import ResponseStream, sse
from switchyard.protocol.responses.tools import HOSTED_TOOL_TYPES, HostedTools, ToolSet

__all__ = [
    "HOSTED_TOOL_TYPES",
    "ChatTranslation",
    "HostedTools",
    "ReasoningHistory",
    "Resolve",
    "ResponseStream",
    "Seal",
    "StreamRelay",
    "ToolSet",
    "error_event",
    "error_object",
    "native_request",
    "new_id",
    "normalize_input",
    "response_from_completion",
    "response_object",
    "sse",
    "to_chat",
    "usage_object",
]
