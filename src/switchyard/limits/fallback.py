"""The Redis engines behind one ``Circuit`` each: per-process limits and budgets (or the 503)
while Redis cannot be reached.

    FallbackLimiter  rate limits: Redis, else ``MemoryLimiter`` (503 ``limits_unavailable``)
    FallbackLedger   budgets: Redis, else ``MemoryLedger`` (503 ``budgets_unavailable``)

Each admission or reservation is settled by the engine that made it; a settle Redis could not
take is counted here at once and made on Redis once it is back (``Circuit.later``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from switchyard.core.limits import Admission, BudgetCheck, BudgetLedger, LimitCheck, Limiter, Reservation
from switchyard.errors import ServiceUnavailableError
from switchyard.limits.budgets import Held, LedgerUnavailableError, MemoryLedger
from switchyard.limits.circuit import Circuit
from switchyard.limits.rates import MemoryLimiter, unavailable

__all__ = ["FallbackLedger", "FallbackLimiter"]

log = logging.getLogger("switchyard.limits")


def _limits_outage(exc: BaseException) -> bool:
    return isinstance(exc, ServiceUnavailableError) and exc.code == "limits_unavailable"


class FallbackLimiter:
    """``primary`` (Redis) while it answers; while it cannot be reached (it raises the 503
    ``limits_unavailable``: down, or no answer within its timeout), ``fallback``'s per-process
    limits, or that 503 when ``fail_closed``. Redis is tried again at most every
    ``probe_interval`` seconds, by one request at a time; ``degraded`` says whether the fallback
    is in use (for /ready). A settle of a Redis admission that Redis cannot take is replayed
    once it is back, so its parallel slots are freed then, not ``lease_ttl`` later."""

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
        if self._fallback.holds(admission.lease):
            await self._fallback.settle(admission, tokens)
            return
        late = getattr(self._primary, "settle_or_raise", None)
        if late is None:  # an engine that settles come what may
            await self._primary.settle(admission, tokens)
            return

        async def when_back() -> None:  # freed at once, not after lease_ttl, once Redis answers
            self._circuit.later(lambda: late(admission, tokens, again=True))

        try:
            await self._circuit.call(lambda: late(admission, tokens), when_back, may_refuse=False)
        except Exception as exc:  # Redis answered with an error: the request is over all the same
            log.warning("rate limits: could not settle a request (%s)", type(exc).__name__)

    def share_outages_with(self, ledger: FallbackLedger) -> None:
        """Limits and budgets on one Redis: an outage either finds sends both to this process."""
        self._circuit.share_outages_with(ledger._circuit)

    async def aclose(self) -> None:
        try:
            await self._circuit.aclose()
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()


class FallbackLedger:
    """The shared ledger (Redis), and a per-process one while it is unreachable
    (``LedgerUnavailableError``, or no answer within ``timeout`` seconds); or the 503
    ``budgets_unavailable`` when ``fail_closed``. Redis is probed again at most every
    ``retry_interval`` seconds. On falling back, the per-process ledger forgets its idle
    counters, to seed them again from the database (it has what Redis counted meanwhile). A
    settle (or release) the primary cannot take is counted on the fallback's seeded counters
    instead, so this process still sees it while degraded, and replayed on Redis once a probe
    finds it back (``Circuit.later``): the hold there becomes the spend, counted once whether
    the first try reached Redis or not. The database's usage rows stay the truth: a counter
    Redis lost is seeded from them again.
    """

    def __init__(self, primary: BudgetLedger, fallback: BudgetLedger, fail_closed: bool = False, *,
                 retry_interval: float = 2.0, timeout: float | None = 1.0,
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
            self._late(reservation, actual_usd)

        await self._circuit.call(lambda: self._primary.settle(reservation, actual_usd), counted_here,
                                 may_refuse=False)

    def _late(self, reservation: Reservation, actual_usd: float) -> None:
        """Replay a settle (or a release: 0) on Redis once it is back; the hold is moved to the
        spend only if it is still there, so a settle that reached Redis after all counts once."""
        late = getattr(self._primary, "settle_late", None)
        if late is not None:
            self._circuit.later(lambda: late(reservation, actual_usd))

    async def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        if self._made_by_fallback(reservation):
            await self._fallback.release(reservation)
            return

        async def released_there_later() -> None:  # (or, if Redis stays away, the hold expires)
            reservation.done = True
            self._late(reservation, 0.0)

        await self._circuit.call(lambda: self._primary.release(reservation), released_there_later,
                                 may_refuse=False)

    async def aclose(self) -> None:
        try:
            await self._circuit.aclose()
            await self._primary.aclose()
        finally:
            await self._fallback.aclose()
