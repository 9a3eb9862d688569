"""The gateway's OpenAI stream -> Anthropic Messages stream events. Pure.

``message_start`` carries ``input_tokens: 0`` (the upstream reports usage only at the end); the
real counts come in ``message_delta`` (cumulative, as the Anthropic SDKs read them), in
Anthropic's meaning: ``input_tokens`` uncached, beside ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` (OpenAI's ``prompt_tokens`` is their sum).

Reasoning deltas (``reasoning_content`` / ``reasoning``) open a ``thinking`` block, streamed as
``thinking_delta`` events and closed with a ``signature_delta``, as Anthropic streams thinking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from switchyard.errors import GatewayError
from switchyard.protocol.anthropic.codes import error_type, openai_error_type, stop_reason
from switchyard.protocol.anthropic.responses import (
    anthropic_usage,
    as_mapping,
    new_id,
    reasoning_of,
    signature,
    sse_event,
)
from switchyard.protocol.sse import ServerSentEvent, SSEDecoder

__all__ = ["StreamConverter"]


class StreamConverter:
    """OpenAI chat.completion.chunk SSE bytes -> Anthropic Messages SSE events.

    ``feed`` takes bytes as the gateway yields them (any number of whole or partial events)
    and returns the Anthropic events they complete; ``message_start`` comes with the first
    call. ``[DONE]`` closes the message (block stops, ``message_delta``, ``message_stop``).
    An OpenAI ``data: {"error": ...}`` event, or ``error(exc)``, ends it with an Anthropic
    ``error`` event and no ``message_stop``. Every tool-call argument fragment is relayed as
    its own ``input_json_delta``, in order.
    """

    def __init__(self, model: str, *, message_id: str | None = None, input_tokens: int = 0,
                 thinking: bool = True) -> None:
        self.model = model
        self._thinking = thinking
        self._thought: list[str] = []  # the open thinking block's text, for its signature
        self.message_id = message_id or new_id("msg_")
        self._input_tokens = input_tokens
        self._decoder = SSEDecoder()
        self._started = False
        self.ended = False
        self._open: int | None = None  # index of the block now open
        self._open_kind: str | None = None
        self._next = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls[].index -> block index
        self._finish: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._deltas = 0

    # -- public
    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start())
        for event in self._decoder.feed(data):
            if not self.ended:
                self._event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        """Close the message if the stream ended without ``[DONE]``; nothing when already ended."""
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start())
        last = self._decoder.close()  # an event without its blank line
        if last is not None and not self.ended:
            self._event(last, out)
        if not self.ended:
            self._close(out)
        return b"".join(out)

    def error(self, exc: GatewayError) -> bytes:
        return self._error(error_type(exc.status_code), exc.message)

    # -- internals
    def _message_start(self) -> bytes:
        self._started = True
        return sse_event("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }})

    def _error(self, kind: str, message: str) -> bytes:
        self.ended = True
        out = self._message_start() if not self._started else b""
        return out + sse_event("error", {"type": "error", "error": {"type": kind, "message": message}})

    def _event(self, event: ServerSentEvent, out: list[bytes]) -> None:
        data = event.data
        if data.strip() == b"[DONE]":
            self._close(out)
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        err = chunk.get("error")
        if err is not None:
            info = err if isinstance(err, Mapping) else {"message": str(err)}
            kind = openai_error_type(info.get("type"))
            out.append(self._error(kind, str(info.get("message") or "The upstream failed mid-stream.")))
            return
        if isinstance(chunk.get("usage"), Mapping):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            reasoning = reasoning_of(delta) if self._thinking else ""
            if reasoning:
                self._reasoning(reasoning, out)
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                self._text(text, out)
            for position, call in enumerate(delta.get("tool_calls") or ()):
                if isinstance(call, Mapping):
                    self._tool_call(call, position, out)
        if choice.get("finish_reason"):
            self._finish = str(choice["finish_reason"])

    def _start_block(self, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        self._stop_open(out)
        index = self._next
        self._next += 1
        self._open, self._open_kind = index, kind
        out.append(sse_event("content_block_start",
                             {"type": "content_block_start", "index": index, "content_block": block}))
        return index

    def _stop_open(self, out: list[bytes]) -> None:
        if self._open is not None and self._open_kind == "thinking":
            self._delta(self._open, {"type": "signature_delta", "signature": signature("".join(self._thought))}, out)
            self._thought.clear()
        if self._open is not None:
            out.append(sse_event("content_block_stop", {"type": "content_block_stop", "index": self._open}))
            self._open = self._open_kind = None

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        self._deltas += 1
        out.append(sse_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))

    def _reasoning(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open_kind != "thinking":
            self._start_block("thinking", {"type": "thinking", "thinking": "", "signature": ""}, out)
        assert self._open is not None
        self._thought.append(text)
        self._delta(self._open, {"type": "thinking_delta", "thinking": text}, out)

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open_kind != "text":
            self._start_block("text", {"type": "text", "text": ""}, out)
        assert self._open is not None
        self._delta(self._open, {"type": "text_delta", "text": text}, out)

    def _tool_call(self, call: Mapping[str, Any], position: int, out: list[bytes]) -> None:
        key = call.get("index")
        key = key if isinstance(key, int) else position
        function = as_mapping(call.get("function"))
        index = self._tools.get(key)
        if index is None:
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id") or new_id("toolu_"),
                     "name": function.get("name") or "", "input": {}}
            index = self._tools[key] = self._start_block("tool", block, out)
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):  # some servers send the whole object at once
            arguments = orjson.dumps(arguments).decode()
        if isinstance(arguments, str) and arguments:
            # to its own block even if another one opened meanwhile (interleaved calls): never drop a fragment
            self._delta(index, {"type": "input_json_delta", "partial_json": arguments}, out)

    def _close(self, out: list[bytes]) -> None:
        self._stop_open(out)
        self.ended = True
        usage: dict[str, Any] = {"output_tokens": self._deltas}
        if self._usage is not None:
            usage = anthropic_usage(self._usage)
        out.append(sse_event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self._finish, bool(self._tools)), "stop_sequence": None},
            "usage": usage,
        }))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
