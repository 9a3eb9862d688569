"""A client that leaves stops the work, at every stage: pure ASGI, built once at the edge.

Once a model request's body has been read, the only message left for the app is
``http.disconnect``. This watcher then waits for it beside the handler and cancels the handler
when it comes, whatever the handler is waiting on: a concurrency slot, the upstream's first
byte, a whole non-streaming answer, a stream's next chunk (``http/sse.py`` relies on it, and
listens itself only where no watch is). Cancelling closes the upstream connection
(``providers/_http1.py`` never reuses a connection whose answer was not read to its end), and
the accounting records the request once, as 499. The app's own ``receive`` hears the same
disconnect.

It is on every model request's path. The listener (a task) starts ``GRACE`` (20 ms) after the
body is in, or at once when the app itself asks for the next message: an answer quicker than
that never pays for a task, and a client that leaves is noticed at most 20 ms late (the server
keeps the disconnect, so the listener hears it as soon as it starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MODEL_PATHS", "WATCHED", "DisconnectWatch"]

WATCHED = "switchyard.disconnect_watch"  # in the scope of a request this watch cancels when its client leaves
MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                         "/v1/messages"})
_DISCONNECT: Message = {"type": "http.disconnect"}
GRACE = 0.02  # seconds after the body before the listener starts: a quicker answer never pays for it


class DisconnectWatch:
    def __init__(self, app: ASGIApp, paths: Collection[str] = MODEL_PATHS) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        scope[WATCHED] = True
        watch = _Watch(scope, receive, send, task)  # the handler runs in this task: one task more, not two
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.cancelled or task.cancelling() > 1:
                raise  # the server is stopping, not the client leaving
            task.uncancel()
        finally:
            watch.close()


class _Watch:
    """One request's watch: the app's ``receive`` and ``send``, and the listener for the disconnect."""

    __slots__ = ("_listener", "_receive", "_scope", "_send", "_task", "_timer", "answered", "cancelled", "done",
                 "gone", "read")

    def __init__(self, scope: Scope, receive: Receive, send: Send, task: asyncio.Task[object]) -> None:
        self._scope, self._receive, self._send, self._task = scope, receive, send, task
        self._listener: asyncio.Task[Message] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.read = False  # the body is in: from now on only a disconnect can come
        self.gone = False  # the client left (or the answer is complete)
        self.answered = False  # the last byte of the answer is on its way: a disconnect now is the end
        self.cancelled = False  # the handler, by the listener, because the client left
        self.done = False  # the handler has returned

    async def receive(self) -> Message:
        if self.read:
            return await asyncio.shield(self._listen_now())
        if self.gone:
            return _DISCONNECT
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        elif not message.get("more_body", False):
            self.read = True
            self._timer = asyncio.get_running_loop().call_later(GRACE, self._listen_now)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.answered = True  # before it is sent: the server reports a completed answer as a disconnect
        await self._send(message)

    def _listen_now(self) -> asyncio.Task[Message]:
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
        if self._timer is not None:
            self._timer.cancel()
        if self._listener is not None:
            self._listener.cancel()
