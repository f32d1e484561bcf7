"""Calibrated prediction intervals: split conformal, per horizon step and channel.

A trained model forecasts every window of a calibration split it was not fitted on; the
absolute residuals `|y - y_hat|` of each horizon step and channel, sorted, are the
conformity scores (`ConformalScores`). The interval at level `p` (percent) around a new
point forecast is `y_hat +- q`, where `q` is the `k`-th smallest score of that step and
channel with `k = ceil((n + 1) p / 100)`: the finite-sample conformal quantile, which
covers a new residual exchangeable with the `n` calibration residuals with probability at
least `p` (and at most `p + 1 / (n + 1)` without ties). Each step and channel has its own
quantile because error grows with the horizon and differs between channels; one pooled
width would over-cover the first steps and under-cover the last.

Scores live on the model's scaled axis (per-channel standardisation with the training
scaler), so one artifact's scores are comparable across channels and become data units by
the scaler's affine map: a half-width `q` is `q * std` in data units. The sorted scores,
not a few quantiles, are stored (`intervals.safetensors`, float32 `[n, horizon,
channels]`), so the artifact answers any level exactly.

The guarantee needs exchangeability, which a time series only approximates: calibration
windows precede the test windows in time and overlap each other. Coverage is therefore
measured on every test window (`IntervalMetrics`), not assumed.

References:
    Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World" (2005); Lei et al.,
    "Distribution-Free Predictive Inference for Regression" (JASA 2018), split conformal and
    its `ceil((n + 1)(1 - alpha))` rank; Stankeviciute et al., "Conformal Time-Series
    Forecasting" (NeurIPS 2021), one score set per horizon step. The same per-step
    absolute-residual scheme is Nixtla's `PredictionIntervals` / `ConformalIntervals`
    (mlforecast, neuralforecast, statsforecast) and darts' `ConformalNaiveModel`.
    Gneiting & Raftery, "Strictly Proper Scoring Rules" (JASA 2007), the interval (Winkler)
    score.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

INTERVALS_FILE = "intervals.safetensors"
INTERVALS_FORMAT = "1"
MAX_LEVELS = 5
DEFAULT_LEVELS = (80.0, 95.0)
METHOD = "split-conformal-absolute-residual"

Normalizer = Literal["none"]


def validate_levels(levels: Iterable[float]) -> tuple[float, ...]:
    """Check interval levels (percent) and return them as floats, in the given order.

    Args:
        levels: e.g. `(80, 95)` for the 80% and 95% intervals.

    Raises:
        ValueError: not numbers, outside (0, 100), given as fractions (0.8 for 80%),
            repeated, none, or more than `MAX_LEVELS`.
    """
    if isinstance(levels, str | bytes):
        raise ValueError(f"levels must be a sequence of numbers, got {levels!r}")
    out: list[float] = []
    for raw in levels:
        if isinstance(raw, bool) or not isinstance(raw, int | float | np.integer | np.floating):
            raise ValueError(f"interval level {raw!r} is not a number")
        level = float(raw)
        if not math.isfinite(level) or not 0.0 < level < 100.0:
            raise ValueError(f"interval level {raw!r} is outside (0, 100); levels are percent")
        if level < 1.0:
            # A 0.8% interval is never what anyone means: it is 80% written as a fraction.
            raise ValueError(
                f"interval level {raw!r} looks like a fraction; levels are percent (80 for 80%)"
            )
        if level in out:
            raise ValueError(f"interval level {level:g} is given twice")
        out.append(level)
    if not out:
        raise ValueError("give at least one interval level, e.g. 80 or 95")
    if len(out) > MAX_LEVELS:
        raise ValueError(f"at most {MAX_LEVELS} interval levels at once, got {len(out)}")
    return tuple(out)


def level_name(level: float) -> str:
    """`80.0 -> "80"`, `97.5 -> "97.5"`: the level as it appears in column and metric names."""
    return f"{level:g}"


def conformal_rank(n: int, level: float) -> int:
    """The 1-based rank `ceil((n + 1) * level / 100)` of the conformal quantile among `n` scores.

    Exact arithmetic: with floats, `(9 + 1) * 0.8` is `8.000000000000002` and would round up
    to the wrong rank.

    Raises:
        ValueError: `n` scores cannot give a finite interval at this level (the rank is
            beyond `n`; e.g. 95% needs at least 19 calibration windows).
    """
    k = math.ceil(Fraction(n + 1) * Fraction(repr(float(level))) / 100)
    if k > n:
        need = math.ceil(Fraction(repr(float(level))) / (100 - Fraction(repr(float(level)))))
        raise ValueError(
            f"a {level_name(level)}% interval needs at least {need} calibration windows, "
            f"the model was calibrated on {n}"
        )
    return max(k, 1)


@dataclass(frozen=True, eq=False)
class ConformalScores:
    """Sorted absolute residuals of a model on its calibration windows, on the scaled axis.

    Attributes:
        scores: float32 `[n, horizon, channels]`, ascending along the first axis.
        split: the calibration split (`val`).
        data_fingerprint: identifies the calibration data (`Splits.fingerprint()`).
        calibrated_at: UTC time of calibration (ISO 8601).
        normalizer: what the residuals were divided by; `none` (absolute residuals). Kept in
            the file so that a later score kind cannot be read as this one.
    """

    scores: np.ndarray
    split: str = "val"
    data_fingerprint: str = ""
    calibrated_at: str = ""
    normalizer: Normalizer = "none"
    _cache: dict[float, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        s = self.scores
        if not isinstance(s, np.ndarray) or s.ndim != 3 or s.shape[0] < 1:
            shape = getattr(s, "shape", None)
            raise ValueError(f"scores must be a non-empty [n, horizon, channels] array: {shape}")
        if not np.isfinite(s).all() or (s < 0).any():
            raise ValueError("scores must be finite and non-negative")
        if s.shape[0] > 1 and (np.diff(s, axis=0) < 0).any():
            raise ValueError("scores must be sorted ascending along the window axis")
        if self.normalizer != "none":
            raise ValueError(f"unknown score normalizer {self.normalizer!r}")

    @classmethod
    def from_residuals(
        cls,
        residuals: np.ndarray,
        *,
        split: str = "val",
        data_fingerprint: str = "",
        calibrated_at: str = "",
    ) -> ConformalScores:
        """Scores from residuals `y - y_hat` `[n, horizon, channels]` (any sign)."""
        residuals = np.asarray(residuals)
        if residuals.ndim != 3:
            raise ValueError(f"residuals must be [n, horizon, channels], got {residuals.shape}")
        scores = np.sort(np.abs(residuals).astype(np.float32), axis=0)  # [n, H, M]
        return cls(scores, split, data_fingerprint, calibrated_at)

    @property
    def n(self) -> int:
        """How many calibration windows."""
        return int(self.scores.shape[0])

    @property
    def horizon(self) -> int:
        return int(self.scores.shape[1])

    @property
    def n_channels(self) -> int:
        return int(self.scores.shape[2])

    def half_width(self, level: float) -> np.ndarray:
        """`[horizon, channels]` half-width of the `level`% interval, on the scaled axis."""
        if level not in self._cache:
            self._cache[level] = self.scores[conformal_rank(self.n, level) - 1].astype(np.float64)
        return self._cache[level]

    def check_levels(self, levels: Iterable[float]) -> tuple[float, ...]:
        """`validate_levels`, plus a check that there are enough windows for each level."""
        checked = validate_levels(levels)
        for level in checked:
            conformal_rank(self.n, level)
        return checked

    def describe(self) -> dict[str, str | int]:
        """What `Forecaster.describe()` reports about the calibration."""
        return {
            "method": METHOD,
            "split": self.split,
            "n_windows": self.n,
            "horizon": self.horizon,
            "data_fingerprint": self.data_fingerprint,
            "calibrated_at": self.calibrated_at,
        }

    def save(self, path: str | Path) -> None:
        """Write the scores and their description as safetensors (no pickle)."""
        metadata = {
            "format": INTERVALS_FORMAT,
            "method": METHOD,
            "normalizer": self.normalizer,
            "split": self.split,
            "data_fingerprint": self.data_fingerprint,
            "calibrated_at": self.calibrated_at,
        }
        save_file({"scores": np.ascontiguousarray(self.scores)}, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> ConformalScores:
        """Read what `save` wrote.

        Raises:
            ValueError: not a scores file of this format, or scores that fail the checks.
        """
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as fh:
                meta = fh.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a safetensors file ({err})") from err
        if meta.get("format") != INTERVALS_FORMAT or meta.get("method") != METHOD:
            raise ValueError(
                f"{path}: interval format {meta.get('format')!r} / method "
                f"{meta.get('method')!r} is not {INTERVALS_FORMAT!r} / {METHOD!r}"
            )
        if set(tensors) != {"scores"}:
            raise ValueError(f"{path}: expected one tensor 'scores', found {sorted(tensors)}")
        normalizer = meta.get("normalizer", "none")
        if normalizer != "none":
            raise ValueError(f"{path}: unknown score normalizer {normalizer!r}")
        return cls(
            tensors["scores"],
            split=meta.get("split", ""),
            data_fingerprint=meta.get("data_fingerprint", ""),
            calibrated_at=meta.get("calibrated_at", ""),
        )


@dataclass(frozen=True)
class IntervalForecast:
    """A point forecast with its conformal bounds, in data units.

    Attributes:
        point: `[..., horizon, channels]` the model's forecast (what `predict` returns
            without levels).
        lower / upper: level (percent) -> bounds shaped like `point`.
        channels: the channel names, in the last axis' order.
    """

    point: np.ndarray
    lower: Mapping[float, np.ndarray]
    upper: Mapping[float, np.ndarray]
    channels: tuple[str, ...]

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(self.lower)

    def __getitem__(self, index: int) -> IntervalForecast:
        """One forecast of a batch."""
        return IntervalForecast(
            self.point[index],
            {k: v[index] for k, v in self.lower.items()},
            {k: v[index] for k, v in self.upper.items()},
            self.channels,
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per step: the channels, then `<channel>_lo_<level>` / `_hi_<level>`."""
        if self.point.ndim != 2:
            raise ValueError(f"to_frame takes one [horizon, channels] forecast: {self.point.shape}")
        columns: dict[str, np.ndarray] = {c: self.point[:, j] for j, c in enumerate(self.channels)}
        for j, c in enumerate(self.channels):
            for level in self.levels:
                columns[f"{c}_lo_{level_name(level)}"] = self.lower[level][:, j]
                columns[f"{c}_hi_{level_name(level)}"] = self.upper[level][:, j]
        return pd.DataFrame(columns)


def bounds(
    point: np.ndarray, scores: ConformalScores, levels: Sequence[float]
) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Lower and upper bounds around point forecasts `[..., h, channels]` on the scaled axis.

    `h` may be shorter than the calibrated horizon (the first `h` steps' widths are used),
    never longer: there are no scores for steps the model was not calibrated on.
    """
    h = point.shape[-2]
    if h > scores.horizon:
        raise ValueError(
            f"intervals are calibrated for {scores.horizon} steps; {h} steps have no scores"
        )
    lower, upper = {}, {}
    for level in levels:
        q = scores.half_width(level)[:h]  # [h, M]
        lower[level] = point - q
        upper[level] = point + q
    return lower, upper


# ---------------------------------------------------------------------------- scoring


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
