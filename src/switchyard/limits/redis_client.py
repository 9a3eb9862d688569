"""The Redis client the engines share: one per process, opened by the composition root.

Short socket timeouts (``limits_redis_timeout_ms``, 50 ms by default) for connecting and for
each answer, so that a Redis that is down, or hung (accepting connections and never answering),
is reported in ``timeout`` seconds and the engines fall back, instead of holding requests; the
engines also bound each call with a wait of their own. One immediate retry on a connection
error, for a pooled connection that went stale when Redis restarted (not on a timeout: a Redis
that does not answer is not asked twice). The pool never blocks: a request that finds every
connection busy opens another.
"""

from __future__ import annotations

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["open_redis"]


def open_redis(url: str, timeout: float = 0.5) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``); the caller closes it."""
    client: Redis = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                   retry=Retry(NoBackoff(), 1, supported_errors=(rx.ConnectionError,)))
    return client
