"""The thin HTTP client shared by providers: one keep-alive pool per upstream, exceptions mapped once,
and every byte an upstream sends redacted (``core/redaction.py``) before any provider reads it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import orjson

from switchyard.core.chat import StreamPiece
from switchyard.core.redaction import SECRETS
from switchyard.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
)
from switchyard.providers._http1 import ConnectionClosed, Exchange, MalformedResponse, Origin, Response

__all__ = ["ErrorMapper", "Response", "StreamConverter", "UpstreamClient", "UpstreamResponse"]

ErrorMapper = Callable[[int, bytes, Mapping[str, str]], GatewayError]


class StreamConverter(Protocol):
    """What each provider's ``translate.StreamConverter`` is: the upstream's stream bytes in (reads
    split anywhere), OpenAI SSE pieces out."""

    @property
    def stop_reading(self) -> bool:
        """Nothing the upstream sends after this read can matter (otherwise the answer is read to
        its end, so its connection can be reused)."""

    def feed(self, data: bytes) -> StreamPiece | None:
        """The OpenAI events this read completes (None if none); raises on an upstream failure."""

    def finish(self) -> StreamPiece | None:
        """What the end of the stream adds; raises when the stream was cut short or failed."""


class UpstreamResponse:
    """An upstream's answer as providers read it: its body and stream with every known secret
    redacted, so that none can reach a client, a log, ``/admin/status`` or a usage row."""

    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        return SECRETS.redact_bytes(await self._resp.read())

    async def chunks(self) -> AsyncIterator[bytes]:
        redactor = SECRETS.stream()
        async for data in self._resp.chunks():
            if clean := redactor.feed(data):
                yield clean
        if rest := redactor.finish():
            yield rest


def _credentials(headers: Mapping[str, str]) -> list[str]:
    """The header values that carry a credential (a bearer token's token as well)."""
    values = [v for k, v in headers.items() if k.lower() in _CREDENTIAL_HEADERS]
    return values + [v[7:] for v in values if v[:7].lower() == "bearer "]


_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key"})


def _gateway_error(exc: BaseException) -> GatewayError | None:
    """The gateway's error for a failure of the upstream exchange (None: raise it as it is)."""
    if isinstance(exc, GatewayError):
        return None
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError("The upstream did not answer in time.")
    if isinstance(exc, ConnectionClosed):
        return UpstreamError("The upstream closed the connection early.")
    if isinstance(exc, MalformedResponse):
        return UpstreamError(SECRETS.redact(str(exc)))
    if isinstance(exc, OSError):  # refused, unreachable, unresolvable, TLS
        return UpstreamConnectionError("Could not connect to the upstream.")
    return None


class _Request:
    """``async with client.request(...) as resp``: the exchange, its failures (opening it, or in
    the block) raised as gateway errors; a class, as this is on every upstream call's path."""

    __slots__ = ("_exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def __aenter__(self) -> UpstreamResponse:
        try:
            return UpstreamResponse(await self._exchange.__aenter__())
        except Exception as exc:
            mapped = _gateway_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        await self._exchange.__aexit__(kind, exc, tb)
        if isinstance(exc, Exception) and (mapped := _gateway_error(exc)) is not None:
            raise mapped from exc


class UpstreamClient:
    """The requests of one provider instance to its upstream (``providers/_http1.py``)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        SECRETS.add(*_credentials(headers))  # redacted from whatever any upstream sends
        self.base_url = base_url.rstrip("/")
        self._origin = Origin(self.base_url, headers)
        self._timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> _Request:
        """Open a response (``async with``); connection and timeout failures become gateway errors.

        A whole call must end within ``timeout``; a stream may run long, but no wait for its
        next bytes may pass ``timeout``."""
        data = orjson.dumps(json) if json is not None else None
        t = timeout or self._timeout
        deadline = None if stream else time.monotonic() + t
        return _Request(self._origin.request(method, path, data, "application/json" if data is not None else None,
                                             deadline=deadline, read_timeout=t if stream else None,
                                             connect_timeout=min(t, 30.0)))

    async def stream(self, path: str, on_error: ErrorMapper, converter: StreamConverter, *, json: Any,
                     timeout: float | None) -> AsyncIterator[StreamPiece]:
        """POST a streaming request: the converter's pieces as reads complete them, then what
        its ``finish`` adds; an error status is raised as ``on_error`` maps it."""
        async with self.request("POST", path, json=json, timeout=timeout, stream=True) as resp:
            if resp.status >= 400:
                raise on_error(resp.status, await resp.read(), resp.headers)
            redactor = SECRETS.stream()  # what resp.chunks() does, inline: this loop runs once a read
            async for data in resp._resp.chunks():
                if clean := redactor.feed(data):
                    piece = converter.feed(clean)
                    if piece is not None:
                        yield piece
                    if converter.stop_reading:
                        break
            else:
                if (rest := redactor.finish()) and (piece := converter.feed(rest)) is not None:
                    yield piece
        last = converter.finish()
        if last is not None:
            yield last

    async def call(
        self, method: str, path: str, on_error: ErrorMapper, *, json: Any = None, timeout: float | None = None
    ) -> bytes:
        """A whole request: the body on success, the provider's mapped error otherwise."""
        async with self.request(method, path, json=json, timeout=timeout) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise on_error(resp.status, raw, resp.headers)
        return raw

    async def call_json(
        self, method: str, path: str, on_error: ErrorMapper, *, json: Any = None, timeout: float | None = None
    ) -> Any:
        raw = await self.call(method, path, on_error, json=json, timeout=timeout)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("The upstream sent a response that is not JSON.") from exc

    async def call_object(
        self, method: str, path: str, on_error: ErrorMapper, *, json: Any = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """A call whose answer must be a JSON object."""
        payload = await self.call_json(method, path, on_error, json=json, timeout=timeout)
        if not isinstance(payload, dict):
            raise UpstreamError("The upstream sent an unexpected response.")
        return payload

    async def aclose(self) -> None:
        self._origin.close()
