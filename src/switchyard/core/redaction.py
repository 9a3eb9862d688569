"""The one redaction of text from outside: no secret the gateway knows passes through it.

Upstream bodies and streams enter the gateway in one place (``providers/_http.py``), and they
are redacted there, before any provider reads them. So an upstream that echoes the credential
it was sent (in a JSON error, in an error event mid-stream, in a plain-text 500) cannot put it
in a client's response, a log line, ``/admin/status`` or a usage row.

The secrets are the process's: each upstream client adds the credentials it sends, the server
adds its master key and server secret at start. A client key (``sk-sy-`` and 43 url-safe
characters) is redacted by its shape, as only its hash is kept. A stream is redacted as it
comes: the tail of a read that may be the start of a secret is held back until the next read
says whether it is one.
"""

from __future__ import annotations

import re
import threading

__all__ = ["REDACTED", "SECRETS", "Redactor", "StreamRedactor"]

REDACTED = b"[redacted]"
_MIN_SECRET = 8  # shorter values would redact ordinary words
_CLIENT_KEY = re.compile(rb"sk-sy-[A-Za-z0-9_-]{43}")
_CLIENT_KEY_START = re.compile(rb"s(?:k(?:-(?:s(?:y(?:-[A-Za-z0-9_-]{0,42})?)?)?)?)?")
_CLIENT_KEY_LEN = 49


class Redactor:
    """The secrets known to this process, and their removal from bytes and text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[bytes, ...] = ()
        self._starts = frozenset(b"s")  # first bytes of what may begin a secret
        self._longest = _CLIENT_KEY_LEN

    def add(self, *values: str | bytes | None) -> None:
        """Secrets to redact from now on (empty or very short values are ignored)."""
        with self._lock:
            known = set(self._secrets)
            for value in values:
                raw = value.encode() if isinstance(value, str) else value
                if raw and len(raw) >= _MIN_SECRET:
                    known.add(raw)
            self._secrets = tuple(sorted(known, key=len, reverse=True))  # longest first: no partial leftovers
            self._starts = frozenset({s[0] for s in self._secrets} | {ord("s")})
            self._longest = max([_CLIENT_KEY_LEN, *(len(s) for s in self._secrets)])

    def redact_bytes(self, data: bytes) -> bytes:
        for secret in self._secrets:
            if secret in data:
                data = data.replace(secret, REDACTED)
        if b"sk-sy-" in data:
            data = _CLIENT_KEY.sub(REDACTED, data)
        return data

    def redact(self, text: str) -> str:
        encoded = text.encode("utf-8", "surrogatepass")
        clean = self.redact_bytes(encoded)
        return text if clean is encoded else clean.decode("utf-8", "surrogatepass")

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)

    def held_back(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` may be the start of a secret."""
        if data.endswith(b"\n"):  # no secret holds a line break (a header value cannot): the usual SSE read
            return 0
        tail = len(data) - min(len(data), self._longest - 1)
        for at in range(tail, len(data)):
            if data[at] not in self._starts:
                continue
            suffix = data[at:]
            if _CLIENT_KEY_START.fullmatch(suffix) or any(s.startswith(suffix) for s in self._secrets):
                return len(data) - at
        return 0


class StreamRedactor:
    """One stream's redaction: reads in, redacted bytes out, nothing held back at the end."""

    __slots__ = ("_pending", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self._redactor.redact_bytes(self._pending + data if self._pending else data)
        keep = self._redactor.held_back(data)
        if keep:
            self._pending = data[-keep:]
            return data[:-keep]
        self._pending = b""
        return data

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        return self._redactor.redact_bytes(rest)


SECRETS = Redactor()  # the process's: upstream clients and the server add theirs
