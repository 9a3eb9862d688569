"""A client that leaves stops the work, at every stage: pure ASGI, built once at the edge.

Once a model request's body has been read, the only message left for the app is
``http.disconnect``. This watcher then waits for it beside the handler and cancels the handler
when it comes, whatever the handler is waiting on: a concurrency slot, the upstream's first
byte, a whole non-streaming answer, a stream's next chunk (``http/sse.py`` relies on it, and
listens itself only where no watch is). Cancelling closes the upstream connection
(``providers/_http1.py`` never reuses a connection whose answer was not read to its end), and
the accounting records the request once, as 499. The app's own ``receive`` hears the same
disconnect.

It is on every model request's path. The listener (a task) starts between ``TICK`` and twice
that (10 to 20 ms) after the body is in, or at once when the app itself asks for the next
message: an answer quicker than that never pays for a task, and a client that leaves is noticed
at most 20 ms late (the server keeps the disconnect, so the listener hears it as soon as it
starts). One timer per app, armed only while some request is waiting, starts the listeners of
the requests whose body came in before its previous tick: a request costs two set operations,
not a timer of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MODEL_PATHS", "TICK", "WATCHED", "DisconnectWatch"]

WATCHED = "switchyard.disconnect_watch"  # in the scope of a request this watch cancels when its client leaves
MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                         "/v1/messages"})
_DISCONNECT: Message = {"type": "http.disconnect"}
TICK = 0.01  # the listeners of requests whose body came in before the previous tick start at the next one


class DisconnectWatch:
    def __init__(self, app: ASGIApp, paths: Collection[str] = MODEL_PATHS) -> None:
        self.app = app
        self.paths = paths
        self._young: set[_Watch] = set()  # bodies in since the last tick: their listeners start at the next but one
        self._old: set[_Watch] = set()  # bodies in before the last tick: their listeners start at the next
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        scope[WATCHED] = True
        watch = _Watch(self, scope, receive, send, task)  # the handler runs in this task: one task more, not two
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.cancelled or task.cancelling() > 1:
                raise  # the server is stopping, not the client leaving
            task.uncancel()
        finally:
            watch.close()
            self._young.discard(watch)
            self._old.discard(watch)

    def _waiting(self, watch: _Watch) -> None:
        """``watch``'s body is in: its listener starts at the tick after next (or when asked for)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or the app now runs in another loop (tests)
            self._loop, self._timer = loop, None
            self._young.clear()
            self._old.clear()
        self._young.add(watch)
        if self._timer is None:
            self._timer = loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        due, self._old, self._young = self._old, self._young, set()
        for watch in due:
            watch.listen_now()
        self._timer = self._loop.call_later(TICK, self._tick) if self._old and self._loop is not None else None


class _Watch:
    """One request's watch: the app's ``receive`` and ``send``, and the listener for the disconnect."""

    __slots__ = ("_listener", "_owner", "_receive", "_scope", "_send", "_task", "answered", "cancelled", "done",
                 "gone", "read")

    def __init__(self, owner: DisconnectWatch, scope: Scope, receive: Receive, send: Send,
                 task: asyncio.Task[object]) -> None:
        self._owner, self._scope, self._receive, self._send, self._task = owner, scope, receive, send, task
        self._listener: asyncio.Task[Message] | None = None
        self.read = False  # the body is in: from now on only a disconnect can come
        self.gone = False  # the client left (or the answer is complete)
        self.answered = False  # the last byte of the answer is on its way: a disconnect now is the end
        self.cancelled = False  # the handler, by the listener, because the client left
        self.done = False  # the handler has returned

    async def receive(self) -> Message:
        if self.read:
            return await asyncio.shield(self.listen_now())
        if self.gone:
            return _DISCONNECT
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        elif not message.get("more_body", False):
            self.read = True
            self._owner._waiting(self)
        return message

    def send(self, message: Message) -> Awaitable[None]:  # the server's send itself: no coroutine around it
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.answered = True  # before it is sent: the server reports a completed answer as a disconnect
        return self._send(message)

    def listen_now(self) -> asyncio.Task[Message]:
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        return self._listener

    async def _listen(self) -> Message:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if not self.answered and not self.done:
            self._scope.setdefault("state", {})["client_left"] = True
            self.cancelled = True
            self._task.cancel()
        return _DISCONNECT

    def close(self) -> None:
        self.done = True
        if self._listener is not None:
            self._listener.cancel()
