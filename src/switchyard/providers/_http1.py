"""HTTP/1.1 to one upstream origin: asyncio transports, httptools parsing, a keep-alive pool.

Why not aiohttp's client: measured at c=1 on the bench
stack (``bench/floor_app.py``), its per-request bookkeeping cost about 230 µs of CPU, half of the
0.5 ms a gateway may add. This module does only what upstream calls need, the way uvicorn's
``httptools_impl`` does it for the server side: the parsing (status line, headers, chunked and
content-length bodies) is httptools' (llhttp); what is here is the connection handling.

- One :class:`Origin` per provider: scheme, host and port fixed at construction, so a client can
  never choose where the gateway connects.
- Keep-alive pool, last-in first-out. A pooled connection the server closed is dropped before it
  is reused; one that dies before a single byte of the answer arrives is retried once on a fresh
  connection (the server's idle close raced our request).
- Answers are read as they arrive: :meth:`Response.read` for a whole body, :meth:`Response.chunks`
  and :meth:`Response.lines` for streams. Reading stops the socket when 1 MiB waits unread.
- Timeouts: a deadline for the whole call and a limit on each wait for the next bytes.
- No redirects, no cookies, no proxies from the environment, no compression asked for (a gzip or
  deflate body that comes anyway is decompressed).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httptools

__all__ = ["ConnectionClosed", "Exchange", "Headers", "MalformedResponse", "Origin", "Response"]

_PAUSE_AT = 1 << 20  # unread bytes that stop reading from the socket
_MAX_IDLE = 256  # idle connections kept per origin
_PATH_SAFE = "/:@!$&'()*+,;=-._~%?"  # what may stay as it is in a request target


class ConnectionClosed(Exception):
    """The upstream closed the connection before the answer was complete."""


class MalformedResponse(Exception):
    """The upstream's bytes are not an HTTP/1.1 response."""


