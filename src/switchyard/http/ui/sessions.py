"""Console sessions, kept in this process's memory: an opaque random id (the cookie) names the
digest of the key that signed in (never the key), a CSRF token and an expiry. And the per-address
sign-in limit. Both take an injected monotonic clock.

One process, one store: behind several workers or replicas, a session works only on the process
that made it (route ``/ui`` with sticky sessions, or sign in again); a restart signs everyone out.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Session", "SessionStore", "SignInLimiter"]

MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    id: str
    digest: str | None  # the key's HMAC (None: signed in while auth was off)
    csrf_token: str
    expires_at: float  # on the store's monotonic clock


class SessionStore:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def create(self, digest: str | None) -> Session:
        now = self._clock()
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            while len(self._sessions) >= MAX_SESSIONS:  # still full: the oldest goes
                del self._sessions[next(iter(self._sessions))]
        session = Session(secrets.token_urlsafe(32), digest, secrets.token_urlsafe(32), now + self.ttl)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None and session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def remaining(self, session: Session) -> float:
        return max(session.expires_at - self._clock(), 0.0)

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)


class SignInLimiter:
    """At most ``per_minute`` sign-in attempts per client address in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        now = self._clock()
        if len(self._attempts) > MAX_SESSIONS:
            self._attempts = {a: q for a, q in self._attempts.items() if q and q[-1] > now - 60}
        window = self._attempts.setdefault(address, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        return True
