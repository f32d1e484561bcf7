"""Calibrated prediction intervals: split conformal per horizon step and channel
(`conformal`), and how they score on a split (`scoring`).

Everything outside this package imports the names below from `llata_core.intervals`.
"""

from llata_core.intervals.conformal import (
    ACI_LEVEL_RANGE,
    DEFAULT_LEVELS,
    INTERVALS_FORMAT,
    MAX_LEVELS,
    METHOD,
    NORMALIZERS,
    ConformalScores,
    IntervalForecast,
    Normalizer,
    aci_step,
    bounds,
    calibrate_series,
    conformal_rank,
    effective_rank,
    level_name,
    validate_levels,
    window_scale,
)
from llata_core.intervals.scoring import (
    IntervalAccumulator,
    IntervalMetrics,
    coverage,
    interval_score,
)

__all__ = [
    "ACI_LEVEL_RANGE",
    "ConformalScores",
    "DEFAULT_LEVELS",
    "INTERVALS_FORMAT",
    "IntervalAccumulator",
    "IntervalForecast",
    "IntervalMetrics",
    "MAX_LEVELS",
    "METHOD",
    "NORMALIZERS",
    "Normalizer",
    "aci_step",
    "bounds",
    "calibrate_series",
    "conformal_rank",
    "effective_rank",
    "coverage",
    "interval_score",
    "level_name",
    "validate_levels",
    "window_scale",
]
