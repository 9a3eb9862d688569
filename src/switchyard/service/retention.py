"""Keeps the raw usage table a capped ring: prunes by age and by rows, at start, every
``interval`` seconds, and as soon as a tenth of ``max_rows`` has been written since the last
prune (``note_written``, called by the usage writer). So under any load the table holds at most
``max_rows``, plus that tenth, plus the batch written while a prune runs.

Hourly rollups are never pruned (reports and budgets read them), so pruning loses no totals.
Every replica may run this; deletes are idempotent. The same ring keeps the stored Responses
API responses (``what="responses"``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Protocol

from switchyard.core.ports import UsageStore
from switchyard.service.background import stop_task
from switchyard.settings import Settings

__all__ = ["MIN_RAW_ROWS", "Prunable", "UsageRetention"]

log = logging.getLogger("switchyard.usage")

MIN_RAW_ROWS = 1000
"""The smallest ring allowed (also enforced by ``usage_raw_max_rows``)."""


class Prunable(Protocol):
    async def prune(self, max_rows: int, max_age: timedelta, now: datetime | None = None) -> int: ...


class UsageRetention:
    """``start()`` prunes once at once, then every ``interval`` seconds; ``aclose()`` stops it."""

    def __init__(self, store: Prunable, max_rows: int, max_age: timedelta, interval: float = 60.0,
                 what: str = "usage") -> None:
        if max_rows < MIN_RAW_ROWS:
            raise ValueError(f"max_rows must be at least {MIN_RAW_ROWS}")
        if max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        self._store = store
        self._what = what
        self.max_rows = max_rows
        self.max_age = max_age
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._since = 0  # rows written since the last prune began
        self._every = max(1, max_rows // 10)
        self.pruned = 0  # rows deleted since start
        self.runs = 0  # prunes completed

    @classmethod
    def from_settings(cls, store: UsageStore, settings: Settings, interval: float = 60.0) -> UsageRetention:
        return cls(store, max(MIN_RAW_ROWS, settings.usage_raw_max_rows),
                   timedelta(days=settings.usage_raw_max_age_days), interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"switchyard-{self._what}-retention")

    def note_written(self, rows: int) -> None:
        """The usage writer wrote ``rows`` raw rows: prune early once they add up to a tenth of the ring."""
        self._since += rows
        if self._since >= self._every:
            self._wake.set()

    async def run_once(self) -> int:
        """Prune now; the number of raw rows deleted."""
        self._since = 0
        deleted = await self._store.prune(self.max_rows, self.max_age)
        self.pruned += deleted
        self.runs += 1
        if deleted:
            log.debug("pruned %d %s rows (keeping %d rows, %s)", deleted, self._what, self.max_rows, self.max_age)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:
                log.warning("%s pruning failed; retrying in %.0f s", self._what, self._interval, exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
