"""Teams in admin bodies: a name, limits and a budget."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from switchyard.core.keys import Team
from switchyard.core.limits import limits_to_json
from switchyard.protocol.admin.limits import BudgetSpec, RateLimitConfig, budget_json

__all__ = ["TeamSpec", "team_settings_json"]


class TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    limits: RateLimitConfig | None = None
    budget: BudgetSpec | None = None


def team_settings_json(team: Team) -> dict[str, Any]:
    """A team's settings as TeamSpec JSON (absent: not set)."""
    current = {"name": team.name, "limits": limits_to_json(team.limits), "budget": budget_json(team.budget)}
    return {k: v for k, v in current.items() if v is not None}
