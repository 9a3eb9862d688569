"""The Redis engines behind one ``Circuit`` each: per-process limits and budgets (or the 503)
while Redis cannot be reached.

    FallbackLimiter  rate limits: Redis, else ``MemoryLimiter`` (503 ``limits_unavailable``)
    FallbackLedger   budgets: Redis, else ``MemoryLedger`` (503 ``budgets_unavailable``)

Each admission or reservation is settled by the engine that made it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from switchyard.core.limits import Admission, BudgetCheck, BudgetLedger, LimitCheck, Limiter, Reservation
from switchyard.errors import ServiceUnavailableError
from switchyard.limits.budgets import Held, LedgerUnavailableError, MemoryLedger
from switchyard.limits.circuit import Circuit
from switchyard.limits.rates import MemoryLimiter, unavailable

__all__ = ["FallbackLedger", "FallbackLimiter"]


def _limits_outage(exc: BaseException) -> bool:
    return isinstance(exc, ServiceUnavailableError) and exc.code == "limits_unavailable"


class FallbackLimiter:
    """``primary`` (Redis) while it answers; while it cannot be reached (it raises the 503
    ``limits_unavailable``), ``fallback``'s per-process limits, or that 503 when ``fail_closed``.
    Redis is tried again at most every ``probe_interval`` seconds, by one request at a time;
    ``degraded`` says whether the fallback is in use (for /ready)."""

    def __init__(
        self, primary: Limiter, fallback: MemoryLimiter, *, fail_closed: bool = False, retry_after: float = 1.0,
        probe_interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._circuit = Circuit("rate limits", is_outage=_limits_outage, unavailable=lambda: unavailable(retry_after),
                                fail_closed=fail_closed, probe_interval=probe_interval, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._circuit.degraded

    async def admit(self, checks: Sequence[LimitCheck], lease: str, tokens: int) -> Admission:
        return await self._circuit.call(lambda: self._primary.admit(checks, lease, tokens),
                                        lambda: self._fallback.admit(checks, lease, tokens))

    async def settle(self, admission: Admission, tokens: int) -> None:
        # (Redis' settle never raises: while it is away, the leases there expire on their own)
        engine: Limiter = self._fallback if self._fallback.holds(admission.lease) else self._primary
        await engine.settle(admission, tokens)

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()


class FallbackLedger:
    """The shared ledger (Redis), and a per-process one while it is unreachable
    (``LedgerUnavailableError``, or no answer within ``timeout`` seconds); or the 503
    ``budgets_unavailable`` when ``fail_closed``. Redis is probed again at most every
    ``retry_interval`` seconds. On falling back, the per-process ledger forgets its idle
    counters, to seed them again from the database (it has what Redis counted meanwhile). A
    settle the primary cannot take is counted on the fallback's seeded counters instead (the
    primary's hold expires on its own), so this process still sees it while degraded.
    """

    def __init__(self, primary: BudgetLedger, fallback: BudgetLedger, fail_closed: bool = False, *,
                 retry_interval: float = 2.0, timeout: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._primary = primary
        self._fallback = fallback
        self._circuit = Circuit(
            "budgets", is_outage=lambda exc: isinstance(exc, LedgerUnavailableError),
            unavailable=lambda: ServiceUnavailableError(
                "Budgets are unavailable: the budget store cannot be reached.", code="budgets_unavailable",
                retry_after=retry_interval),
            fail_closed=fail_closed, probe_interval=retry_interval, timeout=timeout,
            on_degraded=fallback.reset if isinstance(fallback, MemoryLedger) else None, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._circuit.degraded

    async def available(self, checks: Sequence[BudgetCheck]) -> float:
        return await self._circuit.call(lambda: self._primary.available(checks),
                                        lambda: self._fallback.available(checks))

    async def reserve(self, checks: Sequence[BudgetCheck], lease: str, amount_usd: float) -> Reservation:
        return await self._circuit.call(lambda: self._primary.reserve(checks, lease, amount_usd),
                                        lambda: self._fallback.reserve(checks, lease, amount_usd))

    def _made_by_fallback(self, reservation: Reservation) -> bool:
        return isinstance(reservation, Held) and reservation.owner is self._fallback

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        if reservation.done:
            return
        if self._made_by_fallback(reservation):
            await self._fallback.settle(reservation, actual_usd)
            return

        async def counted_here() -> None:
            reservation.done = True
            if isinstance(self._fallback, MemoryLedger):
                self._fallback.record(reservation, actual_usd)

        await self._circuit.call(lambda: self._primary.settle(reservation, actual_usd), counted_here,
                                 may_refuse=False)

    async def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        if self._made_by_fallback(reservation):
            await self._fallback.release(reservation)
            return

        async def expires_there() -> None:  # the primary's hold expires on its own
            reservation.done = True

        await self._circuit.call(lambda: self._primary.release(reservation), expires_there, may_refuse=False)

    async def aclose(self) -> None:
        try:
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()
