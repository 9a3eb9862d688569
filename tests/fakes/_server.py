"""Shared mechanics of the fake upstreams: an aiohttp app on 127.0.0.1 served from a
background thread with its own event loop, request recording and disconnect counting."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Headers(dict[str, str]):
    """A plain ``dict`` of request headers with lower-cased keys and case-insensitive lookup."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for key, value in items:
            lk = key.lower()
            super().__setitem__(lk, f"{super().__getitem__(lk)}, {value}" if lk in self else value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any  # parsed JSON, or None when the body was empty / not JSON
    raw_body: bytes = b""
    time: float = field(default_factory=time.monotonic)

    def __getitem__(self, name: str) -> Any:  # rec["body"] works as well as rec.body
        return getattr(self, name)


class FakeServer:
    """Base class: subclasses implement :meth:`_routes`.

    Usable as ``with Fake() as up:`` or via :meth:`start` / :meth:`stop`.
    """

    shutdown_timeout = 0.25  # how long stop() lets in-flight responses run before cancelling them

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    # ----------------------------------------------------------------- lifecycle
    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def _middlewares(self) -> list[Any]:
        return [self._record_middleware]

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._stopping = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # after a stop(), come back on the same port so a saved base_url stays valid
            sock.bind(("127.0.0.1", self.port or 0))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            app = web.Application(middlewares=self._middlewares())
            app.on_response_prepare.append(self._on_prepare)
            self._routes(app)
            runner = web.AppRunner(
                app, handler_cancellation=True, shutdown_timeout=self.shutdown_timeout, access_log=None
            )
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runner = runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as exc:
                failure.append(exc)
                sock.close()
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = self._loop = None
            raise RuntimeError(f"{type(self).__name__} failed to start") from failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._stopping = True
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop)
            fut.result(timeout=self.shutdown_timeout + 10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- recording
    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request recorded yet")
            return self._requests[-1]

    @property
    def disconnects(self) -> int:
        """How many responses a client abandoned before they were complete."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnects(self, count: int = 1, timeout: float = 2.0) -> bool:
        """Block until :attr:`disconnects` reaches *count*; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._disconnects >= count, timeout)

    def reset(self) -> None:
        """Forget recorded requests and zero the disconnect counter."""
        with self._lock:
            self._requests.clear()
            self._disconnects = 0

    def _note_disconnect(self) -> None:
        if self._stopping:
            return
        with self._lock:
            self._disconnects += 1
            self._lock.notify_all()

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=Headers(request.headers.items()),
            body=body,
            raw_body=raw,
        )
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()
        return await handler(request)

    # ----------------------------------------------------------------- responses
    async def stream(
        self,
        request: web.Request,
        chunks: Iterable[bytes] | AsyncIterable[bytes],
        *,
        content_type: str,
        delay: float = 0.0,
        cut_after: int | None = None,
    ) -> web.StreamResponse:
        """Stream *chunks*, *delay* seconds apart.

        A client that goes away early (handler cancelled, or a write fails) is
        counted in :attr:`disconnects`.  ``cut_after=n`` writes *n* chunks and then
        drops the connection abruptly, like an upstream that crashed mid-stream.
        """
        resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            sent = 0
            async for chunk in _aiter(chunks):
                if cut_after is not None and sent >= cut_after:
                    break
                if sent and delay:
                    await asyncio.sleep(delay)
                await resp.write(chunk)
                sent += 1
            if cut_after is not None:
                await asyncio.sleep(0.05)  # let the written chunks reach the client first
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write_eof()
        except asyncio.CancelledError:
            self._note_disconnect()
            raise
        except ConnectionError:
            self._note_disconnect()
        return resp

    async def slow(self, seconds: float) -> None:
        """Sleep like a slow upstream; a client giving up meanwhile counts as a disconnect."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self._note_disconnect()
            raise

    def _extra_headers(self) -> dict[str, str]:
        """Headers added to every response (hook for subclasses)."""
        return {}

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        for key, value in self._extra_headers().items():
            response.headers.setdefault(key, value)


async def _aiter(chunks: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
