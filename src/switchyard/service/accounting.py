"""Usage records: queued on the request path, written in batches off it, flushed at shutdown."""

from __future__ import annotations

import asyncio
import logging

from switchyard.core.ports import UsageStore
from switchyard.core.usage import UsageRecord
from switchyard.service.background import stop_task

__all__ = ["UsageRecorder"]

log = logging.getLogger("switchyard.usage")
_MAX_BUFFER = 1_000_000  # rows held while the store is unreachable
_STOP_WAIT = 10.0  # seconds shutdown waits for a write in progress


class UsageRecorder:
    """``record`` is synchronous and never fails; a background task writes batches.

    A failed write keeps its rows for the next attempt, so an unreachable store delays usage
    but does not lose it (up to ``_MAX_BUFFER`` rows, after which the oldest are dropped
    with an error log).
    """

    def __init__(self, store: UsageStore, interval: float = 0.5, batch_size: int = 1000) -> None:
        self._store = store
        self._interval = interval
        self._batch_size = batch_size
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.written = 0

    def record(self, row: UsageRecord) -> None:
        self._pending.append(row)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="switchyard-usage-writer")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.warning("usage write failed; %d rows kept for retry", len(self._pending), exc_info=True)

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._store.write(batch)
            except BaseException:
                self._pending[:0] = batch
                if len(self._pending) > _MAX_BUFFER:
                    dropped = len(self._pending) - _MAX_BUFFER
                    del self._pending[:dropped]
                    log.error("usage buffer full: dropped %d oldest rows", dropped)
                raise
            self.written += len(batch)

    async def aclose(self, attempts: int = 5) -> None:
        # Let a write in progress finish rather than cancel it: a cancelled write may still commit
        # (the database works on in its own thread), and its rows would be written twice.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), _STOP_WAIT)
            except TimeoutError:
                await stop_task(self._task)  # a store that hangs: give up on that write
            self._task = None
        for attempt in range(attempts):
            try:
                await self.flush()
                return
            except Exception:
                log.warning("final usage flush failed (attempt %d/%d)", attempt + 1, attempts, exc_info=True)
                await asyncio.sleep(0.2 * (attempt + 1))
        log.error("usage flush gave up with %d rows unwritten", len(self._pending))
