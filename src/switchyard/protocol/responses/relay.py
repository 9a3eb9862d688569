"""The gateway's chat SSE bytes -> the Responses stream's framed bytes. Pure.

:class:`StreamRelay` is fed the chat stream as it is relayed (whole events, or reads split
anywhere) and returns the Responses events those bytes complete, framed. An event that is one
``data:`` line (every event the gateway relays) is read without the general decoder.
"""

from __future__ import annotations

import re

import orjson

from switchyard.protocol.responses.stream import ResponseStream
from switchyard.protocol.sse import SSEDecoder

__all__ = ["StreamRelay"]

# One event: group 1 when its chunk only continues the text (no finish, usage, error, logprobs,
# role or anything else, as OpenAI-compatible servers write it: the text as the JSON string
# content it came as), else group 2 (the event's lines).
# Possessive (``*+``, ``++``): nothing is tried twice, so a read costs one pass whatever an
# upstream sends (no backtracking that grows with a long text that ends unlike the pattern).
_TEXT = (rb'data: \{[^\n{\[]*+(?<="choices":)\[\{"index":0,"delta":\{"content":"'
         rb'((?:[^"\\\n]++|\\.)++)"\},"logprobs":null,"finish_reason":null\}\](?:,"usage":null)?\}\n\n')
_TEXTS = re.compile(_TEXT)
_EVENT = re.compile(_TEXT + rb'|((?:[^\n]++|\n(?!\n))*+)\n\n')


class StreamRelay:
    __slots__ = ("_decoder", "_rest", "stream")

    def __init__(self, stream: ResponseStream) -> None:
        self.stream = stream
        self._decoder = SSEDecoder()  # for events of other shapes (comments, several lines)
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        """The framed Responses events the chat SSE bytes ``data`` complete (``b""`` if none)."""
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._rest + data if self._rest else data
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._rest = buffer
            return b""
        self._rest = buffer[cut + 2:]
        stream = self.stream
        if stream.writing_text:  # most reads: every event in them only continues the text
            found: list[bytes] = _TEXTS.findall(buffer, 0, cut + 2)
            if found and len(found) == buffer.count(b"\n\n", 0, cut + 2):
                return stream.raw_texts(found)
        out: list[bytes] = []
        texts: list[bytes] = []  # pieces of the text waiting to be framed together
        for event in _EVENT.finditer(buffer, 0, cut + 2):
            text, block = event.group(1, 2)
            if text is not None:
                if stream.writing_text:
                    texts.append(text)
                    continue
                block = event.group(0)[:-2]
            if texts:
                out.append(stream.raw_texts(texts))
                texts = []
            if block[:6] == b"data: " and b"\n" not in block:  # one data line: every event the gateway relays
                payload = block[6:]
            else:
                parsed = self._decoder.event(block.strip(b"\n")) if block.strip(b"\n") else None
                if parsed is None:
                    continue
                payload = parsed.data
            if payload != b"[DONE]":
                out.append(self._event(payload))
        if texts:
            out.append(stream.raw_texts(texts))
        return b"".join(out)

    def _event(self, payload: bytes) -> bytes:
        """The framed Responses events for one chat chunk's JSON."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return b""
        return self.stream.frames(chunk) if isinstance(chunk, dict) else b""
