"""Fixed-bucket histograms: merging is adding, and a merged percentile is within one bucket
of the exact value."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest

from gatehouse.telemetry.histogram import (
    EDGES,
    Histogram,
    bucket_of,
    lower_edge,
    upper_edge,
)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def within_one_bucket(estimate: float, truth: float) -> bool:
    b = bucket_of(truth)
    return lower_edge(max(0, b - 1)) <= estimate <= upper_edge(min(len(EDGES), b + 1))


@pytest.mark.parametrize("seed", range(5))
def test_merged_percentiles_are_within_one_bucket(seed: int) -> None:
    rng = random.Random(seed)
    # three "replicas" over a few "minutes", each with its own latency mix
    parts, everything = [], []
    for mu in (1.0, 3.0, 6.0):
        values = [rng.lognormvariate(mu, 1.0) for _ in range(rng.randint(50, 3000))]
        h = Histogram()
        for v in values:
            h.add(v)
        parts.append(h)
        everything += values
    merged = Histogram.merged(parts)
    assert merged.total == len(everything)
    whole = Histogram()
    for v in everything:
        whole.add(v)
    assert merged == whole  # merging is adding: the order and the split do not matter
    for q in (50, 90, 95, 99, 99.9):
        estimate = merged.percentile(q)
        assert estimate is not None and within_one_bucket(estimate, exact(everything, q)), q


def test_edges_and_extremes() -> None:
    assert EDGES[0] == 0.25 and EDGES[-1] > 300_000  # 0.25 ms … beyond 5 minutes
    assert all(b / a == pytest.approx(math.sqrt(2)) for a, b in pairwise(EDGES))
    h = Histogram()
    assert h.percentile(50) is None
    h.add(0.0)
    h.add(10**9)  # above the last edge: the overflow bucket
    assert h.percentile(0) == 0.0 and h.percentile(100) == EDGES[-1]


def test_json_round_trip() -> None:
    h = Histogram()
    for v in (0.3, 0.3, 12.0, 4000.0):
        h.add(v)
    data = h.to_json()
    assert all(isinstance(k, str) for k in data)
    assert Histogram.from_json(data) == h
