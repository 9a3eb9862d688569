"""API keys as the gateway sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

from switchyard.core.limits import Budget, RateLimits

__all__ = ["ApiKey", "DuplicateTeamError", "NewKey", "Principal", "Team"]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key. Only the HMAC of the secret and a display prefix are kept."""

    id: str
    name: str
    prefix: str
    key_hash: str
    created_at: datetime
    is_admin: bool = False
    active: bool = True
    allowed_models: tuple[str, ...] | None = None  # None: every model
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    use_count: int = 0
    revoked_at: datetime | None = None
    # Owners, limits and budget. model_limits: per model alias or fnmatch pattern.
    user_id: str | None = None
    team_id: str | None = None
    limits: RateLimits | None = None
    model_limits: dict[str, RateLimits] = field(default_factory=dict)
    budget: Budget | None = None


@dataclass(frozen=True, slots=True)
class Team:
    """A group of keys with limits and a budget of its own (both apply to each of its keys together)."""

    id: str
    name: str
    created_at: datetime
    updated_at: datetime
    limits: RateLimits | None = None
    budget: Budget | None = None


class DuplicateTeamError(Exception):
    """Another team already has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"A team named '{name}' already exists.")
        self.name = name


@dataclass(frozen=True, slots=True)
class NewKey:
    """The one moment a secret exists in clear: returned on create/rotate, never stored."""

    key: ApiKey
    secret: str


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an authenticated key (or the anonymous principal when auth is off)."""

    key_id: str | None
    name: str
    is_admin: bool
    allowed_models: tuple[str, ...] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    # What the gateway's limits and budgets need (filled by the KeyService; None/empty: none set).
    user_id: str | None = None
    team_id: str | None = None
    limits: RateLimits | None = None  # scope key:<id>
    model_limits: dict[str, RateLimits] = field(default_factory=dict)  # alias or pattern -> key:<id>|model:<alias>
    budget: Budget | None = None  # scope key:<id>
    team_limits: RateLimits | None = None  # scope team:<id>
    team_budget: Budget | None = None  # scope team:<id>

    @property
    def owner(self) -> str | None:
        """Whose requests these are, for what may be shared between them (a local model's prompt
        cache): the key's team, else its user, else the key (None: the anonymous principal)."""
        if self.team_id:
            return f"team:{self.team_id}"
        if self.user_id:
            return f"user:{self.user_id}"
        return f"key:{self.key_id}" if self.key_id else None

    def may_use(self, model: str) -> bool:
        if self.allowed_models is None:
            return True
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)
