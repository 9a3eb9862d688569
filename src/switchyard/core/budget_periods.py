"""Budget periods (daily and monthly in UTC, or the total) and a budget's status in its current
period: what was spent (from the usage rollups) and what is left. Pure, except that the spend is
read through the ``SpentSource`` it is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

from switchyard.core.limits import Budget

__all__ = ["Period", "SpentSource", "budget_status", "period_of", "utcnow"]

SpentSource = Callable[[str, datetime | None], Awaitable[float]]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Period:
    id: str  # "2026-11-23", "2026-11" or "total"
    start: datetime | None  # None for total
    end: datetime | None
    kind: str = "total"  # daily, monthly or total


def period_of(kind: str, now: datetime) -> Period:
    now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return _period_on(kind, now.date())


@lru_cache(maxsize=64)  # every request asks for the same few: build each once
def _period_on(kind: str, day: date) -> Period:
    if kind == "daily":
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return Period(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1), kind)
    if kind == "monthly":
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
        return Period(start.strftime("%Y-%m"), start, end, kind)
    return Period("total", None, None)


async def budget_status(
    spent: SpentSource, scope: str, budget: Budget, now: datetime | None = None
) -> dict[str, Any]:
    """A budget in its current period: what ``scope`` spent (from the rollups) and what is left.
    Requests still in flight, and usage rows not written yet, are not in it."""
    period = period_of(budget.period, now or utcnow())
    used = await spent(scope, period.start)
    return {
        "period": budget.period,
        "period_start": period.start.isoformat() if period.start else None,
        "period_end": period.end.isoformat() if period.end else None,
        "spent_usd": round(used, 9),
        "remaining_usd": round(max(0.0, budget.amount_usd - used), 9),
    }
