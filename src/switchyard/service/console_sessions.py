"""Web console sessions, kept in the database so that every worker and replica knows them: a
cookie made by one process works on the others, and signing out on any of them ends it on all.

The browser holds an opaque random id (256 bits); the store holds its sha256, the signed-in key's
HMAC digest (never the key), the CSRF token and a fixed expiry. Nothing is cached in the process:
each request made with the cookie reads its row (one primary-key lookup), so a session dropped
anywhere fails everywhere at once. ``last_seen_at`` is written at most once per ``SEEN_EVERY``.

Sign-in attempts are counted per client address in the gateway's rate limiter (``sign-in:<address>``),
the same engine as the keys' limits: shared by every replica through Redis and by every worker
through the limits host, so ``per_minute`` holds for the whole deployment, not per process.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from switchyard.core.console import ConsoleSession, session_digest
from switchyard.core.limits import LimitCheck, Limiter
from switchyard.core.ports import ConsoleSessionStore

__all__ = ["SEEN_EVERY", "ConsoleSessions", "NewSession"]

SEEN_EVERY = timedelta(seconds=60)
_ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): anything else is no session


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewSession:
    id: str  # for the cookie only: never stored
    session: ConsoleSession


class ConsoleSessions:
    def __init__(self, store: ConsoleSessionStore, ttl: float, limiter: Limiter, sign_ins_per_minute: int,
                 clock: Callable[[], datetime] = _now) -> None:
        self.ttl = ttl
        self._store = store
        self._limiter = limiter
        self._sign_ins_per_minute = sign_ins_per_minute
        self._clock = clock

    async def count_sign_in(self, address: str) -> None:
        """Count one sign-in attempt from ``address``; ``RateLimitError`` (429, Retry-After) past
        the limit, when nothing is counted."""
        check = LimitCheck(f"sign-in:{address}", "requests", self._sign_ins_per_minute, 60.0)
        admission = await self._limiter.admit([check], f"sign-in-{secrets.token_hex(8)}", 0)
        await self._limiter.settle(admission, 0)  # a request window only: nothing is held

    async def create(self, key_digest: str | None) -> NewSession:
        now = self._clock()
        await self._store.prune(now)  # sign-ins are rare: the expired rows go then
        session_id = secrets.token_urlsafe(32)
        session = ConsoleSession(id_digest=session_digest(session_id), key_digest=key_digest,
                                 csrf_token=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
                                 expires_at=now + timedelta(seconds=self.ttl))
        await self._store.add(session)
        return NewSession(session_id, session)

    async def get(self, session_id: str) -> ConsoleSession | None:
        """The live session the cookie names, or None (unknown, signed out or expired)."""
        if not _ID_SHAPE.fullmatch(session_id):  # (no database read for a cookie that cannot be one)
            return None
        digest = session_digest(session_id)
        session = await self._store.get(digest)
        if session is None:
            return None
        now = self._clock()
        if session.expires_at <= now:
            await self._store.delete(digest)
            return None
        if now - session.last_seen_at >= SEEN_EVERY:
            await self._store.seen(digest, now)
        return session

    def remaining(self, session: ConsoleSession) -> float:
        return max((session.expires_at - self._clock()).total_seconds(), 0.0)

    async def drop(self, session_id: str) -> None:
        if _ID_SHAPE.fullmatch(session_id):
            await self._store.delete(session_digest(session_id))
