"""Background tasks the services run (cache refresh, usage writer), stopped the same way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["every", "stop_task"]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def every(seconds: float, job: Callable[[], Awaitable[object]], *, name: str, log: logging.Logger,
          failed: str) -> asyncio.Task[None]:
    """A task that runs ``job`` every ``seconds`` until cancelled; a failure is logged as
    ``failed`` and the next round tries again."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                log.warning(failed, exc_info=True)

    return asyncio.create_task(loop(), name=name)
