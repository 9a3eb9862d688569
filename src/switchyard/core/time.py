"""Times and durations as people write them: one grammar for each, used by every edge.

``parse_since`` reads a point in time (``since``/``until`` of ``/admin/usage``, ``/admin/audit``,
``switchyard usage`` and ``switchyard audit``), in any of three forms:

    ISO 8601   2025-03-01, 2025-03-01T12:30:00Z, 2025-03-01T14:30:00+02:00 (no offset: UTC)
    Unix       1740832200, 1740832200.5 (seconds since 1970-01-01 UTC)
    an age     90s, 30m, 24h, 7d, 2w, 1.5h (that long before now)

``parse_duration`` reads a keep-alive in Ollama's form (Go's units, one of them): seconds as a
number (``300``, ``-1``), or a number and a unit (``500ms``, ``90s``, ``10m``, ``1.5h``; also
``ns``, ``us``). Negative means for ever.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = ["parse_duration", "parse_since"]

_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
           "d": 86400.0, "w": 604800.0}
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNIX = re.compile(r"\d+(?:\.\d+)?")
_KEEP_ALIVE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?")


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """The time ``value`` names (see the module docstring), in UTC. ValueError otherwise."""
    text = value.strip()
    age = _AGE.fullmatch(text)
    if age is not None:
        base = now if now is not None else datetime.now(UTC)
        return base - timedelta(seconds=float(age.group(1)) * _UNIT_S[age.group(2)])
    try:
        if _UNIX.fullmatch(text):
            return datetime.fromtimestamp(float(text), UTC)
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        parsed = None
    if parsed is None or not text:
        raise ValueError(f"{value!r} is not a time: use an ISO 8601 time, Unix seconds, "
                         "or an age such as 30m, 24h or 7d")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_duration(value: str | int | float | None) -> float | None:
    """Seconds of a keep-alive (see the module docstring); None for ever (negative) or when
    ``value`` is None. 0 means as soon as idle. ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '5m', a number of seconds, or -1")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _KEEP_ALIVE.fullmatch(value.strip())
        if match is None:
            raise ValueError(f"keep_alive {value!r} is not a duration such as '5m', '1h', '30s' or -1")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    return None if seconds < 0 else seconds
