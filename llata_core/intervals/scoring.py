"""How calibrated intervals did on a split: coverage, width and interval (Winkler) score.

The intervals themselves come from `llata_core.intervals.conformal`; this module only
scores them against the true values, on the model's scaled axis.

References:
    Gneiting & Raftery, "Strictly Proper Scoring Rules" (JASA 2007), the interval (Winkler)
    score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from llata_core.intervals.conformal import DEFAULT_LEVELS, ConformalScores, bounds, level_name


@dataclass(frozen=True)
class IntervalMetrics:
    """How one level's intervals did on a split (scaled axis, every window, step, channel).

    Attributes:
        level: the nominal level in percent.
        coverage: fraction of true values inside `[lower, upper]` (nominal: `level / 100`).
        width: mean interval width.
        winkler: mean interval (Winkler) score: the width plus `2 / alpha` times how far a
            value falls outside; lower is better, and it rewards narrow intervals only while
            they still cover.
        n_values: how many values were scored.
    """

    level: float
    coverage: float
    width: float
    winkler: float
    n_values: int

    def to_dict(self) -> dict[str, float]:
        """Flat keys for metrics.json: `coverage_80`, `width_80`, `winkler_80`."""
        name = level_name(self.level)
        return {
            f"coverage_{name}": self.coverage,
            f"width_{name}": self.width,
            f"winkler_{name}": self.winkler,
        }


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Fraction of `y` inside `[lower, upper]` (bounds included), over all elements."""
    return float(np.mean((y >= lower) & (y <= upper)))


def interval_score(y: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float) -> np.ndarray:
    """Elementwise interval (Winkler) score of the `level`% interval, by `scoringrules`."""
    import scoringrules  # imported here: about a second of start-up for one function

    alpha = 1.0 - level / 100.0
    return np.asarray(
        scoringrules.interval_score(y, lower, upper, alpha, backend="numpy"), dtype=np.float64
    )


class IntervalAccumulator:
    """Sums coverage, width and interval score over batches, in float64.

    Example:
        >>> acc = IntervalAccumulator(scores, (80, 95))
        >>> for pred, y in batches:  # [B, H, M] each, scaled axis
        ...     acc.add(pred, y)
        >>> acc.result()
    """

    def __init__(self, scores: ConformalScores, levels: Sequence[float] = DEFAULT_LEVELS):
        self.scores = scores
        self.levels = scores.check_levels(levels)
        self._inside = dict.fromkeys(self.levels, 0.0)
        self._width = dict.fromkeys(self.levels, 0.0)
        self._winkler = dict.fromkeys(self.levels, 0.0)
        self._n = 0

    def add(self, point: np.ndarray, y: np.ndarray) -> None:
        """One batch of point forecasts and true values, `[B, H, M]`, on the scaled axis."""
        point = np.asarray(point, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        lower, upper = bounds(point, self.scores, self.levels)
        for level in self.levels:
            lo, hi = lower[level], upper[level]
            self._inside[level] += float(((y >= lo) & (y <= hi)).sum())
            self._width[level] += float((hi - lo).sum())
            self._winkler[level] += float(interval_score(y, lo, hi, level).sum())
        self._n += y.size

    def result(self) -> tuple[IntervalMetrics, ...]:
        if self._n == 0:
            raise ValueError("no values were scored")
        n = self._n
        return tuple(
            IntervalMetrics(
                level, self._inside[level] / n, self._width[level] / n, self._winkler[level] / n, n
            )
            for level in self.levels
        )
