"""Per-upstream cooldown (a circuit breaker), so a failing upstream is not hammered.

    closed ── `failures` failures within `window` s ──▶ cooling down (requests: 503, Retry-After)
       ▲                                                    │ `cooldown` s pass
       └──────────── the probe succeeds ◀── one probe ◀─────┘ (a failed probe cools down again)

Failures are what the upstream did wrong: no connection, a timeout, a 5xx, a stream cut short.
A client's bad request or the upstream's 429 are not. The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from switchyard.errors import ServiceUnavailableError

__all__ = ["CooldownPolicy", "Cooldowns"]


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    failures: int = 5  # 0 turns cooldowns off
    window: float = 30.0
    cooldown: float = 30.0


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0  # cooling down until this time
    probing: bool = False


class Cooldowns:
    def __init__(
        self,
        policies: dict[str, CooldownPolicy],
        on_change: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policies = policies
        self._on_change = on_change or (lambda upstream, cooling: None)
        self._clock = clock
        self._states: dict[str, _State] = {}

    def set_policies(self, policies: dict[str, CooldownPolicy]) -> None:
        """New policies (the routing changed); state of keys that remain is kept."""
        self._policies = policies
        for gone in set(self._states) - set(policies):
            del self._states[gone]

    def remaining(self, upstream: str) -> float:
        state = self._states.get(upstream)
        return max(0.0, state.until - self._clock()) if state is not None else 0.0

    def admit(self, upstream: str) -> bool:
        """Raise while cooling down. Returns True when this request is the probe."""
        state = self._states.get(upstream)
        if state is None or not state.until:
            return False
        left = state.until - self._clock()
        if left > 0 or state.probing:
            raise ServiceUnavailableError(
                f"The upstream '{upstream}' is cooling down after repeated failures.",
                code="upstream_cooldown", retry_after=max(1.0, left),
            )
        state.probing = True
        return True

    def record(self, upstream: str, ok: bool, probe: bool = False) -> None:
        policy = self._policies.get(upstream)
        if policy is None or policy.failures <= 0:
            return
        state = self._states.setdefault(upstream, _State())
        now = self._clock()
        if probe:
            state.probing = False
        if ok:
            if state.until:
                self._on_change(upstream, False)
            state.failures.clear()
            state.until = 0.0
            return
        if probe:
            state.until = now + policy.cooldown
            self._on_change(upstream, True)
            return
        state.failures.append(now)
        while state.failures and state.failures[0] < now - policy.window:
            state.failures.popleft()
        if len(state.failures) >= policy.failures and not state.until:
            state.until = now + policy.cooldown
            state.failures.clear()
            self._on_change(upstream, True)
