"""Token usage and the per-request usage record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["GROUP_BY", "SESSION_ID_MAX", "Usage", "UsageRecord", "parse_group_by", "session_id"]

GROUP_BY = ("hour", "day", "key", "team", "model", "session")
"""The dimensions usage can be grouped by (``/admin/usage``, ``switchyard usage``)."""
_TIME_DIMS = frozenset({"hour", "day"})
SESSION_ID_MAX = 128
"""The longest agent session id kept on a usage row (longer ones are cut)."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one request used.

    ``prompt_tokens`` is every input token, cached or not (OpenAI's meaning; Anthropic's
    ``input_tokens`` is only the uncached part). ``cache_read_tokens`` (read from the provider's
    prompt cache: OpenAI's ``cached_tokens``, Anthropic's ``cache_read_input_tokens``) and
    ``cache_write_tokens`` (written to it: Anthropic's ``cache_creation_input_tokens``) are
    parts of ``prompt_tokens``, priced at their own rates.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        """Input tokens neither read from nor written to a prompt cache (never below 0)."""
        return max(0, self.prompt_tokens - self.cache_read_tokens - self.cache_write_tokens)


@dataclass(slots=True)
class UsageRecord:
    """One row per request, written in batches off the request path. Not changed once made
    (not ``frozen``: a frozen dataclass sets each of its 17 fields through ``object.__setattr__``,
    and one is made on every request)."""

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
    cache_read_tokens: int = 0  # parts of prompt_tokens (see Usage)
    cache_write_tokens: int = 0
    session_id: str | None = None  # the agent session (Claude Code's, Codex's) it belongs to
    team_id: str | None = None  # the key's team when the request was made


def session_id(value: str | None) -> str | None:
    """A client's session header as a usage row keeps it: visible ASCII only, at most
    ``SESSION_ID_MAX`` characters; None when nothing is left."""
    if not value:
        return None
    kept = "".join(c for c in value[:SESSION_ID_MAX] if "!" <= c <= "~")
    return kept or None


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
