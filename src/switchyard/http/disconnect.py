"""A client that leaves stops the work, at every stage: pure ASGI, built once at the edge.

Once a model request's body has been read, the only message left for the app is
``http.disconnect``. This watcher waits for it beside the handler and cancels the handler when
it comes, whatever the handler is waiting on: a concurrency slot, the upstream's first byte, a
whole non-streaming answer. Cancelling closes the upstream connection (``providers/_http1.py``
never reuses a connection whose answer was not read to its end), and the accounting records
the request once, as 499. A stream that has started also notices on its own (``http/sse.py``):
the app's ``receive`` hears the same disconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MODEL_PATHS", "DisconnectWatch"]

MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                         "/v1/messages"})
_DISCONNECT: Message = {"type": "http.disconnect"}


class DisconnectWatch:
    def __init__(self, app: ASGIApp, paths: Collection[str] = MODEL_PATHS) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        read = asyncio.Event()  # the body is in: from now on only a disconnect can come
        gone = asyncio.Event()

        async def app_receive() -> Message:
            if read.is_set():
                await gone.wait()
                return _DISCONNECT
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
            elif not message.get("more_body", False):
                read.set()
            return message

        answered = False  # the last byte of the answer is on its way: a disconnect now is the end

        async def app_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True  # before it is sent: the server reports a completed answer as a disconnect
            await send(message)

        task = asyncio.current_task()
        assert task is not None
        cancelled = False  # by the watcher, because the client left

        async def watch() -> None:
            nonlocal cancelled
            await read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if not answered and not done:
                scope.setdefault("state", {})["client_left"] = True
                cancelled = True
                task.cancel()

        done = False
        watcher = asyncio.ensure_future(watch())  # the handler runs in this task: one task more, not two
        try:
            await self.app(scope, app_receive, app_send)
        except asyncio.CancelledError:
            if not cancelled or task.cancelling() > 1:
                raise  # the server is stopping, not the client leaving
            task.uncancel()
        finally:
            done = True
            watcher.cancel()
