"""A ``/v1/responses`` body relayed as it is, to an upstream that speaks the Responses API. Pure.

:func:`native_request` checks only what the gateway itself reads (``model``, ``stream``,
``max_output_tokens`` for budgets, no connection-steering field at any depth) and keeps the
body whole: the upstream validates the rest (its errors are mapped as a chat upstream's are:
status, message and ``param`` kept). :func:`error_event` is the ``error``
event that ends a relayed stream the upstream failed after its first byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, GenerationKind
from switchyard.errors import BadRequestError, GatewayError
from switchyard.protocol.openai.requests import steering_path
from switchyard.protocol.responses.tools import bad

__all__ = ["error_event", "native_request"]


def native_request(body: Any) -> ChatRequest:
    """The body as a :class:`ChatRequest` of kind ``RESPONSES`` (the body itself, unchanged)."""
    if not isinstance(body, Mapping):
        raise BadRequestError("The request body must be a JSON object.")
    steering = steering_path(body)  # at any depth, as for chat
    if steering is not None:
        raise BadRequestError(
            f"Invalid request: {steering}: not accepted; the gateway decides where requests go.",
            param=steering, code="field_not_allowed",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model", "a model is required")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad("stream", "must be a boolean")
    most = body.get("max_output_tokens")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise bad("max_output_tokens", "must be a positive integer")
    return ChatRequest(kind=GenerationKind.RESPONSES, model=model, body=body, stream=bool(stream), max_tokens=most)


def error_event(exc: GatewayError, sequence_number: int) -> bytes:
    """The Responses ``error`` event, framed (``event: error``)."""
    event = {"type": "error", "code": "rate_limit_exceeded" if exc.status_code == 429 else "server_error",
             "message": exc.message, "param": None, "sequence_number": sequence_number}
    return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"
