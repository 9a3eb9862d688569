"""Newline-delimited JSON (``application/x-ndjson``, JSON Lines), fed network reads split anywhere.

Each line is one JSON value; a line ends with ``\\n`` (a ``\\r`` before it is JSON whitespace).
Blank lines are skipped. A last line without its ``\\n`` is read by :meth:`NDJSONDecoder.close`.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["LineDecoder", "LineTooLong", "MalformedLine", "NDJSONDecoder"]

MAX_LINE = 16 << 20  # the longest line read: a peer that never ends one cannot fill memory


class LineTooLong(ValueError):
    """A line grew past the decoder's limit without ending."""


class MalformedLine(ValueError):
    """A line that is not JSON."""


class LineDecoder:
    """Lines, each with its ``\\n``, as reads complete them."""

    __slots__ = ("_max", "_rest")

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._rest = b""
        self._max = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if b"\n" not in data:
            self._rest += data
            if len(self._rest) > self._max:
                raise LineTooLong(f"A line is longer than {self._max} bytes.")
            return []
        *lines, rest = (self._rest + data).split(b"\n")
        self._rest = rest
        return [line + b"\n" for line in lines]

    def close(self) -> bytes:
        """The last line, when the stream did not end it (``b""`` otherwise)."""
        rest, self._rest = self._rest, b""
        return rest


class NDJSONDecoder:
    """The JSON values of the lines each read completes."""

    __slots__ = ("_lines",)

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._lines = LineDecoder(max_line)

    def feed(self, data: bytes) -> list[Any]:
        return [_value(line) for line in self._lines.feed(data) if not line.isspace()]

    def close(self) -> list[Any]:
        rest = self._lines.close()
        return [_value(rest)] if rest and not rest.isspace() else []


def _value(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise MalformedLine("A line is not JSON.") from exc
