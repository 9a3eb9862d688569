"""The latency histogram: bucket bounds, and percentiles read back within one bucket."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from switchyard.core.latency import BOUNDS_MS, BUCKETS, RESOLUTION, bucket, percentile


def _true(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_buckets_are_log_spaced_and_cover_every_latency() -> None:
    assert BUCKETS == 62 and BOUNDS_MS[0] == 1.0 and BOUNDS_MS[-1] == pytest.approx(2.0**20)
    assert all(b / a == pytest.approx(RESOLUTION) for a, b in itertools.pairwise(BOUNDS_MS))
    assert [bucket(v) for v in (0.0, 0.999, 1.0, 1.25, 1.26, 2.0, 2.0**20, 1e12)] == [0, 0, 1, 1, 2, 4, 61, 61]
    assert bucket(float("nan")) == 0 and bucket(-5.0) == 0
    for i in range(1, BUCKETS - 1):  # every bucket holds its lower bound and not its upper one
        assert bucket(BOUNDS_MS[i - 1]) == i and bucket(BOUNDS_MS[i] * (1 - 1e-12)) == i


def test_percentiles_fall_within_one_bucket_of_the_true_ones() -> None:
    rng = random.Random(7)
    for spread in ((5.0, 50.0), (200.0, 4000.0), (0.2, 3.0), (10.0, 600_000.0)):
        values = [math.exp(rng.uniform(math.log(spread[0]), math.log(spread[1]))) for _ in range(2000)]
        counts = [0] * BUCKETS
        for v in values:
            counts[bucket(v)] += 1
        assert sum(counts) == len(values)
        for q in (0.5, 0.95, 0.99):
            got, want = percentile(counts, q), _true(values, q)
            assert got is not None
            if want >= 1.0:
                assert want / RESOLUTION <= got <= want * RESOLUTION, (spread, q, got, want)
            else:  # below 1 ms: one linear bucket
                assert 0.0 <= got <= 1.0


def test_percentile_of_one_value_and_of_nothing() -> None:
    assert percentile([0] * BUCKETS, 0.5) is None
    counts = [0] * BUCKETS
    counts[bucket(300.0)] = 1
    low = BOUNDS_MS[bucket(300.0) - 1]
    assert low <= percentile(counts, 0.5) <= low * RESOLUTION  # type: ignore[operator]
    counts = [0] * BUCKETS
    counts[-1] = 3  # beyond the last bound: the last bound
    assert percentile(counts, 0.95) == BOUNDS_MS[-1]
