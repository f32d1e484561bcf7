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
not a few quantiles, are stored in the artifact (float32 `[n, horizon, channels]`), so
it answers any level exactly.

The guarantee needs exchangeability, which a time series only approximates: calibration
windows precede the test windows in time and overlap each other. Coverage is therefore
measured on every test window (`llata_core.intervals.scoring`), not assumed. Where the
errors drift, a recalibration can also carry Adaptive Conformal Inference's state: an
effective level per nominal level (`ConformalScores.effective_levels`), moved by the
miscoverage the served intervals realised (`aci_step`), at which the nominal level's
quantile is read.

References:
    Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World" (2005); Lei et al.,
    "Distribution-Free Predictive Inference for Regression" (JASA 2018), split conformal and
    its `ceil((n + 1)(1 - alpha))` rank; Stankeviciute et al., "Conformal Time-Series
    Forecasting" (NeurIPS 2021), one score set per horizon step. The same per-step
    absolute-residual scheme is Nixtla's `PredictionIntervals` / `ConformalIntervals`
    (mlforecast, neuralforecast, statsforecast) and darts' `ConformalNaiveModel`. Gibbs &
    Candes, "Adaptive Conformal Inference Under Distribution Shift" (NeurIPS 2021), the
    effective level's update.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from llata_core.config import ShortTermNormalizer

INTERVALS_FORMAT = "1"
MAX_LEVELS = 5
DEFAULT_LEVELS = (80.0, 95.0)
METHOD = "split-conformal-absolute-residual"

# Absolute residuals (`none`), or divided by a window scale (the short-term task's choices).
Normalizer = Literal["none", ShortTermNormalizer]
NORMALIZERS: tuple[Normalizer, ...] = get_args(Normalizer)
# The power `p` of each window scale, `(mean_t |x_t - x_{t-m}|^p)^(1/p)`.
_SCALE_POWER: dict[str, int] = {"seasonal-mae": 1, "seasonal-rmse": 2}


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
    k = _rank(n, level)
    if k > n:
        need = math.ceil(Fraction(repr(float(level))) / (100 - Fraction(repr(float(level)))))
        raise ValueError(
            f"a {level_name(level)}% interval needs at least {need} calibration windows, "
            f"the model was calibrated on {n}"
        )
    return max(k, 1)


def effective_rank(n: int, level: float) -> int:
    """`conformal_rank` of an ACI effective level (up to 100): beyond `n`, the largest score.

    ACI may ask for more coverage than `n` scores can promise; the widest interval they
    give is the closest answer (Gibbs & Candes' infinite interval would serve no one)."""
    return min(max(_rank(n, level), 1), n)


def _rank(n: int, level: float) -> int:
    return math.ceil(Fraction(n + 1) * Fraction(repr(float(level))) / 100)


# ACI's effective level stays in [50, 100] percent: below 50 an interval is no longer what
# anyone asked for, and a state far beyond 100 (no wider interval exists there) would take
# weeks of over-coverage to unwind.
ACI_LEVEL_RANGE = (50.0, 100.0)


def aci_step(effective: float, nominal: float, miscoverage: float, gamma: float) -> float:
    """ACI's next effective level (percent) after intervals read at `effective` missed a
    share `miscoverage` of their targets: `effective + 100 gamma (miscoverage - alpha)`,
    `alpha = 1 - nominal / 100`, clipped to `ACI_LEVEL_RANGE`.

    Too many misses raise the level, too few lower it; over a long run the miss rate
    approaches `alpha` whatever the drift. `gamma = 0` leaves the level where it is.

    References:
        Gibbs & Candes, "Adaptive Conformal Inference Under Distribution Shift" (NeurIPS
        2021): `alpha_{t+1} = alpha_t + gamma (alpha - err_t)`, in percent of coverage.
    """
    if not gamma:
        return effective
    step = 100.0 * gamma * (miscoverage - (1.0 - nominal / 100.0))
    return float(min(max(effective + step, ACI_LEVEL_RANGE[0]), ACI_LEVEL_RANGE[1]))


