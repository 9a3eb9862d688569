"""Per-deployment cooldown (a circuit breaker), so a failing upstream is not hammered while
there is somewhere else to go, and never so that a route has nothing left to serve it.

    closed ── `failures` failures within `window` s ──▶ open: skipped while another deployment can serve
       ▲                                                 │ `cooldown` s pass
       ├──────── a success ◀── half-open: one live request probes it (a failed probe opens it again)
       │
       └──────── a success ◀── panic: every deployment the request may use is open, so it goes to the
                               one that failed longest ago anyway (as Envoy's panic threshold)

Failures are what the upstream did wrong: no connection, a timeout, a 5xx, a stream cut short.
A client's bad request or the upstream's 429 are not. Any success closes the breaker at once,
so once an upstream is back its next request succeeds. The clock is injected for tests.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from switchyard.errors import ServiceUnavailableError

__all__ = ["COOLDOWN_CODE", "CooldownPolicy", "Cooldowns"]

COOLDOWN_CODE = "upstream_cooldown"  # the error a deployment that is cooling down is skipped with


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    failures: int = 5  # 0 turns cooldowns off
    window: float = 30.0
    cooldown: float = 30.0


@dataclass(slots=True)
class _State:
    failures: deque[float] = field(default_factory=deque)
    until: float = 0.0  # cooling down until this time (0: closed)
    probing: bool = False
    last_failure: float = 0.0
    panic: bool = False  # serving while open, as nothing else can


class Cooldowns:
    def __init__(
        self,
        policies: dict[str, CooldownPolicy],
        on_change: Callable[[str, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_panic: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._policies = policies
        self._on_change = on_change or (lambda upstream, cooling: None)
        self._on_panic = on_panic or (lambda upstream, panic: None)
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

    def last_failure(self, upstream: str) -> float:
        """When it last failed (on the injected clock; 0.0: never)."""
        state = self._states.get(upstream)
        return state.last_failure if state is not None else 0.0

    def state(self, upstream: str) -> str:
        """closed, open (cooling down), half_open (the next request probes it) or panic."""
        state = self._states.get(upstream)
        if state is None or not state.until:
            return "closed"
        if state.panic:
            return "panic"
        return "open" if state.until > self._clock() or state.probing else "half_open"

    def report(self) -> dict[str, dict[str, object]]:
        """Each breaker that is not closed: its state and the seconds of cooldown left."""
        return {key: {"state": self.state(key), "cooldown_s": round(self.remaining(key), 1)}
                for key, state in self._states.items() if state.until}

    def admit(self, upstream: str) -> bool:
        """Raise while cooling down. Returns True when this request is the probe."""
        state = self._states.get(upstream)
        if state is None or not state.until:
            return False
        left = state.until - self._clock()
        if left > 0 or state.probing:
            raise ServiceUnavailableError(
                f"The upstream '{upstream}' is cooling down after repeated failures.",
                code=COOLDOWN_CODE, retry_after=max(1.0, left),
            )
        state.probing = True
        return True

    def panic(self, upstream: str) -> None:
        """A request goes to it although it is cooling down: nothing else the request may use can serve."""
        state = self._states.get(upstream)
        if state is not None and state.until and not state.panic:
            state.panic = True
            self._on_panic(upstream, True)

    def record(self, upstream: str, ok: bool, probe: bool = False, panic: bool = False) -> None:
        policy = self._policies.get(upstream)
        if policy is None or policy.failures <= 0:
            return
        state = self._states.get(upstream)
        if ok:  # on every request's path: a success on a breaker that never failed changes nothing
            if state is not None:
                if probe:
                    state.probing = False
                self._close(upstream, state)
            return
        if state is None:
            state = self._states[upstream] = _State()
        now = self._clock()
        if probe:
            state.probing = False
        state.last_failure = now
        if state.until and (probe or panic):  # still failing: cool down again, from now
            state.until = now + policy.cooldown
            if probe and not state.panic:
                self._on_change(upstream, True)
            return
        state.failures.append(now)
        while state.failures and state.failures[0] < now - policy.window:
            state.failures.popleft()
        if len(state.failures) >= policy.failures and not state.until:
            state.until = now + policy.cooldown
            state.failures.clear()
            self._on_change(upstream, True)

    def _close(self, upstream: str, state: _State) -> None:
        state.failures.clear()
        if state.panic:
            state.panic = False
            self._on_panic(upstream, False)
        if state.until:
            state.until = 0.0
            self._on_change(upstream, False)
