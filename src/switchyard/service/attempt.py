"""One try on one deployment: its cooldown, its concurrency gate, and the verdict on how it went.

    cooldown.admit ─▶ gate.acquire ─▶ in flight ─▶ the upstream call ─▶ classify ─▶ release
    (503 while cooling  (429 queue full,              (first piece timed)   (the one place a failed
     down, or the probe; 503 queue timeout)                                   attempt is judged)
     not asked in panic)

The verdict is given in ``Attempt.__aexit__`` and nowhere else: its status, whether it counts
as an upstream error, and what it tells the deployment's cooldown. Whether the request then
moves on to the next deployment is the failover plan's call (``service/failover.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from switchyard.core.models import Target
from switchyard.errors import GatewayError, ServiceUnavailableError, UpstreamError
from switchyard.observability.metrics import Metrics
from switchyard.service.call import CLIENT_CLOSED, CallContext, Outcome
from switchyard.service.concurrency import ConcurrencyGate
from switchyard.service.cooldown import CooldownPolicy, Cooldowns
from switchyard.service.routing import RoutingTable

__all__ = ["Attempt", "Attempts", "cooldown_policies"]

_P = TypeVar("_P")
_UPSTREAM_FAILURES = frozenset({502, 503, 504})  # no connection, upstream 5xx/overloaded, timeout
_MODEL_FAULTS = frozenset({"malformed_function_call"})  # 502s that say nothing about the upstream's health


def cooldown_policies(routing: RoutingTable) -> dict[str, CooldownPolicy]:
    """Each upstream's cooldown policy, and each deployment's (its upstream's)."""
    policies = {
        name: CooldownPolicy(spec.cooldown_failures, spec.cooldown_window, spec.cooldown_seconds)
        for name, spec in routing.upstreams.items()
    }
    for route in routing.routes.values():
        for target in route.deployments:
            policies.setdefault(target.breaker, policies[target.provider])
    return policies


class Attempts:
    """What every try consults, per deployment: cooldowns, concurrency gates, in-flight counts."""

    def __init__(
        self, routing: RoutingTable, metrics: Metrics, *, on_credential_use: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.on_credential_use = on_credential_use  # the vault's last-used times
        self.cooldowns = Cooldowns(cooldown_policies(routing), on_change=metrics.cooling_down_changed, clock=clock,
                                   on_panic=metrics.panic_changed)
        self.busy: dict[str, int] = {}  # in flight per deployment (least_busy routing)
        self.in_flight = 0
        self._gates: dict[str, ConcurrencyGate] = {}

    def apply_routing(self, routing: RoutingTable) -> None:
        """New cooldown policies; deployments that remain keep their state."""
        self.cooldowns.set_policies(cooldown_policies(routing))

    def queue_depth(self, target: Target) -> int:
        """Requests waiting for a slot on this target's concurrency cap."""
        gate = self._gates.get(target.gate)
        return gate.waiting if gate is not None else 0

    def gate(self, target: Target) -> ConcurrencyGate | None:
        if target.max_concurrent is None:
            return None
        gate = self._gates.get(target.gate)
        if gate is None:
            name = target.gate.partition(":")[2]
            gate = ConcurrencyGate(name, target.max_concurrent, target.max_queue, target.queue_timeout)
            self._gates[target.gate] = gate
            self.metrics.queue_depth.labels(name).set_function(lambda: gate.waiting)
        return gate

    def attempt(
        self, target: Target, ctx: CallContext, out: Outcome, endpoint: str, streamed: bool, panic: bool = False,
    ) -> Attempt:
        """One try of ``out``'s request on ``target`` (``async with``). A ``panic`` try goes to a
        deployment that is cooling down, because nothing else the request may use can serve it."""
        return Attempt(self, target, ctx, out, endpoint, streamed, panic)


class Attempt:
    """The context of one try on one deployment; a class, as this is on every request's path."""

    __slots__ = ("_at", "_ctx", "_endpoint", "_gate", "_in_flight", "_out", "_panic", "_probe", "_started",
                 "_streamed", "_target", "status")

    def __init__(self, attempts: Attempts, target: Target, ctx: CallContext, out: Outcome, endpoint: str,
                 streamed: bool, panic: bool = False) -> None:
        self._at, self._target, self._ctx, self._out = attempts, target, ctx, out
        self._endpoint, self._streamed = endpoint, streamed
        self._probe = False
        self._panic = panic
        self._gate: ConcurrencyGate | None = None
        self._in_flight = attempts.metrics.in_flight_for(target.alias)
        self._started = 0.0
        self.status = CLIENT_CLOSED  # until it succeeds or fails, the client left

    async def __aenter__(self) -> Attempt:
        at, target, ctx = self._at, self._target, self._ctx
        self._out.target = target
        if self._panic:
            at.cooldowns.panic(target.breaker)
            at.metrics.panic_requests.labels(target.breaker).inc()
        else:
            self._probe = at.cooldowns.admit(target.breaker)  # a deployment cooling down is skipped, not tried
        ctx.attempts += 1
        ctx.deployment, ctx.model, ctx.provider = target.deployment, target.alias, target.provider
        gate = self._gate = at.gate(target)
        if gate is not None:
            try:
                await gate.acquire()
            except GatewayError as exc:
                reason = "queue_timeout" if exc.status_code == 503 else "queue_full"
                at.metrics.rejections.labels(target.alias, reason).inc()
                if self._probe:
                    at.cooldowns.record(target.breaker, ok=True, probe=True)
                raise
        self._in_flight.inc()
        at.in_flight += 1
        at.busy[target.breaker] = at.busy.get(target.breaker, 0) + 1
        if target.credential is not None and at.on_credential_use is not None:
            at.on_credential_use(target.credential)
        self._started = time.perf_counter()
        return self

    async def first(self, pieces: AsyncIterator[_P]) -> _P:
        """The first piece of the upstream's answer (for a whole answer, the answer itself).
        How long it took is what the response waited on the upstream."""
        try:
            piece = await anext(pieces)
        except StopAsyncIteration:
            raise UpstreamError("The upstream ended the stream before sending anything.") from None
        finally:
            self._ctx.upstream_s = time.perf_counter() - self._started
        if self._streamed:
            self._at.metrics.ttft.labels(self._target.alias, self._target.provider).observe(self._ctx.upstream_s)
        return piece

    def succeeded(self) -> None:
        self.status = 200

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        at, target = self._at, self._target
        at.metrics.upstream_latency_for(target.alias, target.provider, self._endpoint).observe(
            time.perf_counter() - self._started)
        models_fault = False
        if isinstance(exc, GatewayError):
            self.status = exc.status_code
            models_fault = exc.code in _MODEL_FAULTS
            if isinstance(exc, UpstreamError | ServiceUnavailableError) or exc.status_code >= 500:
                at.metrics.upstream_errors.labels(target.provider, exc.code or str(exc.status_code)).inc()
        elif isinstance(exc, Exception):
            self.status = 500
        self._in_flight.dec()
        at.in_flight -= 1
        at.busy[target.breaker] -= 1
        if self._gate is not None:
            self._gate.release()
        # a model's fault (e.g. a malformed tool call) says nothing about the upstream's health
        if not models_fault and (self.status == 200 or self.status in _UPSTREAM_FAILURES):
            at.cooldowns.record(target.breaker, ok=self.status == 200, probe=self._probe, panic=self._panic)
        elif self._probe:
            at.cooldowns.record(target.breaker, ok=True, probe=True)  # no verdict: don't stay stuck
