"""Bytes: the memory budget's default, and durations for keep-alive (Ollama's format)."""

from __future__ import annotations

import os
import re

__all__ = ["default_budget", "parse_duration", "total_memory"]

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def total_memory() -> int:
    """Physical memory in bytes (cgroup limit when one is set and lower)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit():
            total = min(total, int(raw))
    return total


def default_budget() -> int:
    """Half of physical memory: room for the server, the OS and a model being swapped in."""
    return total_memory() // 2


def parse_duration(value: str | int | float | None) -> float | None:
    """Seconds from Ollama's keep_alive forms: 300, "5m", "1h", "90s", "-1" / -1 (for ever: None).
    0 means unload as soon as idle. Raises ValueError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration such as '5m', a number of seconds, or -1")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"keep_alive {value!r} is not a duration such as '5m', '1h', '30s' or -1")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return None if seconds < 0 else seconds
