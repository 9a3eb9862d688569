"""The thin HTTP client shared by providers: one aiohttp session, exceptions mapped once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import yarl

from switchyard.errors import (
    GatewayError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeoutError,
)

__all__ = ["ErrorMapper", "UpstreamClient", "redact"]

_URL_CACHE = 256  # parsed URLs kept per client

ErrorMapper = Callable[[int, bytes, Mapping[str, str]], GatewayError]


def redact(message: str, secret: str | None) -> str:
    """Never let a credential through in an error message."""
    if secret and secret in message:
        message = message.replace(secret, "[redacted]")
    return message


class UpstreamClient:
    """One pooled aiohttp session per provider instance, created inside the running loop."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # Upstream cookies must never ride along on another client's request (and
                # skipping the jar is measurably cheaper per request).
                cookie_jar=aiohttp.DummyCookieJar(),
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def _url(self, path: str) -> yarl.URL:
        """Parsed once per path: building a URL from a string on every request is not free."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _URL_CACHE:  # paths can hold client-chosen model names: stay bounded
                self._urls.clear()
            url = self._urls[path] = yarl.URL(self.base_url + path)
        return url

    def _timeouts(self, timeout: float | None, stream: bool) -> aiohttp.ClientTimeout:
        t = timeout or self._timeout
        if stream:  # a stream may run long; what must not stall is each read
            return aiohttp.ClientTimeout(total=None, sock_connect=min(t, 30.0), sock_read=t)
        return aiohttp.ClientTimeout(total=t, sock_connect=min(t, 30.0))

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Open a response; connection and timeout failures become gateway errors."""
        data = orjson.dumps(json) if json is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with self._get_session().request(
                method,
                self._url(path),
                data=data,
                headers=headers,
                timeout=self._timeouts(timeout, stream),
            ) as resp:
                yield resp
        except GatewayError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeoutError("The upstream did not answer in time.") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamConnectionError("Could not connect to the upstream.") from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamError("The upstream closed the connection early.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"Upstream request failed: {type(exc).__name__}.") from exc

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
        if self._session is not None and not self._session.closed:
            await self._session.close()
