"""Key changes pushed to every replica through Redis pub/sub (with ``redis_url`` set).

A replica that revokes, rotates or changes a key publishes its id once the change is in the
database; every replica listening refreshes its key cache from the database at once. The
cache's one-second refresh stays as the backstop, so a lost message (Redis down) only delays a
revocation to that second. It uses the process's one Redis client (opened by ``app.py``): the
listener holds one of its pooled connections, subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from switchyard.service.background import stop_task

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["KeyEvents"]

log = logging.getLogger("switchyard.keys")
CHANNEL = "switchyard:key-changes"
_RECONNECT = 1.0
_WAIT = 5.0  # s: one wait for a message on the subscribed connection


class KeyEvents:
    """``redis``: the process's Redis client, shared with the limit engines and closed by its
    owner, not here."""

    def __init__(self, redis: Redis, on_change: Callable[[], Awaitable[None]]) -> None:
        self._redis = redis
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
            pubsub: Any = self._redis.pubsub(ignore_subscribe_messages=True)  # (redis types aclose loosely)
            try:
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                while True:  # (a wait of our own: the client's socket timeout is for commands, not for this)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_WAIT)
                    if message is not None and message.get("type") == "message":
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
