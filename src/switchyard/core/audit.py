"""The admin audit log's entry: who did what to which object, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["AuditEntry"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action. ``actor``: the admin key's id, ``"static"`` (a key from the settings),
    ``"cli"`` (the command line on the store) or ``"anonymous"`` (auth off)."""

    at: datetime
    actor: str
    action: str  # "key.create", "team.update", "credential.remove", ...
    object_type: str  # "api_key", "team", "credential", "model"
    object_id: str | None
    details: dict[str, Any] = field(default_factory=dict)
    client_ip: str | None = None
    request_id: str | None = None
    id: int | None = None  # set by the database
