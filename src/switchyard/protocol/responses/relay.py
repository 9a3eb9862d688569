"""The gateway's chat SSE bytes -> the Responses stream's framed bytes. Pure.

:class:`StreamRelay` is fed the chat stream as it is relayed (whole events, or reads split
anywhere) and returns the Responses events those bytes complete, framed. An event that is one
``data:`` line (every event the gateway relays) is read without the general decoder.
"""

from __future__ import annotations

import orjson

from switchyard.protocol.responses.stream import ResponseStream
from switchyard.protocol.sse import SSEDecoder

__all__ = ["StreamRelay"]


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
        out: list[bytes] = []
        frames = self.stream.frames
        for block in buffer[:cut].split(b"\n\n"):
            if block[:6] == b"data: " and b"\n" not in block:
                payload = block[6:]
            else:
                event = self._decoder.event(block.strip(b"\n")) if block.strip(b"\n") else None
                if event is None:
                    continue
                payload = event.data
            if payload == b"[DONE]":
                continue
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(chunk, dict):
                out.append(frames(chunk))
        return b"".join(out)
