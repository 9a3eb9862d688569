"""API keys in admin bodies: what a key's create and PATCH may set (its secret never)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.keys import ApiKey
from switchyard.core.limits import limits_to_json, model_limits_to_json
from switchyard.protocol.admin.limits import BudgetSpec, RateLimitConfig, budget_json

__all__ = ["CreateKey", "KeySettings", "key_settings_json"]


class KeySettings(BaseModel):
    """What PATCH may change (a key's secret and admin flag are not among it)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    models: list[str] | None = None
    expires_at: datetime | None = None
    user: str | None = Field(default=None, min_length=1, max_length=200)
    team: str | None = Field(default=None, min_length=1, max_length=200)
    limits: RateLimitConfig | None = None
    model_limits: dict[str, RateLimitConfig] | None = None
    budget: BudgetSpec | None = None


class CreateKey(KeySettings):
    admin: bool = False


def key_settings_json(key: ApiKey) -> dict[str, Any]:
    """A key's changeable settings as KeySettings JSON (absent: not set)."""
    current: dict[str, Any] = {
        "name": key.name,
        "models": list(key.allowed_models) if key.allowed_models is not None else None,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "user": key.user_id,
        "team": key.team_id,
        "limits": limits_to_json(key.limits),
        "model_limits": model_limits_to_json(key.model_limits),
        "budget": budget_json(key.budget),
    }
    return {k: v for k, v in current.items() if v is not None}
