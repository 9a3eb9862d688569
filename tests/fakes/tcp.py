"""TCP fakes for stores that hang: a server that accepts connections and never answers, and a
proxy in front of a real server (PostgreSQL, Redis) that can be paused (it stops forwarding
bytes, both ways, on the connections it has and on new ones) and resumed (everything held back
is then delivered, in order).

Both run on 127.0.0.1 in a background thread with their own event loop; use them as context
managers or through ``start`` / ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

__all__ = ["PausableProxy", "SilentServer"]


class _LoopThread:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    def _call(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def start(self) -> Self:
        self._thread.start()

        async def listen() -> int:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    @property
    def connections(self) -> int:
        """Connections open now (``accepted``: all so far)."""
        return len(self._conns)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SilentServer(_LoopThread):
    """Accepts every connection, reads what it is sent, and never says a word."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass


class PausableProxy(_LoopThread):
    """Forwards 127.0.0.1:``port`` to ``target_port``; ``pause()`` stops the bytes, ``resume()``
    lets them through again."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        super().__init__()
        self._target = (target_host, target_port)
        self._open = asyncio.Event()
        self._open.set()

    def pause(self) -> None:
        self._call(self._open.clear)

    def resume(self) -> None:
        self._call(self._open.set)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()  # a connection made while paused is not even passed on
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, up_writer))
                group.create_task(self._pump(up_reader, writer))
        except* (ConnectionError, _Closed):
            pass
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while True:
            data = await src.read(65536)
            await self._open.wait()  # paused: hold what was read (and read no more) until resumed
            if not data:
                raise _Closed
            dst.write(data)
            await dst.drain()


class _Closed(Exception):
    """One side closed: the connection ends, both ways."""
