"""A web console session as it is stored: never the cookie's id itself, only its digest, so a copy
of the table (a backup, a replica) cannot be replayed as a cookie; and never the key, only the
key's HMAC digest, checked again on every request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ConsoleSession", "session_digest"]


@dataclass(frozen=True)
class ConsoleSession:
    id_digest: str  # sha256 of the cookie's random id (256 bits: a plain hash cannot be reversed)
    key_digest: str | None  # the key's HMAC (None: signed in while auth was off)
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()
