"""An SSE response that relays chunk by chunk and notices a client leaving at once.

Starlette's StreamingResponse (ASGI spec >= 2.4) only sees a disconnect when its next send
fails, so a silent upstream would be kept busy. Here a client that leaves cancels the relay at
once, which closes the upstream connection: on the model endpoints the disconnect watch
(``http/disconnect.py``) cancels the whole handler; anywhere else this response listens for
``http.disconnect`` itself, the whole time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TypeVar

import anyio
from starlette.types import Receive, Scope, Send

from switchyard.errors import GatewayError
from switchyard.http.disconnect import WATCHED
from switchyard.http.errors import error_event

__all__ = ["SSEResponse", "first_piece", "open_stream"]

T = TypeVar("T")

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


async def first_piece(chunks: AsyncIterator[T], empty: T) -> T:
    """The first piece of ``chunks`` (``empty`` when there is none), so that errors before any
    byte surface here as a normal HTTP error; ``chunks`` is closed when advancing it fails."""
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        return empty
    except BaseException:
        await chunks.aclose()  # type: ignore[attr-defined]
        raise


async def open_stream(chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> SSEResponse:
    """Advance to the first chunk, so errors before any byte become a normal HTTP error.
    ``headers``: added to the response's."""
    return SSEResponse(await first_piece(chunks, b""), chunks, headers)


class SSEResponse:
    def __init__(self, first: bytes, chunks: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self._first = first
        self._chunks = chunks
        self._headers = _HEADERS + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(WATCHED):  # the watch cancels this task when the client leaves: nothing to listen for
            try:
                await self._relay(send)
            except OSError:  # the client went away between our checks
                pass
            finally:
                with anyio.CancelScope(shield=True):
                    await self._chunks.aclose()  # type: ignore[attr-defined]
            return
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                try:
                    await self._relay(send)
                except OSError:  # the client went away between our checks
                    pass
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._chunks.aclose()  # type: ignore[attr-defined]

    async def _relay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        try:
            if self._first:
                await send({"type": "http.response.body", "body": self._first, "more_body": True})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except GatewayError as exc:
            await send({"type": "http.response.body", "body": error_event(exc), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
