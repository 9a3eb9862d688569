"""Bytes: the memory budget's default (physical memory, or the cgroup's limit)."""

from __future__ import annotations

import os

__all__ = ["default_budget", "total_memory"]


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
