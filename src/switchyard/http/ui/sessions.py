"""The per-address sign-in limit of the console (sessions themselves live in the database:
``service/console_sessions.py``). Kept in each process's memory, with an injected monotonic clock:
behind N workers or replicas an address gets up to N times ``per_minute`` attempts."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["SignInLimiter"]

MAX_ADDRESSES = 10_000


class SignInLimiter:
    """At most ``per_minute`` sign-in attempts per client address in any 60 seconds."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._attempts: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        now = self._clock()
        if len(self._attempts) > MAX_ADDRESSES:
            self._attempts = {a: q for a, q in self._attempts.items() if q and q[-1] > now - 60}
        window = self._attempts.setdefault(address, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        return True
