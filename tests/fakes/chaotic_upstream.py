"""A fake OpenAI upstream (chat completions and embeddings) that misbehaves as each request asks.

It is :class:`FakeOpenAI` with one more knob. A request carries ``chaos:<id>:<fault>`` in its
last message (chat) or first input (embeddings); the chaos soak (``tests/e2e/chaos.py``) draws
the faults from a seeded random generator, so a run can be replayed. Faults:

``none``         a normal answer
``refuse``       the listener closes for :attr:`refuse_window` seconds (new connections are
                 refused, ECONNREFUSED) and this request's connection is dropped unanswered
``reset``        the connection is dropped before a byte of the answer
``hang``         the request is read and never answered
``slow``         the first byte comes after :attr:`slow_first_byte` seconds, then a normal answer
``cut``          a stream is dropped after 3 chunks; a whole answer after half its body
``stall``        a stream sends 3 chunks, then nothing ever again
``trickle``      a normal stream whose chunks come :attr:`trickle_delay` seconds apart
``error-500``    OpenAI's 500 error body
``error-429``    OpenAI's 429 error body, with ``Retry-After``
``echo-json``    a 500 with an OpenAI JSON error quoting the credential and every header received
``echo-stream``  a stream: one chunk, then an in-band error event quoting them, written in two
                 parts cut inside the credential (a whole answer: as ``echo-json``)
``echo-text``    a plain-text 500 quoting them

:attr:`faults` counts the faults carried out by kind (and ``wrong-credential``: a request that
came without one of :attr:`credentials`), :attr:`seen` holds the ids of the requests that
arrived (and when), and :attr:`disconnects` counts the answers the gateway abandoned.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any, Self

from aiohttp import web

from .openai_upstream import ERRORS, SSE, FakeOpenAI, error_response

__all__ = ["FAULTS", "STREAM_ONLY", "ChaoticOpenAI", "marker"]

FAULTS = ("none", "refuse", "reset", "hang", "slow", "cut", "stall", "trickle", "error-500", "error-429",
          "echo-json", "echo-stream", "echo-text")
STREAM_ONLY = frozenset({"stall", "trickle", "echo-stream"})
_MARK = re.compile(r"chaos:([A-Za-z0-9._-]+):([a-z0-9-]+)")
_FAULT: contextvars.ContextVar[str] = contextvars.ContextVar("chaos_fault", default="none")


def marker(request_id: str, fault: str) -> str:
    """The text that asks this upstream for ``fault`` on the request ``request_id``."""
    return f"chaos:{request_id}:{fault}"


class ChaoticOpenAI(FakeOpenAI):
    def __init__(self, *, credentials: Collection[str] = (), refuse_window: float = 0.1,
                 slow_first_byte: float = 1.0, trickle_delay: float = 0.1) -> None:
        super().__init__()
        self.credentials = frozenset(credentials)  # empty: any (or no) credential is accepted
        self.refuse_window = refuse_window
        self.slow_first_byte = slow_first_byte
        self.trickle_delay = trickle_delay
        self.faults: Counter[str] = Counter()
        self.seen: dict[str, float] = {}  # request id -> time.monotonic() when it first arrived
        self._listener: socket.socket | None = None
        self._handing: set[asyncio.Future[Any]] = set()

    def _middlewares(self) -> list[Any]:
        return [self._credential_check]  # nothing recorded: a soak sends many thousands of requests

    def has_seen(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self.seen

    @web.middleware
    async def _credential_check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if self.credentials and auth.removeprefix("Bearer ") not in self.credentials:
            with self._lock:
                self.faults["wrong-credential"] += 1
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        return await handler(request)

    # ------------------------------------------------------------------ the knob
    async def _fault(self, request: web.Request) -> str:
        try:
            body = await request.json()
        except ValueError:
            return "none"
        found = _MARK.search(json.dumps(body.get("messages") or body.get("input") or ""))
        if found is None:
            return "none"
        request_id, fault = found.groups()
        with self._lock:
            self.seen.setdefault(request_id, time.monotonic())
            self.faults[fault] += 1
        _FAULT.set(fault)  # for stream(), which this request's task calls
        return fault

    async def _misbehave(self, request: web.Request, fault: str, stream: bool) -> web.StreamResponse | None:
        """The answer a fault gives before any normal answer begins, or None to answer normally."""
        if fault == "refuse":
            await self._refuse()
            return self._drop(request)
        if fault == "reset":
            return self._drop(request)
        if fault == "hang":
            await self.slow(3600.0)
        if fault == "slow":
            await self.slow(self.slow_first_byte)
        if fault in ("error-500", "error-429"):
            status, err, headers = ERRORS[fault]
            return web.json_response({"error": err}, status=status, headers=headers)
        if fault == "echo-text":
            return web.Response(status=500, text=f"Internal Server Error: {_echo(request)}", content_type="text/plain")
        if fault == "echo-json" or (fault == "echo-stream" and not stream):
            return web.json_response({"error": {"message": _echo(request), "type": "server_error", "param": None,
                                                "code": None}}, status=500)
        if fault == "echo-stream":
            return await self._echo_stream(request)
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        body = await request.json()
        answer = await self._misbehave(request, fault, body.get("stream") is True)
        if answer is not None:
            return answer
        if fault == "cut" and body.get("stream") is not True:
            return await self._cut_whole(request, await super()._chat(request))
        return await super()._chat(request)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        answer = await self._misbehave(request, fault, stream=False)
        if answer is not None:
            return answer
        if fault == "cut":
            return await self._cut_whole(request, await super()._embeddings(request))
        return await super()._embeddings(request)

    async def stream(self, request: web.Request, chunks: Iterable[bytes] | Any, *, content_type: str,
                     delay: float = 0.0, cut_after: int | None = None) -> web.StreamResponse:
        fault = _FAULT.get()
        if fault == "trickle":
            delay = self.trickle_delay
        elif fault == "cut":
            cut_after = 3
        elif fault == "stall":
            chunks = self._stalled(chunks, 3)
        return await super().stream(request, chunks, content_type=content_type, delay=delay, cut_after=cut_after)

    # ------------------------------------------------------------ the misdeeds
    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never sent: the connection is gone

    # The listener is our own socket, read by a callback of the loop, so that it can close and open
    # again at once: an aiohttp site stopped while a connection is being accepted leaks that socket.
    def start(self) -> Self:
        super().start()
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._take_over_listening(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._stopping = True
            asyncio.run_coroutine_threadsafe(self._stop_listening(), self._loop).result(10)
        super().stop()

    async def _take_over_listening(self) -> None:
        assert self._runner is not None
        for site in list(self._runner.sites):
            await site.stop()
        self._listen()

    def _listen(self) -> None:
        for _ in range(100):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self.port or 0))
            except OSError:  # the port is still held: try again in a moment
                sock.close()
                time.sleep(0.01)
                continue
            sock.listen(128)
            sock.setblocking(False)
            self._listener = sock
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)
            return
        raise RuntimeError(f"could not listen on port {self.port} again")

    def _accept(self, sock: socket.socket) -> None:
        assert self._runner is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._handing.add(asyncio.ensure_future(loop.connect_accepted_socket(self._runner.server, conn)))
            for task in [t for t in self._handing if t.done()]:
                self._handing.discard(task)

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            asyncio.get_running_loop().remove_reader(listener.fileno())
            listener.close()
        if self._handing:  # connections being handed to aiohttp: let them arrive, to be closed by it
            await asyncio.wait(self._handing, timeout=1)

    async def _refuse(self) -> None:
        """Close the listening socket for :attr:`refuse_window` seconds: connects are refused meanwhile."""
        if self._listener is None:
            return
        await self._stop_listening()

        def again() -> None:
            if not self._stopping and self._listener is None:
                self._listen()

        asyncio.get_running_loop().call_later(self.refuse_window, again)

    async def _cut_whole(self, request: web.Request, whole: web.StreamResponse) -> web.StreamResponse:
        """Send the status, the headers and half of ``whole``'s body, then drop the connection."""
        body = whole.body if isinstance(whole, web.Response) and isinstance(whole.body, bytes) else b"{}"
        resp = web.StreamResponse(status=whole.status, headers={"Content-Type": "application/json",
                                                                "Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        await asyncio.sleep(0.05)  # the half reaches the gateway first
        return self._drop(request)

    async def _echo_stream(self, request: web.Request) -> web.StreamResponse:
        chunk = {"id": "chatcmpl-chaos", "object": "chat.completion.chunk", "created": 1, "model": "chaos",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]}
        error = {"error": {"message": _echo(request), "type": "server_error", "param": None, "code": None}}
        frame = f"data: {json.dumps(error)}\n\n".encode()
        # the error event in two writes, cut inside the credential: the gateway reads it in halves
        credential = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        cut = frame.find(credential) + len(credential) // 2 if credential and credential in frame else len(frame) // 2
        frames = [f"data: {json.dumps(chunk)}\n\n".encode(), frame[:cut], frame[cut:]]
        return await self.stream(request, _spaced(frames, 0.05), content_type=SSE)

    async def _stalled(self, chunks: Iterable[bytes] | Any, after: int) -> AsyncIterator[bytes]:
        sent = 0
        if isinstance(chunks, Iterable):
            chunks = _as_async(chunks)
        async for chunk in chunks:
            if sent == after:
                await self.slow(3600.0)
            yield chunk
            sent += 1


def _echo(request: web.Request) -> str:
    credential = request.headers.get("Authorization", "none")
    headers = json.dumps(dict(request.headers.items()))
    return f"Upstream trouble. The key you sent was '{credential}'. Your headers: {headers}"


async def _as_async(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _spaced(frames: list[bytes], delay: float) -> AsyncIterator[bytes]:
    for i, frame in enumerate(frames):
        if i:
            await asyncio.sleep(delay)  # each frame its own read: the error comes after the stream began
        yield frame