@dataclass(frozen=True, eq=False)
class ConformalScores:
    """Sorted absolute residuals of a model on its calibration windows, on the scaled axis.

    Attributes:
        scores: float32 `[n, horizon, channels]`, ascending along the first axis.
        split: the calibration split (`val`).
        data_fingerprint: identifies the calibration data (`Splits.fingerprint()`).
        calibrated_at: UTC time of calibration (ISO 8601).
        normalizer: what the residuals were divided by. `none`: absolute residuals, for
            models whose scaler puts every channel on one scale. `seasonal-mae`: each
            residual divided by its input window's seasonal-naive mean absolute error
            (`window_scale`), for panels of many series on unrelated scales (M4), where one
            absolute width would be too wide for small series and too narrow for large
            ones; the half-width is then `q * window_scale(window)`. `seasonal-rmse`: the
            same with the window's root mean squared seasonal difference, which widens
            the intervals of series whose changes come in spikes (what short-term models
            calibrate with; see `llata_core.shortterm.calibrate_forecasts`).
        seasonality: the period of a seasonal scale (1 for `none`).
        effective_levels: ACI's state, nominal level -> the level (percent) its quantile
            is read at (`aci_step`, carried by daily recalibrations); a nominal level not
            in it is read at itself, as without ACI.
    """

    scores: np.ndarray
    split: str = "val"
    data_fingerprint: str = ""
    calibrated_at: str = ""
    normalizer: Normalizer = "none"
    seasonality: int = 1
    effective_levels: Mapping[float, float] = field(default_factory=dict)
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
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"unknown score normalizer {self.normalizer!r}")
        if self.seasonality < 1:
            raise ValueError(f"seasonality must be >= 1, got {self.seasonality}")
        if self.effective_levels:
            validate_levels(self.effective_levels)
        low, high = ACI_LEVEL_RANGE
        for nominal, level in self.effective_levels.items():
            if not low <= level <= high:
                raise ValueError(
                    f"the effective level of {level_name(nominal)}% is {level!r}, "
                    f"outside [{low:g}, {high:g}]"
                )

    @classmethod
    def from_residuals(
        cls,
        residuals: np.ndarray,
        *,
        scale: np.ndarray | None = None,
        seasonality: int = 1,
        normalizer: Normalizer | None = None,
        split: str = "val",
        data_fingerprint: str = "",
        calibrated_at: str = "",
    ) -> ConformalScores:
        """Scores from residuals `y - y_hat` `[n, horizon, channels]` (any sign).

        Args:
            residuals: `[n, horizon, channels]`.
            scale: `[n, 1, channels]` per-window scales (`window_scale` of each calibration
                input with `seasonality` and `normalizer`); with them the scores are
                normalised, without them absolute.
            seasonality: the period `scale` was computed with.
            normalizer: how `scale` was computed: `seasonal-mae` (the default with a
                scale) or `seasonal-rmse`; `none` (the default without).
        """
        residuals = np.asarray(residuals, dtype=np.float64)
        if residuals.ndim != 3:
            raise ValueError(f"residuals must be [n, horizon, channels], got {residuals.shape}")
        if scale is not None:
            scale = np.asarray(scale, dtype=np.float64)
            if scale.shape != (residuals.shape[0], 1, residuals.shape[2]):
                raise ValueError(f"scale {scale.shape} does not fit residuals {residuals.shape}")
            residuals = residuals / scale
            normalizer = normalizer or "seasonal-mae"
            if normalizer == "none":
                raise ValueError("a window scale is given, but the normalizer is 'none'")
        else:
            if seasonality != 1:
                raise ValueError("a seasonality is given only with a scale")
            if normalizer not in (None, "none"):
                raise ValueError(f"{normalizer} scores need each calibration window's scale")
            normalizer = "none"
        scores = np.sort(np.abs(residuals).astype(np.float32), axis=0)  # [n, H, M]
        return cls(scores, split, data_fingerprint, calibrated_at, normalizer, seasonality)

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
        """`[horizon, channels]` half-width of the `level`% interval, on the scaled axis:
        read at its effective level where ACI has moved it."""
        if level not in self._cache:
            k = conformal_rank(self.n, level)  # raises: too few windows for the nominal level
            if level in self.effective_levels:
                k = effective_rank(self.n, self.effective_levels[level])
            self._cache[level] = self.scores[k - 1].astype(np.float64)
        return self._cache[level]

    def with_levels(self, effective_levels: Mapping[float, float]) -> ConformalScores:
        """The same scores with this ACI state (empty: every level read at itself)."""
        levels = {float(k): float(v) for k, v in effective_levels.items()}
        return replace(self, effective_levels=levels)

    def scale_of(self, windows: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | None:
        """What `bounds` needs for these input windows `[B, L, M]` (scaled axis): their
        `window_scale` for normalised scores (only points where `mask` is 1 count, for
        left-padded windows), None for absolute ones."""
        if self.normalizer == "none":
            return None
        return window_scale(windows, self.seasonality, mask, self.normalizer)

    def answerable(self, levels: Iterable[float]) -> tuple[float, ...]:
        """The levels these scores have enough windows for (95% needs 19), in order."""
        out = []
        for level in validate_levels(levels):
            try:
                conformal_rank(self.n, level)
            except ValueError:
                continue
            out.append(level)
        return tuple(out)

    def check_levels(self, levels: Iterable[float]) -> tuple[float, ...]:
        """`validate_levels`, plus a check that there are enough windows for each level."""
        checked = validate_levels(levels)
        for level in checked:
            # The rank's exact arithmetic costs more than a serving request's bounds; a level
            # answered once is in the half-width cache, and one without enough windows raises.
            self.half_width(level)
        return checked

    def describe(self) -> dict[str, Any]:
        """What `Forecaster.describe()` reports about the calibration; ACI's effective level
        per nominal level (`{"80": 81.3}`) where a recalibration moved them."""
        return {
            "method": METHOD,
            "normalizer": self.normalizer,
            "seasonality": self.seasonality,
            "split": self.split,
            "n_windows": self.n,
            "horizon": self.horizon,
            "data_fingerprint": self.data_fingerprint,
            "calibrated_at": self.calibrated_at,
            **({"effective_levels": self._named_levels()} if self.effective_levels else {}),
        }

    def _named_levels(self) -> dict[str, float]:
        return {level_name(k): v for k, v in self.effective_levels.items()}

    def save(self, path: str | Path) -> None:
        """Write the scores and their description as safetensors (no pickle); ACI's state,
        where there is one, goes into the metadata (so the manifest's checksum covers it)."""
        metadata = {
            "format": INTERVALS_FORMAT,
            "method": METHOD,
            "normalizer": self.normalizer,
            "seasonality": str(self.seasonality),
            "split": self.split,
            "data_fingerprint": self.data_fingerprint,
            "calibrated_at": self.calibrated_at,
        }
        if self.effective_levels:
            metadata["effective_levels"] = json.dumps(self._named_levels())
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
        if normalizer not in NORMALIZERS:
            raise ValueError(f"{path}: unknown score normalizer {normalizer!r}")
        try:
            seasonality = int(meta.get("seasonality", "1"))
        except ValueError:
            raise ValueError(
                f"{path}: seasonality {meta['seasonality']!r} is not an integer"
            ) from None
        try:
            levels = json.loads(meta.get("effective_levels", "{}"))
            effective = {float(k): float(v) for k, v in levels.items()}
        except (ValueError, TypeError, AttributeError):
            raise ValueError(
                f"{path}: effective levels {meta['effective_levels']!r} are not a JSON "
                "object of level -> level"
            ) from None
        return cls(
            tensors["scores"],
            split=meta.get("split", ""),
            data_fingerprint=meta.get("data_fingerprint", ""),
            calibrated_at=meta.get("calibrated_at", ""),
            normalizer=normalizer,  # type: ignore[arg-type]  # checked above
            seasonality=seasonality,
            effective_levels=effective,
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


def window_scale(
    windows: np.ndarray,
    seasonality: int,
    mask: np.ndarray | None = None,
    normalizer: Normalizer = "seasonal-mae",
) -> np.ndarray:
    """Seasonal-naive error of each input window: the scale of normalised scores.

    `seasonal-mae`: `mean_t |x_t - x_{t-m}|` over the window's observed points (`mask` 1),
    per channel, the denominator of MASE. `seasonal-rmse`: `sqrt(mean_t (x_t - x_{t-m})^2)`,
    the `sigma` of seasonal naive's textbook normal intervals. Both are taken over what the
    model sees, so that calibration, evaluation and serving compute them from the same
    points. A window with no seasonal pair uses `m = 1`; a window whose differences are all
    zero (a flat history) falls back to its first differences, then to 1% of its mean
    level (at least 1e-8), so that a width is never 0.

    Args:
        windows: `[B, L, M]` inputs.
        seasonality: the period `m`.
        mask: `[B, L, M]` or `[B, L, 1]`, 1 where observed (left padding is 0); default all.
        normalizer: `seasonal-mae` or `seasonal-rmse`.

    Returns:
        `[B, 1, M]` float64, positive.
    """
    if normalizer not in _SCALE_POWER:
        raise ValueError(f"no window scale for normalizer {normalizer!r}")
    power = _SCALE_POWER[normalizer]
    x = np.asarray(windows, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"windows must be [batch, steps, channels], got {x.shape}")
    observed = np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape) > 0
    out = np.zeros((x.shape[0], 1, x.shape[2]))
    for lag in dict.fromkeys((seasonality, 1)):  # the season first, then first differences
        if lag >= x.shape[1]:
            continue
        pairs = observed[:, lag:] & observed[:, :-lag]
        n = pairs.sum(axis=1, keepdims=True)
        total = (np.abs(x[:, lag:] - x[:, :-lag]) ** power * pairs).sum(axis=1, keepdims=True)
        mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0) ** (1.0 / power)
        out = np.where(out > 0, out, mean)
    n_obs = observed.sum(axis=1, keepdims=True)
    level = np.divide(
        (np.abs(x) * observed).sum(axis=1, keepdims=True),
        n_obs,
        out=np.zeros_like(out),
        where=n_obs > 0,
    )
    return np.where(out > 0, out, np.maximum(0.01 * level, 1e-8))


