"""Token usage and the per-request usage record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["GROUP_BY", "Usage", "UsageRecord", "parse_group_by"]

GROUP_BY = ("hour", "day", "key", "model")
"""The dimensions usage can be grouped by (``/admin/usage``, ``switchyard usage``)."""
_TIME_DIMS = frozenset({"hour", "day"})


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


def parse_group_by(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"day"``, ``"key,model"``, ``("hour", "key")``: the dimensions, checked. ValueError otherwise."""
    parts = [p.strip() for p in value.split(",")] if isinstance(value, str) else [str(p).strip() for p in value]
    dims = tuple(p for p in parts if p)
    if not dims:
        raise ValueError(f"group_by is empty; use one or more of {', '.join(GROUP_BY)}")
    for dim in dims:
        if dim not in GROUP_BY:
            raise ValueError(f"unknown group_by {dim!r}; use one or more of {', '.join(GROUP_BY)}")
    if len(set(dims)) != len(dims):
        raise ValueError("group_by names a dimension twice")
    if len(_TIME_DIMS.intersection(dims)) > 1:
        raise ValueError("group_by takes hour or day, not both")
    return dims
