"""OpenAI's Responses API, relayed to an upstream that speaks it itself. Pure: no I/O.

The request is the client's ``/v1/responses`` body with ``model`` swapped for the upstream's
name; the answer is relayed as the upstream sent it (the JSON body, or the SSE events as they
arrive). The gateway reads only the usage: the body's ``usage``, or the ``response`` of the
stream's last event (``response.completed``, ``response.incomplete`` or ``response.failed``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.core.chat import ChatRequest, StreamPiece
from switchyard.core.models import Target
from switchyard.core.usage import Usage
from switchyard.errors import UpstreamError
from switchyard.protocol.sse import EventFramer, SSEDecoder

__all__ = ["ResponsesStreamConverter", "responses_body", "usage_from_response"]

_GATEWAY_FIELDS = ("keep_alive",)
_ENDS = (b'"type":"response.completed"', b'"type":"response.incomplete"', b'"type":"response.failed"',
         b'"type": "response.completed"', b'"type": "response.incomplete"', b'"type": "response.failed"')


def responses_body(request: ChatRequest, target: Target) -> dict[str, Any]:
    """The client's body, for the upstream: its model name, nothing of the gateway's own."""
    body = {k: v for k, v in request.body.items() if k not in _GATEWAY_FIELDS}
    body["model"] = target.upstream_model
    return body


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def usage_from_response(payload: Mapping[str, Any] | None) -> Usage:
    """A ``Response`` object's usage (``input_tokens``, ``output_tokens``); estimated when absent."""
    usage = payload.get("usage") if isinstance(payload, Mapping) else None
    if isinstance(usage, Mapping):
        return Usage(prompt_tokens=_int(usage.get("input_tokens")), completion_tokens=_int(usage.get("output_tokens")))
    return Usage(estimated=True)


class ResponsesStreamConverter:
    """Relays a Responses event stream as its complete events arrive, unchanged.

    Only the read holding the stream's last event (or an ``error`` event) is parsed, for the usage
    report; every other read is forwarded as the bytes that arrived (line ends made ``\\n``).
    """

    stop_reading = False  # read to its end, so its connection can be reused

    def __init__(self) -> None:
        self._frame = EventFramer().feed
        self._decoder = SSEDecoder()
        self.done = False
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> StreamPiece | None:
        complete = self._frame(data)
        if not complete:
            return None
        usage = None
        if any(end in complete for end in _ENDS) or b"event: error" in complete:
            usage = self._inspect(complete)
        return StreamPiece(data=complete, events=complete.count(b"data: "), usage=usage, done=self.done)

    def _inspect(self, complete: bytes) -> Usage | None:
        usage = None
        for raw in complete.split(b"\n\n"):
            event = self._decoder.event(raw) if raw else None
            if event is None:
                continue
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            kind = payload.get("type") if isinstance(payload, dict) else None
            if kind == "error":
                self.done = True  # the upstream ended the stream with it; relayed as it is
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                self.done = True
                usage = usage_from_response(payload.get("response"))
                if not usage.estimated:
                    self.usage = usage
                else:
                    usage = None
        return usage

    def finish(self) -> None:
        if not self.done:
            raise UpstreamError("The upstream stream ended before it was complete.")