def bounds(
    point: np.ndarray,
    scores: ConformalScores,
    levels: Sequence[float],
    scale: np.ndarray | None = None,
) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Lower and upper bounds around point forecasts `[..., h, channels]` on the scaled axis.

    `h` may be shorter than the calibrated horizon (the first `h` steps' widths are used),
    never longer: there are no scores for steps the model was not calibrated on.

    Args:
        point: `[..., h, channels]` point forecasts.
        scores: the model's conformal scores.
        levels: percent.
        scale: `[..., 1, channels]` `window_scale` of each forecast's input window; required
            by normalised scores, refused by absolute ones.
    """
    h = point.shape[-2]
    if h > scores.horizon:
        raise ValueError(
            f"intervals are calibrated for {scores.horizon} steps; {h} steps have no scores"
        )
    if scores.normalizer == "none" and scale is not None:
        raise ValueError("absolute conformal scores take no window scale")
    if scores.normalizer != "none" and scale is None:
        raise ValueError(f"{scores.normalizer} conformal scores need each input window's scale")
    if not levels:  # e.g. none answerable: too few calibration windows for every level
        return {}, {}
    # All levels in one broadcast: a served window's arrays are small, so the cost is the
    # number of numpy calls, not their size.
    q = np.stack([scores.half_width(level)[:h] for level in levels])  # [K, h, M]
    q = q.reshape(q.shape[:1] + (1,) * (point.ndim - 2) + q.shape[1:])  # [K, ..., h, M]
    if scale is not None:
        q = q * scale  # [K, ..., h, M]
    lower, upper = point - q, point + q  # [K, ..., h, M] each
    return dict(zip(levels, lower, strict=True)), dict(zip(levels, upper, strict=True))


def calibrate_series(
    forecasts: np.ndarray,
    targets: np.ndarray,
    inputs: np.ndarray,
    seasonality: int,
    *,
    mask: np.ndarray | None = None,
    normalizer: Normalizer = "seasonal-mae",
    split: str = "val",
    data_fingerprint: str = "",
    calibrated_at: str = "",
) -> ConformalScores:
    """Normalised scores of a model over a panel of univariate series (M4).

    Each calibration window is the forecast of a held-out horizon of a series from the
    input before it (one or more per series). Each residual is divided by that input's
    `window_scale`, so series on unrelated scales share one set of scores per horizon step,
    and a new series' interval is as wide, relative to its own recent variation, as the
    calibration series' errors were.

    Args:
        forecasts, targets: `[N, H]` forecasts and actuals of the held-out horizons.
        inputs: `[N, L, 1]` the input windows the forecasts were made from.
        seasonality: the period `m` of the scale.
        mask: `[N, L, 1]` 1 on observed points (0 on left padding).
        normalizer: `seasonal-mae` or `seasonal-rmse` (`window_scale`).
    """
    forecasts = np.asarray(forecasts, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if forecasts.ndim != 2 or forecasts.shape != targets.shape:
        raise ValueError(f"forecasts {forecasts.shape} and targets {targets.shape} must be [N, H]")
    return ConformalScores.from_residuals(
        (targets - forecasts)[:, :, None],  # [N, H, 1]
        scale=window_scale(inputs, seasonality, mask, normalizer),  # [N, 1, 1]
        seasonality=seasonality,
        normalizer=normalizer,
        split=split,
        data_fingerprint=data_fingerprint,
        calibrated_at=calibrated_at,
    )
