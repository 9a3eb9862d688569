"""Budget ledgers: USD ceilings per key and per team, hard under concurrency.

A request first *reserves* its worst-case cost against every budget it counts against (all or
nothing), then *settles* the hold to what it really cost, or *releases* it when it failed
before costing anything. A budget admits a reservation only while
``spent + reserved + amount <= limit``, so concurrent requests can never spend past it.

Semantics shared by every engine (``MemoryLedger`` here, ``RedisLedger`` in ``budgets_redis``;
``FallbackLedger`` in ``fallback`` runs on this process's ledger while Redis is unreachable):

- Amounts are kept as integer micro-dollars (USD rounded to the nearest 1e-6), so sums are
  exact: ten holds of $0.10 fill a $1.00 budget exactly.
- Periods are computed from the injected UTC clock: ``daily`` ("2026-11-23", resets at UTC
  midnight), ``monthly`` ("2026-11", resets on the 1st), ``total`` (never resets).
- A reservation counts in the period it was made in: settled after midnight, its cost lands
  in the day it was reserved (the day the request started), never in the new one.
- ``settle`` records the actual cost even when it exceeds the hold (spent is truth) and even
  when the hold has already expired. ``settle`` and ``release`` are idempotent through
  ``Reservation.done``; release after settle (or the reverse) does nothing.
- The database's usage rollups are the source of truth for what was spent: the first use of a
  (scope, period) seeds its counter from ``spent_source(scope, period_start)`` (``None`` for
  total), once, even under concurrent first uses. A seed waits at most ``SEED_TIMEOUT``
  seconds for the database (down or hung); without it the request gets the 503
  ``budgets_unavailable`` (a budget that cannot be counted is neither skipped nor a 500),
  unless this process still has the counter from before (``MemoryLedger.reset``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from switchyard.core.budget_periods import Period, SpentSource, budget_status, period_of, utcnow
from switchyard.core.limits import BudgetCheck, Reservation
from switchyard.errors import InsufficientQuotaError, ServiceUnavailableError

__all__ = [
    "Held",
    "LedgerUnavailableError",
    "MemoryLedger",
    "Period",
    "SpentSource",
    "budget_status",
    "period_of",
    "to_micro",
    "utcnow",
]


log = logging.getLogger("switchyard.budgets")

Clock = Callable[[], datetime]
SEED_TIMEOUT = 3.0  # seconds a counter's seed waits for the database
MICRO = 1_000_000
MAX_MICRO = 2**53 - 1  # exact in a Lua/IEEE double: about $9 billion


def to_micro(usd: float) -> int:
    """USD to whole micro-dollars, rounded to the nearest; negative and NaN are 0, huge is capped."""
    if math.isnan(usd) or usd <= 0:
        return 0
    return MAX_MICRO if usd * MICRO >= MAX_MICRO else round(usd * MICRO)


@dataclass(slots=True)
class Held(Reservation):
    """A reservation with what its engine needs to settle it: the periods it was made in."""

    periods: tuple[Period, ...] = ()
    owner: object = None  # the engine that holds it
    micro: int = 0


class LedgerUnavailableError(Exception):
    """The shared store cannot be reached (connection refused, timed out)."""


def usd(amount: float) -> str:
    """$5.00, $0.05, $0.000125."""
    text = f"{amount:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


_PER = {"daily": "per day", "monthly": "per month", "total": "in total"}


def exhausted(check: BudgetCheck, used_micro: int) -> InsufficientQuotaError:
    kind, _, ident = check.scope.partition(":")
    who = f"{kind} {ident}" if ident else check.scope
    return InsufficientQuotaError(
        f"Budget exhausted for {who}: {usd(check.limit_usd)} {_PER.get(check.period, check.period)}, "
        f"{usd(used_micro / MICRO)} spent or reserved.")


def periods_for(reservation: Reservation, clock: Clock) -> tuple[Period, ...]:
    if isinstance(reservation, Held) and len(reservation.periods) == len(reservation.checks):
        return reservation.periods
    now = clock()
    return tuple(period_of(c.period, now) for c in reservation.checks)


async def seed(source: SpentSource, scope: str, start: datetime | None,
               timeout: float | None = SEED_TIMEOUT) -> float:
    """What the database says ``scope`` spent since ``start``, or the 503 ``budgets_unavailable``
    when it fails or does not answer within ``timeout`` seconds. ``timeout=None``: the source
    answers at once and what it raises goes through (the limits host asks its workers)."""
    if timeout is None:
        return await source(scope, start)
    try:
        async with asyncio.timeout(timeout):
            return await source(scope, start)
    except Exception as exc:
        log.warning("budgets: could not read what %s spent (%s)", scope, type(exc).__name__)
        raise ServiceUnavailableError("Budgets are unavailable: the database cannot be reached.",
                                      code="budgets_unavailable", retry_after=1.0) from exc


@dataclass(slots=True)
class _Account:
    spent: int
    reserved: int = 0
    holds: dict[str, int] = field(default_factory=dict)


class MemoryLedger:
    """Budgets kept in this process (one replica, or the fallback while Redis is down)."""

    def __init__(self, spent_source: SpentSource | None = None, clock: Clock = utcnow, *,
                 seed_timeout: float | None = SEED_TIMEOUT) -> None:
        self._source = spent_source
        self._seed_timeout = seed_timeout
        self._clock = clock
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._periods: dict[str, dict[str, str]] = {}  # scope -> period id -> kind, of its accounts
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._stale: dict[tuple[str, str], _Account] = {}  # forgotten by reset: used if a seed fails

    async def _account(self, scope: str, period: Period) -> _Account:
        key = (scope, period.id)
        account = self._accounts.get(key)
        if account is not None:
            return account
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent first uses wait for one seeding
            account = self._accounts.get(key)
            if account is None:
                try:
                    spent = (0.0 if self._source is None
                             else await seed(self._source, scope, period.start, self._seed_timeout))
                except ServiceUnavailableError:
                    account = self._stale.pop(key, None)
                    if account is None:
                        raise
                    log.warning("budgets: counting %s on this process' last figure", scope)
                else:
                    self._stale.pop(key, None)
                    account = _Account(to_micro(spent))
                self._accounts[key] = account
                self._prune(scope, period)
        self._locks.pop(key, None)
        return account

    def _prune(self, scope: str, current: Period) -> None:
        """Forget the scope's counters of earlier periods of the same kind that hold nothing (the
        database has them). Other kinds stay: a scope used under a daily and a monthly budget
        at once must not have each drop the other's counter (the lookup would never settle)."""
        periods = self._periods.setdefault(scope, {})
        for old, kind in list(periods.items()):
            if old != current.id and kind == current.kind and not self._accounts[(scope, old)].holds:
                del periods[old]
                del self._accounts[(scope, old)]
        periods[current.id] = current.kind

    async def _accounts_for(self, checks: Sequence[BudgetCheck], periods: Sequence[Period]) -> list[_Account]:
        known = [self._accounts.get((c.scope, p.id)) for c, p in zip(checks, periods, strict=True)]
        if None not in known:  # the usual case: every counter is seeded (and nothing awaits)
            return known  # type: ignore[return-value]
        while True:
            accounts = [await self._account(c.scope, p) for c, p in zip(checks, periods, strict=True)]
            # no await from here on: the caller's check-and-hold is atomic in the event loop
            if all(self._accounts.get((c.scope, p.id)) is a
                   for c, p, a in zip(checks, periods, accounts, strict=True)):
                return accounts

    async def available(self, checks: Sequence[BudgetCheck]) -> float:
        now = self._clock()
        periods = [period_of(c.period, now) for c in checks]
        accounts = await self._accounts_for(checks, periods)
        room = [max(0, to_micro(c.limit_usd) - a.spent - a.reserved) for c, a in zip(checks, accounts, strict=True)]
        return min(room) / MICRO if room else math.inf

    async def reserve(self, checks: Sequence[BudgetCheck], lease: str, amount_usd: float) -> Reservation:
        now = self._clock()
        periods = tuple(period_of(c.period, now) for c in checks)
        amount = to_micro(amount_usd)
        accounts = await self._accounts_for(checks, periods)
        for check, account in zip(checks, accounts, strict=True):
            used = account.spent + account.reserved - account.holds.get(lease, 0)
            if used + amount > to_micro(check.limit_usd):
                raise exhausted(check, used)
        held = Held(lease, tuple(checks), amount / MICRO, periods=periods, owner=self, micro=amount)
        for check, account in zip(checks, accounts, strict=True):
            account.reserved += amount - account.holds.get(lease, 0)
            account.holds[lease] = amount
            held.remaining_usd[check.scope] = max(0, to_micro(check.limit_usd) - account.spent
                                                  - account.reserved) / MICRO
        return held

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        if reservation.done:
            return
        reservation.done = True
        actual = to_micro(actual_usd)
        for check, period in zip(reservation.checks, periods_for(reservation, self._clock), strict=True):
            account = self._accounts.get((check.scope, period.id))
            if account is None:  # not ours, or never held: count it on a seeded counter
                account = await self._account(check.scope, period)
            account.reserved -= account.holds.pop(reservation.lease, 0)
            account.spent += actual

    async def release(self, reservation: Reservation) -> None:
        if reservation.done:
            return
        reservation.done = True
        for check, period in zip(reservation.checks, periods_for(reservation, self._clock), strict=True):
            account = self._accounts.get((check.scope, period.id))
            if account is not None:
                account.reserved -= account.holds.pop(reservation.lease, 0)

    def record(self, reservation: Reservation, actual_usd: float) -> None:
        """Count a cost settled elsewhere (on Redis, while it is unreachable) on the counters
        already seeded here; the others will be seeded from the database, which has it."""
        for check, period in zip(reservation.checks, periods_for(reservation, self._clock), strict=True):
            account = self._accounts.get((check.scope, period.id))
            if account is not None:
                account.spent += to_micro(actual_usd)

    def reset(self) -> None:
        """Forget every counter that holds nothing: the next use seeds it again from the database
        (or, if the database does not answer then, goes on from the figure forgotten here)."""
        self._stale = {}
        for (scope, pid), account in list(self._accounts.items()):
            if not account.holds:
                del self._accounts[(scope, pid)]
                self._periods[scope].pop(pid, None)
                self._stale[(scope, pid)] = account

    async def aclose(self) -> None:
        return None
