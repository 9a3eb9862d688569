"""Token usage and the per-request usage record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Usage", "UsageRecord"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One row per request, written in batches off the request path."""

    created_at: datetime
    request_id: str
    key_id: str | None
    model: str
    provider: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    streamed: bool
    estimated: bool
    cost_usd: float = 0.0  # at the serving model's prices
