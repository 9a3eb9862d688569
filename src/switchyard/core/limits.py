"""Rate limits and budgets: what is limited, and the Protocols of the engines that enforce them.

Scopes name what a counter belongs to: ``key:<id>``, ``key:<id>|model:<alias>``, ``model:<alias>``,
``team:<id>``. Engines (``limits/rates.py``, ``limits/budgets.py``) keep the counters in
process memory or in Redis (shared by every replica); both behave the same. An admission's
counters go back to the client as OpenAI's ``x-ratelimit-*`` headers (``ratelimit_headers``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Literal, Protocol

__all__ = [
    "Admission",
    "Budget",
    "BudgetCheck",
    "BudgetLedger",
    "LimitCheck",
    "LimitState",
    "Limiter",
    "RateLimits",
    "Reservation",
    "format_reset",
    "limits_to_json",
    "model_limits_to_json",
    "ratelimit_headers",
]

LimitKind = Literal["requests", "tokens", "parallel"]
BudgetPeriod = Literal["daily", "monthly", "total"]


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Limits of one owner (a key, a team, a model, or a key on one model). None: unlimited."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute
    rph: int | None = None  # requests per hour
    rpd: int | None = None  # requests per day
    max_parallel: int | None = None  # requests in flight at once

    def checks(self, scope: str) -> list[LimitCheck]:
        out = []
        for limit, kind, window in ((self.rpm, "requests", 60.0), (self.rph, "requests", 3600.0),
                                    (self.rpd, "requests", 86400.0), (self.tpm, "tokens", 60.0),
                                    (self.max_parallel, "parallel", 0.0)):
            if limit is not None:
                out.append(LimitCheck(scope, kind, limit, window))  # type: ignore[arg-type]
        return out


def limits_to_json(limits: RateLimits | None) -> dict[str, int] | None:
    """The JSON form of limits (the admin API's, and the stores' columns): the limits that are
    set; None when none is."""
    if limits is None:
        return None
    out = {f.name: getattr(limits, f.name) for f in fields(RateLimits) if getattr(limits, f.name) is not None}
    return out or None


def model_limits_to_json(model_limits: Mapping[str, RateLimits]) -> dict[str, dict[str, int]] | None:
    """Limits per model alias or pattern, in their JSON form; None when there are none."""
    out = {alias: js for alias, limits in model_limits.items() if (js := limits_to_json(limits)) is not None}
    return out or None


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending ceiling in USD over a period: daily and monthly reset in UTC; total never."""

    amount_usd: float
    period: BudgetPeriod = "monthly"


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One counter a request must fit in: ``limit`` per ``window`` seconds (0 for parallel)."""

    scope: str
    kind: LimitKind
    limit: int
    window: float


@dataclass(frozen=True, slots=True)
class LimitState:
    """Where one counter stands, for the x-ratelimit-* headers."""

    limit: int
    remaining: int
    reset_s: float  # seconds until the window has room again (requests) or is empty (tokens)


@dataclass(slots=True)
class Admission:
    """A request let through the limits: its lease (parallel slots, token windows to settle) and
    the tightest request and token counters, for the response headers."""

    lease: str
    checks: Sequence[LimitCheck] = ()
    requests: LimitState | None = None
    tokens: LimitState | None = None
    settled: bool = False


class Limiter(Protocol):
    async def admit(self, checks: Sequence[LimitCheck], lease: str, tokens: int) -> Admission:
        """All or nothing: the request (expecting ``tokens`` prompt tokens) fits every check,
        and is counted in each request window and holds a slot in each parallel check; or
        ``RateLimitError`` (429, Retry-After, x-ratelimit-* headers) and nothing is counted."""
        ...

    async def settle(self, admission: Admission, tokens: int) -> None:
        """The request ended: count its real tokens in the token windows, free its parallel
        slots. Idempotent."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget a request's cost counts against."""

    scope: str
    limit_usd: float
    period: BudgetPeriod


@dataclass(slots=True)
class Reservation:
    lease: str
    checks: Sequence[BudgetCheck] = ()
    amount_usd: float = 0.0
    done: bool = False
    remaining_usd: dict[str, float] = field(default_factory=dict)  # per scope, after this reservation


class BudgetLedger(Protocol):
    async def available(self, checks: Sequence[BudgetCheck]) -> float:
        """The smallest amount still unspent and unreserved among ``checks`` (USD)."""
        ...

    async def reserve(self, checks: Sequence[BudgetCheck], lease: str, amount_usd: float) -> Reservation:
        """All or nothing: hold ``amount_usd`` against every budget, or raise
        ``InsufficientQuotaError`` and hold nothing."""
        ...

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Replace the hold by what the request really cost. Idempotent."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold (the request failed before costing anything). Idempotent."""
        ...

    async def aclose(self) -> None: ...


def format_reset(seconds: float) -> str:
    """OpenAI's (Go's) duration format for x-ratelimit-reset-*, to the millisecond, never early:
    ``20ms``, ``1s``, ``12.5s``, ``6m0s``, ``1h0m0s``."""
    ms = max(0, math.ceil(round(seconds * 1000, 6)))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}" + (f".{rest % 1000:03d}".rstrip("0") if rest % 1000 else "")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def ratelimit_headers(
    requests: Admission | LimitState | None, tokens: LimitState | None = None
) -> dict[str, str]:
    """The x-ratelimit-{limit,remaining,reset}-{requests,tokens} headers of an admission (or of
    the request and token states), only those that apply."""
    if isinstance(requests, Admission):
        admission = requests
        requests, tokens = admission.requests, admission.tokens
    out: dict[str, str] = {}
    for name, state in (("requests", requests), ("tokens", tokens)):
        if state is not None:
            out[f"x-ratelimit-limit-{name}"] = str(state.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, state.remaining))
            out[f"x-ratelimit-reset-{name}"] = format_reset(state.reset_s)
    return out