class Headers(dict[str, str]):
    """Response headers: lower-cased names, case-insensitive lookup, repeats joined by ", "."""

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        old = dict.get(self, key)
        dict.__setitem__(self, key, value if old is None else f"{old}, {value}")

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a request was sent and its answer is not yet handed back
        self.idle_since = 0.0
        self.reused = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers = Headers()
        self.got_bytes = False
        self.head_done = False
        self.keep_alive = False
        self.complete = False
        self.error: Exception | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for, on an idle connection: it cannot be trusted
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedResponse("The upstream switched protocols."))
        except httptools.HttpParserError as exc:
            self._fail(MalformedResponse(f"The upstream sent a malformed HTTP response ({exc})."))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete or self.error is not None:
            return
        if self.head_done and self._parser_has_no_length():
            self.complete = True  # a body delimited by the close itself
        else:
            self.error = ConnectionClosed("The upstream closed the connection early.")
        self._wake()

    # --- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (103 Early Hints): the real one follows
            self.headers = Headers()
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message ends
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered >= _PAUSE_AT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim answer
        self.complete = True
        self._wake()

    # --- used by Response and Origin -------------------------------------------------------

    def _parser_has_no_length(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in self.headers.get("transfer-encoding", "")

    def _fail(self, exc: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = exc
        self.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until something new happened on this connection, or ``TimeoutError``."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        """Every body byte received and not yet taken."""
        body = self._body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def has_body(self) -> bool:
        return self._buffered > 0

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        lost = self.closed or self.transport.is_closing()
        self._reset()
        self.busy = True
        if lost:  # since it was taken (a reset right after connect, a close racing the pool): uvloop
            # raises RuntimeError on a write to it, and asyncio would drop the bytes and wait
            raise ConnectionClosed("The upstream closed the connection early.")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


def _wait_limit(deadline: float | None, read_timeout: float | None) -> float | None:
    """How long the next wait for bytes may take: ``TimeoutError`` once the deadline passed."""
    if deadline is None:
        return read_timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left if read_timeout is None else min(left, read_timeout)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Response:
    """An answer being read. Use it inside :meth:`Origin.request`'s ``async with``."""

    __slots__ = ("_conn", "_deadline", "_inflate", "_read_timeout", "headers", "status")

    def __init__(self, conn: _Connection, deadline: float | None, read_timeout: float | None) -> None:
        self._conn = conn
        self._deadline = deadline
        self._read_timeout = read_timeout
        self.status = conn.status
        self.headers = conn.headers
        coding = conn.headers.get("content-encoding")
        # a zlib decompressor when the body came compressed
        self._inflate: Any = _decompressor(coding) if coding is not None else None

    def _decoded(self, data: bytes, last: bool) -> bytes:
        try:
            data = self._inflate.decompress(data)
            return data + self._inflate.flush() if last else data
        except zlib.error as exc:
            raise MalformedResponse("The upstream sent a compressed body that does not decompress.") from exc

    def _timeout(self) -> float | None:
        return _wait_limit(self._deadline, self._read_timeout)

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        while not conn.complete:
            if conn.error is not None:
                raise conn.error
            await conn.wait(self._timeout())
        if conn.error is not None:
            raise conn.error
        data = conn.take() if conn.has_body else b""
        return data if self._inflate is None else self._decoded(data, last=True)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, in pieces of any size."""
        conn = self._conn
        while True:
            if conn.has_body:
                data = conn.take()
                if self._inflate is not None:
                    data = self._decoded(data, last=False)
                    if not data:
                        continue
                yield data
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                if self._inflate is not None and (tail := self._decoded(b"", last=True)):
                    yield tail
                return
            await conn.wait(self._timeout())


class Exchange:
    """``async with origin.request(...) as resp``: the connection goes back to the pool if the
    answer was read to its end, and is closed otherwise (an early exit, an error, a cancel)."""

    __slots__ = ("_args", "_conn", "_origin")

    def __init__(self, origin: Origin, args: tuple[Any, ...]) -> None:
        self._origin = origin
        self._args = args
        self._conn: _Connection | None = None

    async def __aenter__(self) -> Response:
        response = await self._origin._open(*self._args)
        self._conn = response._conn
        return response

    async def __aexit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._origin._release(self._conn)


class Origin:
    """Requests to one ``scheme://host:port`` under a base path, with fixed headers."""

    def __init__(self, base_url: str, headers: Mapping[str, str], *, keepalive: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"An upstream URL must be http:// or https:// with a host, not {base_url!r}.")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.base_path = parts.path.rstrip("/")
        default_port = self.port == (443 if self.secure else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        fixed = {"Host": host if default_port else f"{host}:{self.port}", **headers}
        if not any(name.lower() == "accept" for name in headers):
            fixed["Accept"] = "*/*"
        self._invalid_header = next((n for n, v in fixed.items() if _breaks_line(n) or _breaks_line(v)), None)
        self._head = "".join(f"{n}: {v}\r\n" for n, v in fixed.items()).encode("latin-1", "replace")
        self._keepalive = keepalive
        self._idle: list[_Connection] = []
        self._ssl: ssl.SSLContext | None = None
        self._targets: dict[tuple[str, str], bytes] = {}

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None, *,
                deadline: float | None = None, read_timeout: float | None = None,
                connect_timeout: float | None = None) -> Exchange:
        """Send ``method path`` (``path`` is under the base path and may carry a query).

        ``deadline`` (``time.monotonic()``) bounds the whole exchange; ``read_timeout`` each wait
        for more of the answer. Raises ``TimeoutError``, ``OSError`` (connect, TLS),
        :class:`ConnectionClosed` or :class:`MalformedResponse`."""
        return Exchange(self, (method, path, body, content_type, deadline, read_timeout, connect_timeout))

    def _request_head(self, method: str, path: str) -> bytes:
        key = (method, path)
        head = self._targets.get(key)
        if head is None:
            if len(self._targets) >= 256:  # paths can hold client-chosen names: stay bounded
                self._targets.clear()
            target = quote(self.base_path + path, safe=_PATH_SAFE)
            head = self._targets[key] = f"{method} {target} HTTP/1.1\r\n".encode("ascii") + self._head
        return head

    async def _open(self, method: str, path: str, body: bytes | None, content_type: str | None,
                    deadline: float | None, read_timeout: float | None,
                    connect_timeout: float | None) -> Response:
        if self._invalid_header is not None:
            raise MalformedResponse(f"The upstream header {self._invalid_header!r} holds a line break.")
        head = self._request_head(method, path)
        if body is not None:
            ctype = f"Content-Type: {content_type}\r\n" if content_type else ""
            message = b"%s%sContent-Length: %d\r\n\r\n%s" % (head, ctype.encode("latin-1"), len(body), body)
        else:
            message = head + b"\r\n"
        for attempt in (1, 2):
            conn = (self._pooled() if attempt == 1 else None) or await self._connect(deadline, connect_timeout)
            try:
                conn.send(message)
                while not conn.head_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait(_wait_limit(deadline, read_timeout))
                return Response(conn, deadline, read_timeout)
            except ConnectionClosed:
                conn.close()
                if conn.reused and not conn.got_bytes:
                    continue  # the server closed an idle connection as we sent: once more, on a new one
                raise
            except BaseException:
                conn.close()
                raise
        raise ConnectionClosed("The upstream closed the connection early.")  # pragma: no cover

    def _pooled(self) -> _Connection | None:
        now = time.monotonic()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > self._keepalive:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    async def _connect(self, deadline: float | None, connect_timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        timeout = connect_timeout
        if deadline is not None:
            left = max(deadline - time.monotonic(), 0.0)
            timeout = left if timeout is None else min(timeout, left)
        if self.secure and self._ssl is None:
            self._ssl = ssl.create_default_context()
        opening = loop.create_connection(lambda: _Connection(loop), self.host, self.port, ssl=self._ssl,
                                         server_hostname=self.host if self.secure else None)
        _, conn = await asyncio.wait_for(opening, timeout)
        return conn

    def _release(self, conn: _Connection) -> None:
        conn.busy = False
        if conn.reusable() and len(self._idle) < _MAX_IDLE:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _decompressor(coding: str) -> Any:
    """For a body the upstream compressed although it was not asked to (RFC 9110 lets it)."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj()
    raise MalformedResponse(f"The upstream sent a body in the {coding!r} encoding, which it was not asked for.")


def _breaks_line(text: str) -> bool:
    return "\r" in text or "\n" in text

