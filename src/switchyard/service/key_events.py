"""Key changes pushed to every replica through Redis pub/sub (with ``redis_url`` set).

A replica that revokes, rotates or changes a key publishes its id once the change is in the
database; every replica listening refreshes its key cache from the database at once. The
cache's one-second refresh stays as the backstop, so a lost message (Redis down) only delays a
revocation to that second. Redis is imported only when this is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from switchyard.service.background import stop_task

__all__ = ["KeyEvents"]

log = logging.getLogger("switchyard.keys")
CHANNEL = "switchyard:key-changes"
_RECONNECT = 1.0


class KeyEvents:
    def __init__(self, url: str, on_change: Callable[[], Awaitable[None]], *, timeout: float = 0.5) -> None:
        from redis.asyncio import Redis

        self._redis: Any = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._listener: Any = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=None)
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()  # for tests and /ready: the listener is live

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="switchyard-key-events")

    async def publish(self, key_id: str) -> None:
        """Tell the other replicas; never fails the change that was already made."""
        try:
            await self._redis.publish(CHANNEL, key_id)
        except Exception as exc:  # Redis down: the one-second refresh still gets there
            log.warning("key change not published (%s); other replicas see it within a second", type(exc).__name__)

    async def _listen(self) -> None:
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        try:
                            await self._on_change()
                        except Exception:
                            log.warning("key cache refresh after a key change failed", exc_info=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("key change listener lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(_RECONNECT)
            finally:
                await pubsub.aclose()

    async def aclose(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self._redis.aclose()
        await self._listener.aclose()
