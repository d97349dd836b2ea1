"""An adaptive concurrency limit for one model, in the manner of Netflix's gradient limiter
and Envoy's adaptive concurrency filter.

The signal is the backend's time to first byte (TTFB), not the whole answer: an answer's
length depends on how much the model writes, while a backend that is over its capacity shows
it first as a growing wait before the first token.

    baseline  ← the no-load TTFB: a slowly rising minimum of the samples
    recent    ← the median TTFB of the last window of samples
    gradient  = clamp(tolerance × baseline / recent, 0.5, 1.0)
    limit     ← limit × gradient + √limit   (the √limit lets it probe upwards when healthy)

clamped to [min_concurrency, max_concurrency] and applied once per window of samples."""

from __future__ import annotations

import math
import statistics

WINDOW = 20          # samples per update
TOLERANCE = 1.5      # TTFB may grow to 1.5× the baseline before the limit shrinks
BASELINE_DRIFT = 0.01  # how fast the baseline forgets an old minimum (per window)


class GradientLimit:
    def __init__(self, initial: int, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.value = float(max(minimum, min(initial, maximum)))
        self.baseline: float | None = None
        self._samples: list[float] = []

    @property
    def limit(self) -> int:
        return int(self.value)

    def sample(self, ttfb: float) -> bool:
        """Add one TTFB (seconds); True when the limit was recomputed."""
        if ttfb <= 0:
            return False
        self._samples.append(ttfb)
        if len(self._samples) < WINDOW:
            return False
        recent = statistics.median(self._samples)
        low = min(self._samples)
        self._samples.clear()
        if self.baseline is None or low < self.baseline:
            self.baseline = low
        else:
            self.baseline += BASELINE_DRIFT * (low - self.baseline)
        gradient = max(0.5, min(1.0, TOLERANCE * self.baseline / recent))
        new = self.value * gradient + math.sqrt(self.value)
        self.value = max(self.minimum, min(self.maximum, new))
        return True
