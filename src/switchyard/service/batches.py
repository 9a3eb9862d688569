"""Writes queued off the request path: ``add`` is synchronous and never fails; a background
task writes batches every ``interval`` seconds (sooner when ``batch_size`` are waiting).

A failed write keeps its items, in order, for the next attempt, so an unreachable store delays
them but does not lose them (up to ``max_buffer`` waiting, after which the oldest are dropped
with an error log). A store that hangs (accepts the write and never answers) holds up only the writer:
``add`` goes on queueing, and the write completes, in order, when the store answers. A write is
never cancelled nor timed out while the server runs, since a cancelled write may still commit
(the database works on in its own thread) and its items would be written twice. Shutdown lets a
write in progress finish (up to ``stop_wait`` seconds), then writes what is left, for at most
``stop_wait`` seconds more: a store still hung then loses what is unwritten, with an error log.
``pending`` says how many items wait; ``on_dropped`` is told how many were dropped, and ``on_tick`` how many wait every
``interval`` (metrics).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from switchyard.service.background import stop_task

__all__ = ["BatchWriter"]

T = TypeVar("T")
_STOP_WAIT = 10.0  # seconds shutdown waits for a write in progress


class BatchWriter(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[None]],
        *,
        what: str,
        log: logging.Logger,
        interval: float = 0.5,
        batch_size: int = 1000,
        max_buffer: int = 1_000_000,
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_tick: Callable[[int], None] | None = None,
        stop_wait: float = _STOP_WAIT,
    ) -> None:
        self._write = write
        self._what = what  # "usage rows", "audit entries": for the log lines
        self._log = log
        self._interval = interval
        self._batch_size = batch_size
        self._max_buffer = max_buffer
        self._pending: list[T] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # batches are written in the order their items were added
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0
        self.dropped = 0
        self._on_written = on_written  # told how many items each successful write took
        self._on_dropped = on_dropped
        self._on_tick = on_tick  # told how many items wait, every interval (metrics a scrape cannot ask)
        self._stop_wait = stop_wait

    def add(self, item: T) -> None:
        self._pending.append(item)
        if len(self._pending) >= self._batch_size:
            self._wake.set()
            if len(self._pending) > self._max_buffer:  # (a store that hangs: no write fails to drop them)
                self._drop(len(self._pending) - self._max_buffer + self._max_buffer // 100)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self, name: str) -> None:
        self._task = asyncio.create_task(self._loop(), name=name)

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._on_tick is not None:
                self._on_tick(len(self._pending))
            try:
                await self._write_next()  # one batch a wake: a drain here would write continuously
            except Exception:
                self._log.warning("write failed; %d %s kept for retry", len(self._pending), self._what,
                                  exc_info=True)

    async def flush(self) -> None:
        """Write everything pending, in batches (shutdown; tests)."""
        async with self._lock:
            while self._pending:
                await self._write_batch()

    async def _write_next(self) -> None:
        """The background task's write: what is pending now, up to ``batch_size``. Items added
        while it is written wait for the next interval (or for ``batch_size`` more), so a store
        under load gets a few large batches, not a stream of small ones."""
        async with self._lock:
            if self._pending:
                await self._write_batch()
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def _write_batch(self) -> None:
        batch = self._pending[: self._batch_size]
        del self._pending[: len(batch)]
        try:
            await self._write(batch)
        except BaseException:
            self._pending[:0] = batch
            if len(self._pending) > self._max_buffer:
                self._drop(len(self._pending) - self._max_buffer)
            raise
        self.written += len(batch)
        if self._on_written is not None:
            self._on_written(len(batch))

    def _drop(self, n: int) -> None:
        """Drop the ``n`` oldest waiting items (a hundredth more at a time when adding, so a
        full buffer is not shifted at every add)."""
        del self._pending[:n]
        self._log.error("buffer full: dropped the %d oldest %s", n, self._what)
        self.dropped += n
        if self._on_dropped is not None:
            self._on_dropped(n)

    async def aclose(self, attempts: int = 5) -> None:
        """Stop the task (after its write in progress) and write what is left, retrying a little;
        each stage waits at most ``stop_wait`` seconds on a store that hangs."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._stop_wait)
            except TimeoutError:
                await stop_task(self._task)  # a store that hangs: give up on that write
            self._task = None
        try:
            async with asyncio.timeout(self._stop_wait):
                for attempt in range(attempts):
                    try:
                        await self.flush()
                        return
                    except Exception:
                        self._log.warning("final flush failed (attempt %d/%d)", attempt + 1, attempts, exc_info=True)
                        await asyncio.sleep(0.2 * (attempt + 1))
        except TimeoutError:
            pass
        self._log.error("gave up with %d %s unwritten", len(self._pending), self._what)
