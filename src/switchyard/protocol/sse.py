"""Server-sent events, read as the WHATWG HTML standard says ("Interpreting an event stream").

* A line ends with CRLF, LF or CR; a CRLF split between two reads is still one line end.
* A line ``field: value`` drops exactly one space after the colon; a line without a colon is a
  field with an empty value; a line starting with ``:`` is a comment.
* ``data`` lines accumulate, joined with ``\\n``; ``event`` names the event (``message`` when
  unnamed); ``id`` sets the last event id (ignored when it holds NUL) and outlives the event;
  ``retry`` (ASCII digits only) sets the reconnection delay; other fields are ignored.
* A blank line dispatches the event, unless no ``data`` came: then it is dropped.
* One leading byte order mark is skipped.

Two layers, both fed network reads split anywhere:

:class:`EventFramer`
    The complete events as the bytes that arrived (line ends made ``\\n``), for a relay that
    forwards events untouched and parses only the few it must. It costs a ``bytes.rfind`` per
    read (and two ``replace`` calls when the upstream uses CR).
:class:`SSEDecoder`
    :class:`ServerSentEvent` objects.

The standard drops an event the stream ends in the middle of; :meth:`SSEDecoder.close` hands it
over for the callers that accept a last event without its blank line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EventFramer", "SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event. ``data`` stays bytes: JSON parsers take it as it is."""

    data: bytes
    event: str = "message"
    id: str = ""
    retry: int | None = None


class EventFramer:
    """Cuts a byte stream after its last complete event (the blank line that ends it)."""

    __slots__ = ("_cr", "_rest", "_start", "_watch")

    def __init__(self) -> None:
        self._rest = b""
        self._cr = False  # the last read ended in CR: an LF that opens the next read is its pair
        self._start = True  # a byte order mark may still come
        self._watch = True  # either of the two above (one check on the common read)

    def feed(self, data: bytes) -> bytes:
        """The events this read completes, each ending in a blank line (``b""`` if none)."""
        if self._watch:
            data = self._watched(data)
            if self._start:  # the first bytes may still become a byte order mark
                return b""
        if b"\r" in data:
            self._cr = self._watch = data[-1] == 13
            data = data.replace(b"\r\n", b"\n")
            if b"\r" in data:
                data = data.replace(b"\r", b"\n")
        buffer = self._rest + data  # bytes + b"" is the same object: no copy on the common read
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._rest = buffer
            return b""
        cut += 2
        self._rest = buffer[cut:]
        return buffer[:cut]

    def rest(self) -> bytes:
        """What came after the last complete event (line ends made ``\\n``), and forget it."""
        rest, self._rest = self._rest, b""
        return rest

    def _watched(self, data: bytes) -> bytes:
        if self._cr:
            if not data:
                return data
            self._cr = False
            if data[0] == 10:
                data = data[1:]
        if self._start:
            data, self._rest = self._rest + data, b""
            if len(data) < 3 and _BOM.startswith(data):
                self._rest = data
                return b""
            self._start = False
            data = data.removeprefix(_BOM)
        self._watch = self._cr
        return data


class SSEDecoder:
    """Incremental: :meth:`feed` each read, get the events it completes."""

    __slots__ = ("_framer", "last_event_id", "retry")

    def __init__(self) -> None:
        self._framer = EventFramer()
        self.last_event_id = ""
        self.retry: int | None = None  # the reconnection delay the stream asked for, in ms

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        complete = self._framer.feed(data)
        if not complete:
            return []
        events = []
        for block in complete.split(b"\n\n"):
            if block:
                event = self.event(block)
                if event is not None:
                    events.append(event)
        return events

    def close(self) -> ServerSentEvent | None:
        """The event the stream ended in the middle of (before its blank line), if it has data."""
        rest = self._framer.rest()
        return self.event(rest) if rest else None

    def event(self, block: bytes) -> ServerSentEvent | None:
        """One event's lines (``\\n``-separated, without the blank line) -> the event, or None
        when it carries no data (its ``id`` and ``retry`` still apply)."""
        data: list[bytes] = []
        name = b""
        for line in block.split(b"\n"):
            if not line or line[0] == 58:  # blank, or ":" (a comment)
                continue
            field, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
            elif field == b"id":
                if b"\0" not in value:
                    self.last_event_id = value.decode("utf-8", "replace")
            elif field == b"retry":
                if value.isdigit():  # bytes.isdigit is ASCII digits only, as the standard asks
                    self.retry = int(value)
        if not data:
            return None
        return ServerSentEvent(
            data=data[0] if len(data) == 1 else b"\n".join(data),
            event=name.decode("utf-8", "replace") if name else "message",
            id=self.last_event_id,
            retry=self.retry,
        )
