"""The one grammar for times (``since``/``until`` everywhere) and for keep-alive durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchyard.core.time import parse_duration, parse_since

NOW = datetime(2025, 3, 10, 12, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    # ISO 8601: a date, a time with Z, with an offset (converted to UTC), without one (UTC)
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
    ("2025-03-01T12:30:00Z", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
    ("2025-03-01T12:30:00+02:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ("2025-03-01T12:30:00.250000", datetime(2025, 3, 1, 12, 30, 0, 250000, tzinfo=UTC)),
    ("2025-03-01 12:30", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
    # Unix seconds
    ("1740832200", datetime(2025, 3, 1, 12, 30, tzinfo=UTC)),
    ("1740832200.5", datetime(2025, 3, 1, 12, 30, 0, 500000, tzinfo=UTC)),
    ("24", datetime(1970, 1, 1, 0, 0, 24, tzinfo=UTC)),
    ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    # an age: that long before now
    ("90s", NOW - timedelta(seconds=90)),
    ("30m", NOW - timedelta(minutes=30)),
    ("24h", NOW - timedelta(hours=24)),
    ("1.5h", NOW - timedelta(minutes=90)),
    ("7d", NOW - timedelta(days=7)),
    ("2w", NOW - timedelta(days=14)),
    (" 24 h ", NOW - timedelta(hours=24)),
    ("0s", NOW),
])
def test_since_reads_iso_unix_seconds_and_ages(text: str, expected: datetime) -> None:
    got = parse_since(text, NOW)
    assert got == expected and got.tzinfo == UTC


@pytest.mark.parametrize("text", ["", " ", "yesterday", "h", "-1d", "24x", "1e9", "2025-13-01", "7 days",
                                  "1h30m", "-5", "inf", "nan", "99999999999999999999"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="ISO 8601 time, Unix seconds, or an age such as 30m, 24h or 7d"):
        parse_since(text, NOW)


def test_since_ages_count_back_from_the_real_now_by_default() -> None:
    before = datetime.now(UTC)
    got = parse_since("1h")
    assert before - timedelta(hours=1) <= got <= datetime.now(UTC) - timedelta(hours=1)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None),
    (300, 300.0), (2.5, 2.5), (0, 0.0), (-1, None), ("-1", None), ("-1m", None),
    ("300", 300.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("500ms", 0.5), (" 5 m ", 300.0),
    ("1500us", 0.0015), ("1500µs", 0.0015), ("2000000ns", 0.002),
])
def test_keep_alive_durations(value: str | int | float | None, seconds: float | None) -> None:
    got = parse_duration(value)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["forever", "5 minutes", "1d", "1h30m", "m", "", True])
def test_keep_alive_refuses_anything_else(value: str | bool) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_duration(value)
