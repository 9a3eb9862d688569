"""A fixed latency histogram: log-spaced buckets that add up across hours, keys and models.

Three buckets an octave from 1 ms to 2^20 ms (about 17.5 minutes): bucket 0 is [0, 1 ms), bucket
``i`` (1..60) is [2^((i-1)/3), 2^(i/3)) ms, and bucket 61 is everything from 2^20 ms on. A
percentile is read from merged counts and interpolated geometrically inside its bucket, so it
lies in the same bucket as the true one: within a factor 2^(1/3) (26 %) of it from 1 ms on,
and under 1 ms when the true one is (bucket 0 does not resolve further: a gateway's latency is
below 1 ms only against an upstream on loopback); beyond 17.5 minutes, the estimate is 17.5 minutes.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["BOUNDS_MS", "BUCKETS", "RESOLUTION", "bucket", "percentile"]

_PER_OCTAVE = 3
BOUNDS_MS: tuple[float, ...] = tuple(2.0 ** (i / _PER_OCTAVE) for i in range(20 * _PER_OCTAVE + 1))
"""The buckets' lower bounds from bucket 1 on (1 ms ... 2^20 ms)."""
BUCKETS = len(BOUNDS_MS) + 1
"""How many counts a histogram holds (62)."""
RESOLUTION = 2.0 ** (1 / _PER_OCTAVE)
"""The ratio of a bucket's upper to its lower bound: the most a percentile can be off by."""


def bucket(latency_ms: float) -> int:
    """The bucket a latency falls in (NaN and negatives in bucket 0)."""
    if not latency_ms > 0:
        return 0
    return bisect_right(BOUNDS_MS, latency_ms)


def percentile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) in milliseconds of a histogram; None when it is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        if seen + count >= rank:
            fraction = min(max((rank - seen) / count, 0.0), 1.0)
            if index == 0:
                return fraction * BOUNDS_MS[0]
            low = BOUNDS_MS[index - 1]
            if index >= len(BOUNDS_MS):
                return low
            return low * math.pow(BOUNDS_MS[index] / low, fraction)
        seen += count
    return BOUNDS_MS[-1]  # only when rounding leaves the rank past the last count
