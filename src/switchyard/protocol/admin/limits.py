"""Limits and budgets in admin bodies: ``{rpm, tpm, rph, rpd, max_parallel}`` and ``{amount_usd, period}``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchyard.core.limits import Budget, RateLimits
from switchyard.errors import BadRequestError
from switchyard.settings import RateLimitConfig

__all__ = ["BudgetSpec", "RateLimitConfig", "budget_json", "model_limits", "rate_limits"]


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_usd: float = Field(ge=0, description="USD that may be spent per period.")
    period: Literal["daily", "monthly", "total"] = "monthly"

    @field_validator("amount_usd")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    def budget(self) -> Budget:
        return Budget(self.amount_usd, self.period)


def rate_limits(spec: RateLimitConfig | None) -> RateLimits | None:
    """None when no limit is set."""
    if spec is None:
        return None
    values = {k: v for k, v in spec.model_dump().items() if v is not None}
    return RateLimits(**values) if values else None


def model_limits(specs: Mapping[str, RateLimitConfig] | None) -> dict[str, RateLimits]:
    """Limits per model alias or pattern (an alias without limits is left out)."""
    out = {}
    for alias, cfg in (specs or {}).items():
        if not alias:
            raise BadRequestError("A model_limits entry needs a model alias or pattern.", param="model_limits")
        limits = rate_limits(cfg)
        if limits is not None:
            out[alias] = limits
    return out


def budget_json(budget: Budget | None) -> dict[str, Any] | None:
    return None if budget is None else {"amount_usd": budget.amount_usd, "period": budget.period}
