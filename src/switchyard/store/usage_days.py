"""Which rollup table answers which part of a time range.

``usage_rollups`` holds totals per UTC hour and ``usage_daily`` the same totals per UTC day
(each day row is the sum of that day's hour rows, written by the same upsert). A range of whole
hours ``[first hour, end)`` is answered from the day rows for the UTC days wholly inside it and
from the hour rows for the part days at its edges, so a year is about 365 rows per key and
model instead of 8,760, and the totals are the very ones the hour rows alone would give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["Span", "daily_rows", "day_start", "spans"]

_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)


def day_start(at: datetime) -> datetime:
    """The UTC day ``at`` falls in (its 00:00 UTC)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: usage times must be timezone-aware")
    return at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil(at: datetime, step: timedelta) -> datetime:
    """``at`` rounded up to a whole hour (``step`` = 1 h) or UTC day (1 d)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: usage times must be timezone-aware")
    at = at.astimezone(UTC)
    floor = at.replace(minute=0, second=0, microsecond=0)
    if step == _DAY:
        floor = floor.replace(hour=0)
    return floor if floor == at else floor + step


@dataclass(frozen=True, slots=True)
class Span:
    """Rows of one table whose start lies in ``[low, high)`` (None: unbounded)."""

    daily: bool
    low: datetime | None
    high: datetime | None


def spans(since: datetime | None, until: datetime | None) -> list[Span]:
    """The spans that together hold every hour row starting in ``[hour of since, until)``.

    That is the hourly reports' range: an hour counts when it overlaps ``[since, until)``.
    Whole UTC days inside it come from the day rows, the hours before the first and after the
    last whole day from the hour rows. ``since`` and ``until`` must be timezone-aware.
    """
    first = None if since is None else _hour_start(since)
    end = None if until is None else _ceil(until, _HOUR)  # the hour rows' exclusive end
    days_from = None if first is None else _ceil(first, _DAY)
    days_to = None if end is None else day_start(end)
    if days_from is not None and days_to is not None and days_from >= days_to:
        return [Span(False, first, end)]  # no whole day inside: hours only
    out = [Span(True, days_from, days_to)]
    if first is not None and days_from is not None and first < days_from:
        out.append(Span(False, first, days_from))
    if end is not None and days_to is not None and days_to < end:
        out.append(Span(False, days_to, end))
    return out


def _hour_start(at: datetime) -> datetime:
    """The UTC hour ``at`` falls in."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"naive datetime {at!r}: usage times must be timezone-aware")
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def daily_rows(hourly: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    """Hour rollup increments added up per UTC day, key, model and team, in primary-key order."""
    out: dict[tuple[datetime, str, str, str], dict[str, Any]] = {}
    for row in hourly:
        group = (day_start(row["hour_start"]), row["key_id"], row["model"], row["team_id"])
        total = out.get(group)
        if total is None:
            out[group] = {"day_start": group[0], "key_id": group[1], "model": group[2], "team_id": group[3],
                          **{c: row[c] for c in columns}}
        else:
            for c in columns:
                total[c] += row[c]
    return [out[group] for group in sorted(out)]
