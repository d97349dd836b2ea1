"""Latency histograms with fixed bucket edges, so histograms made by different replicas and
for different minutes add up by adding their counts (merge), and a percentile of the sum is
as good as a percentile of any one of them: within one bucket of the exact value.

The edges are a geometric series, √2 apart, from 0.25 ms to about 6 minutes: one bucket is
at most 41 % wide, whether the answer took a millisecond or a minute. Stored sparse, as
``{bucket: count}``, since most requests of one cell fall into a few neighbouring buckets.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

RATIO = math.sqrt(2)
EDGES: tuple[float, ...] = tuple(0.25 * RATIO ** k for k in range(42))  # ms, upper edges
# the last bucket (index len(EDGES)) holds everything above the last edge


def bucket_of(ms: float) -> int:
    return bisect.bisect_left(EDGES, ms)


def upper_edge(bucket: int) -> float:
    return EDGES[bucket] if bucket < len(EDGES) else math.inf


def lower_edge(bucket: int) -> float:
    return EDGES[bucket - 1] if bucket > 0 else 0.0


class Histogram:
    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})

    def add(self, ms: float) -> None:
        b = bisect.bisect_left(EDGES, ms)
        self.counts[b] = self.counts.get(b, 0) + 1

    def merge(self, other: Histogram) -> Histogram:
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        return self

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0–100), interpolated inside its bucket; None when empty."""
        total = self.total
        if not total:
            return None
        rank = q / 100 * total
        seen = 0
        for b in sorted(self.counts):
            n = self.counts[b]
            if seen + n >= rank:
                low, high = lower_edge(b), upper_edge(b)
                if math.isinf(high):
                    return low
                return low + (high - low) * max(0.0, rank - seen) / n
            seen += n
        return upper_edge(max(self.counts))

    def to_json(self) -> dict[str, int]:
        return {str(b): n for b, n in sorted(self.counts.items())}

    @classmethod
    def from_json(cls, data: Mapping[str, int]) -> Histogram:
        return cls({int(b): int(n) for b, n in data.items()})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"Histogram({self.counts})"
