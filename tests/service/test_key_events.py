"""Key changes over Redis pub/sub (the shared 127.0.0.1:6379), on the process's one client: the
subscribed listener outlives the client's short socket timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from switchyard.limits.redis_client import open_redis
from switchyard.service.key_events import KeyEvents

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_a_published_change_reaches_a_listener_that_has_waited_past_the_socket_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        listening, publishing = open_redis(REDIS_URL, timeout=0.2), open_redis(REDIS_URL)
        changed = asyncio.Event()

        async def refresh() -> None:
            changed.set()

        async def nothing() -> None:
            return None

        listener, publisher = KeyEvents(listening, refresh), KeyEvents(publishing, nothing)
        listener.start()
        try:
            await asyncio.wait_for(listener.subscribed.wait(), 5)
            await publisher.publish("key_one")
            await asyncio.wait_for(changed.wait(), 5)
            changed.clear()
            await asyncio.sleep(1.0)  # five socket timeouts with nothing to read
            await publisher.publish("key_two")
            await asyncio.wait_for(changed.wait(), 5)
            await listening.ping()  # the client still serves commands beside the subscription
        finally:
            await listener.aclose()
            await publisher.aclose()
            await listening.aclose()
            await publishing.aclose()

    with caplog.at_level(logging.WARNING, logger="switchyard.keys"):
        asyncio.run(main())
    assert not [r for r in caplog.records if "lost Redis" in r.getMessage()]
