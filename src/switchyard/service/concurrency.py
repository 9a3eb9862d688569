"""Backpressure as a named object: a per-target cap on in-flight requests."""

from __future__ import annotations

from switchyard.errors import RateLimitError

__all__ = ["ConcurrencyGate"]


class ConcurrencyGate:
    """Admits up to ``limit`` requests at once; the next gets 429 with Retry-After.

    Immediate rejection (rather than queueing) keeps latency bounded; the OpenAI SDKs retry
    429 with backoff by default, which gives clients a queue without the gateway holding one.
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self.in_flight = 0

    def acquire(self) -> None:
        if self.in_flight >= self.limit:
            raise RateLimitError(
                f"Too many concurrent requests for '{self.name}' (limit {self.limit}).", retry_after=1
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
