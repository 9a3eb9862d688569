"""API keys as the gateway sees them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

__all__ = ["ApiKey", "NewKey", "Principal"]


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

    def may_use(self, model: str) -> bool:
        if self.allowed_models is None:
            return True
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)
