"""Backpressure as a named object: a cap on in-flight requests with a bounded, deadlined queue.

    request ─▶ in_flight < limit? ── yes ─▶ admitted
                    │ no
                    ▼
               waiting < max_queue? ── no ─▶ 429 rate_limit_exceeded (Retry-After)
                    │ yes
                    ▼
               FIFO wait ── a slot is handed over ─▶ admitted
                    └── queue_timeout passes ─▶ 503 (Retry-After)

Slots are handed from ``release`` straight to the oldest waiter, so waiters are served in order
and a newcomer can never overtake the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque

from switchyard.errors import RateLimitError, ServiceUnavailableError

__all__ = ["ConcurrencyGate"]


class ConcurrencyGate:
    def __init__(self, name: str, limit: int, max_queue: int = 0, queue_timeout: float = 30.0) -> None:
        self.name = name
        self.limit = limit
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise RateLimitError(
                f"Too many concurrent requests for '{self.name}' (limit {self.limit}, queue {self.max_queue}).",
                retry_after=1,
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await granted
        except TimeoutError:
            if granted.done() and not granted.cancelled():
                return  # the slot arrived as the deadline passed: it is ours
            raise ServiceUnavailableError(
                f"'{self.name}' is busy: no slot within {self.queue_timeout:g} s.", retry_after=1,
                code="queue_timeout",
            ) from None
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # we were handed a slot but are leaving: pass it on
            raise
        finally:
            if granted in self._waiters:
                self._waiters.remove(granted)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; in_flight is unchanged
                return
        self.in_flight -= 1
