"""The M4 competition's accuracy measures: SMAPE, MASE, OWA and the naive benchmarks.

Per-series measures (`smape`, `mase`), the benchmarks `naive1`, `seasonal_naive` and
`naive2` (with the competition's seasonality test and classical decomposition), and
`evaluate_m4` / `evaluate_forecasts`, which average them over series the way M4 does.
Plain numpy, so a reader can check each one against the competition's R code.

References:
    Makridakis, Spiliotis, Assimakopoulos, "The M4 Competition: 100,000 time series and 61
    forecasting methods", International Journal of Forecasting 36(1), 2020; the competition's
    benchmark code, Mcompetitions/M4-methods `Benchmarks and Evaluation.R`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from llata_core.intervals import coverage, interval_score
from llata_core.shortterm.series import M4Dataset

log = logging.getLogger(__name__)


def _as_1d(values: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def smape(forecast: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float]) -> float:
    """Symmetric mean absolute percentage error of one series, in percent (0 to 200).

    `mean_t 200 * |F_t - A_t| / (|F_t| + |A_t|)`; a point where both are zero counts as 0
    (a perfect forecast), where the formula itself would give 0/0.

    References:
        Makridakis et al. (2020), M4 competition, eq. (1); M4-methods `smape_cal`.
    """
    f, a = _as_1d(forecast, "forecast"), _as_1d(actual, "actual")
    if f.shape != a.shape:
        raise ValueError(f"forecast {f.shape} and actual {a.shape} differ in length")
    denominator = np.abs(f) + np.abs(a)
    ratio = np.divide(np.abs(f - a), denominator, out=np.zeros_like(f), where=denominator != 0)
    return float(200.0 * ratio.mean())


def _mase_scale(insample: np.ndarray, seasonality: int) -> float:
    """Mean absolute in-sample error of the seasonal naive forecast (MASE's denominator)."""
    m = seasonality if insample.shape[0] > seasonality else 1
    if insample.shape[0] < 2:
        raise ValueError("MASE needs at least 2 in-sample points")
    return float(np.mean(np.abs(insample[m:] - insample[:-m])))


def mase(
    forecast: np.ndarray | Sequence[float],
    actual: np.ndarray | Sequence[float],
    insample: np.ndarray | Sequence[float],
    seasonality: int,
) -> float:
    """Mean absolute scaled error of one series.

    `mean_t |F_t - A_t| / mean_{t>m} |Y_t - Y_{t-m}|`, the forecast's mean absolute error
    scaled by the in-sample error of the seasonal naive forecast. When the in-sample
    series has no more than `m` points the scale uses `m = 1`.

    References:
        Hyndman & Koehler (2006), "Another look at measures of forecast accuracy";
        Makridakis et al. (2020), M4 competition, eq. (2); M4-methods `mase_cal`.

    Raises:
        ValueError: lengths differ, the in-sample series has fewer than 2 points, or its
            seasonal differences are all zero (the scale, hence MASE, is undefined).
    """
    f, a = _as_1d(forecast, "forecast"), _as_1d(actual, "actual")
    x = _as_1d(insample, "insample")
    if f.shape != a.shape:
        raise ValueError(f"forecast {f.shape} and actual {a.shape} differ in length")
    if seasonality < 1:
        raise ValueError(f"seasonality must be >= 1, got {seasonality}")
    scale = _mase_scale(x, seasonality)
    if scale == 0.0:
        raise ValueError("MASE is undefined: the in-sample seasonal differences are all zero")
    return float(np.mean(np.abs(f - a)) / scale)


def owa(smape_value: float, mase_value: float, naive2_smape: float, naive2_mase: float) -> float:
    """Overall weighted average: the mean of SMAPE and MASE relative to Naive2's.

    References:
        Makridakis et al. (2020), M4 competition, section 2.3.
    """
    if naive2_smape <= 0 or naive2_mase <= 0:
        raise ValueError(f"Naive2 SMAPE ({naive2_smape}) and MASE ({naive2_mase}) must be > 0")
    return ((smape_value / naive2_smape) + (mase_value / naive2_mase)) / 2.0


def naive1(insample: np.ndarray | Sequence[float], horizon: int) -> np.ndarray:
    """Naive forecast: the last observed value, repeated `horizon` times."""
    x = _as_1d(insample, "insample")
    return np.full(horizon, x[-1], dtype=np.float64)


def seasonal_naive(
    insample: np.ndarray | Sequence[float], horizon: int, seasonality: int
) -> np.ndarray:
    """Seasonal naive forecast: the last full season, repeated.

    Falls back to `naive1` when `seasonality` is 1 or the series is shorter than one season.

    References:
        M4-methods `naive_seasonal`.
    """
    x = _as_1d(insample, "insample")
    if seasonality <= 1 or x.shape[0] < seasonality:
        return naive1(x, horizon)
    return np.resize(x[-seasonality:], horizon).astype(np.float64)


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations at lags `1..max_lag` (mean-removed, denominator n)."""
    d = x - x.mean()
    denominator = float(d @ d)
    return np.array([float(d[k:] @ d[:-k]) / denominator for k in range(1, max_lag + 1)])


def seasonality_test(insample: np.ndarray | Sequence[float], seasonality: int) -> bool:
    """M4's 90% autocorrelation test: is the series seasonal with period `m`?

    Seasonal when `|acf_m| > 1.645 * sqrt((1 + 2 * sum_{k=1}^{m-1} acf_k^2) / n)`. As in
    the competition's R code a series with `m <= 1`, fewer than `3 m` points, or no
    variance is not seasonal. (R's `acf` also stops at lag `10 log10(n)`, which makes series
    with `n < 10^(m/10)` non-seasonal; that quirk is not reproduced. It cannot bite on the
    M4 data, whose Hourly series have at least 700 points.)

    References:
        Makridakis et al. (2020), M4 competition, section 2.4 (Naive2); M4-methods
        `SeasonalityTest` in `Benchmarks and Evaluation.R`.
    """
    x = _as_1d(insample, "insample")
    n = x.shape[0]
    if seasonality <= 1 or n < 3 * seasonality or float(np.ptp(x)) == 0.0:
        return False
    acf = _acf(x, seasonality)
    limit = 1.645 * math.sqrt((1.0 + 2.0 * float(np.sum(acf[:-1] ** 2))) / n)
    return bool(abs(acf[-1]) > limit)


def seasonal_indices(insample: np.ndarray | Sequence[float], seasonality: int) -> np.ndarray:
    """Multiplicative seasonal indices of classical decomposition.

    The trend is a centred moving average (a 2 x m MA for even `m`, an m-point MA for odd
    `m`); each index is the mean ratio of the series to its trend at that position in the
    season, normalised so the indices average to 1. Index `i` applies to the points at
    positions `t` with `t % m == i`, counted from the series' first point.

    References:
        R `stats::decompose(type = "multiplicative")`, used by M4-methods for Naive2.

    Raises:
        ValueError: fewer than two full seasons, or a non-positive trend value.
    """
    x = _as_1d(insample, "insample")
    m, n = seasonality, x.shape[0]
    if m < 2 or n < 2 * m:
        raise ValueError(f"decomposition needs seasonality >= 2 and 2 seasons; got m={m}, n={n}")
    half = m // 2
    weights = np.full(2 * half + 1, 1.0 / m)  # m taps for odd m, m + 1 for even m
    if m % 2 == 0:
        weights[[0, -1]] = 0.5 / m  # the 2 x m MA: half weight on the two end points
    trend = np.full(n, np.nan)
    trend[half : n - half] = np.convolve(x, weights, mode="valid")  # symmetric weights
    valid = trend[half : n - half]
    if (valid <= 0).any():
        raise ValueError("multiplicative decomposition needs a positive trend")
    ratio = x / trend
    figure = np.array([np.nanmean(ratio[i::m]) for i in range(m)])
    return figure / figure.mean()


def naive2(insample: np.ndarray | Sequence[float], horizon: int, seasonality: int) -> np.ndarray:
    """Naive2: the naive forecast of the seasonally adjusted series, reseasonalised.

    When `seasonality_test` finds the series seasonal, the series is divided by its
    multiplicative seasonal indices, the last adjusted value is repeated, and the forecast
    for position `t` is multiplied back by the index of `t % m`. Otherwise Naive2 is
    `naive1`. A multiplicative decomposition of a series with zero or negative values is
    meaningless, so such series also fall back to `naive1` (logged); M4 has none.

    References:
        Makridakis et al. (2020), M4 competition, section 2.4; M4-methods
        `Benchmarks and Evaluation.R` (`f3 <- naive(des_input, h=fh)$mean*SIout`).
    """
    x = _as_1d(insample, "insample")
    if not seasonality_test(x, seasonality):
        return naive1(x, horizon)
    if (x <= 0).any():
        log.warning("naive2: series is seasonal but has non-positive values; using naive1")
        return naive1(x, horizon)
    indices = seasonal_indices(x, seasonality)
    n = x.shape[0]
    last_adjusted = x[-1] / indices[(n - 1) % seasonality]
    return last_adjusted * indices[(n + np.arange(horizon)) % seasonality]


def evaluate_forecasts(
    forecasts: Sequence[np.ndarray] | np.ndarray,
    actuals: Sequence[np.ndarray] | np.ndarray,
    insamples: Sequence[np.ndarray],
    seasonality: int,
    *,
    ids: Sequence[str] | None = None,
) -> dict[str, float]:
    """SMAPE, MASE and OWA of many series' forecasts, averaged the way M4 does.

    SMAPE and MASE are computed per series and averaged over series with equal weight;
    OWA compares these averages with Naive2's averages on the same series.

    Args:
        forecasts: one `[horizon]` (or `[horizon, 1]`) forecast per series, or `[N, horizon]`.
        actuals: the true values, same shapes.
        insamples: each series' history before the forecast (MASE scale, Naive2 input).
        seasonality: the period `m`.
        ids: series ids for error messages.

    Returns:
        `smape`, `mase`, `owa`, `naive2_smape`, `naive2_mase`.

    Raises:
        ValueError: counts or lengths disagree, a forecast is not finite, or a series'
            MASE is undefined; the message names the series.
    """
    n = len(actuals)
    if len(forecasts) != n or len(insamples) != n:
        raise ValueError(
            f"{len(forecasts)} forecasts, {n} actuals and {len(insamples)} in-samples must agree"
        )
    names = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    scores = np.zeros((n, 4))  # smape, mase, naive2 smape, naive2 mase
    for i in range(n):
        try:
            actual = _as_1d(actuals[i], "actual")
            forecast = _as_1d(forecasts[i], "forecast")
            if not np.isfinite(forecast).all():
                raise ValueError("forecast has NaN or infinite values")
            insample = _as_1d(insamples[i], "insample")
            benchmark = naive2(insample, actual.shape[0], seasonality)
            scores[i] = (
                smape(forecast, actual),
                mase(forecast, actual, insample, seasonality),
                smape(benchmark, actual),
                mase(benchmark, actual, insample, seasonality),
            )
        except ValueError as err:
            raise ValueError(f"series {names[i]!r}: {err}") from err
    s, m, n2s, n2m = scores.mean(axis=0)
    return {
        "smape": float(s),
        "mase": float(m),
        "owa": owa(float(s), float(m), float(n2s), float(n2m)),
        "naive2_smape": float(n2s),
        "naive2_mase": float(n2m),
    }


def evaluate_m4(
    forecasts: Sequence[np.ndarray] | np.ndarray, dataset: M4Dataset
) -> dict[str, float]:
    """Score test forecasts for an M4 subset: SMAPE, MASE and OWA against Naive2.

    Args:
        forecasts: one `[horizon]` forecast per series, in `dataset.ids` order.
        dataset: the subset; its training series are the in-sample data.

    Returns:
        See `evaluate_forecasts`.
    """
    return evaluate_forecasts(
        forecasts, dataset.test, dataset.train, dataset.seasonality, ids=dataset.ids
    )


# --------------------------------------------------------------------------------------
# Interval metrics (M4: MSIS, ACD) and the benchmarks' textbook intervals
# --------------------------------------------------------------------------------------


def msis(
    y: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    insample: Sequence[np.ndarray],
    seasonality: int,
    level: float = 95.0,
) -> float:
    """Mean scaled interval score over series, the M4 competition's interval metric.

    Per series, the interval score of each step averaged over the horizon, divided by the
    series' in-sample seasonal-naive mean absolute error (MASE's scale, `m = 1` for a series
    no longer than its season); then the mean over series. Lower is better.

    Args:
        y, lower, upper: `[N, H]` actuals and bounds.
        insample: each series' history (the M4 training series).
        seasonality: the subset's period `m`.
        level: the interval's level in percent (M4 scores 95).

    References:
        Makridakis, Spiliotis & Assimakopoulos, "The M4 Competition: 100,000 time series and
        61 forecasting methods" (IJF 2020), eq. (5); Gneiting & Raftery (2007).
    """
    y, lower, upper = (np.asarray(a, dtype=np.float64) for a in (y, lower, upper))
    if not y.shape == lower.shape == upper.shape or y.ndim != 2:
        raise ValueError(f"y, lower, upper must be [series, horizon]: {y.shape}")
    if len(insample) != y.shape[0]:
        raise ValueError(f"{len(insample)} in-sample series for {y.shape[0]} forecasts")
    per_step = interval_score(y, lower, upper, level)  # [N, H]
    scaled = []
    for row, history in zip(per_step, insample, strict=True):
        h = np.asarray(history, dtype=np.float64)
        m = seasonality if h.shape[0] > seasonality else 1
        scale = float(np.mean(np.abs(h[m:] - h[:-m])))
        if scale == 0.0:
            raise ValueError("MSIS is undefined: a series' in-sample seasonal differences are 0")
        scaled.append(row.mean() / scale)
    return float(np.mean(scaled))


def absolute_coverage_difference(
    y: np.ndarray, lower: np.ndarray, upper: np.ndarray, level: float = 95.0
) -> float:
    """ACD: `|coverage - level / 100|` over every series and step (M4's second interval
    metric; 0 is perfect calibration)."""
    return abs(coverage(y, lower, upper) - level / 100.0)


def random_walk_intervals(
    history: np.ndarray, horizon: int, level: float, lag: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point forecast and normal prediction interval of the naive (`lag` 1) or seasonal
    naive (`lag` m) method, as R's `forecast::naive` / `snaive` make them.

    The forecast repeats the last `lag` values. The standard error of step `h` is
    `sigma * sqrt(k)`, `k` the number of seasons ahead (`ceil(h / lag)`; `h` for naive),
    with `sigma^2` the mean squared in-sample `lag`-difference; the bounds are
    `forecast +- z * se`. This is how the M4 guide's Naive1 intervals are made
    (`naive(insample, h, level = 95)`). A series no longer than `lag` uses `lag = 1`.

    References:
        Hyndman & Athanasopoulos, "Forecasting: Principles and Practice" (3rd ed.), 5.5,
        benchmark methods' prediction intervals; M4 Competitor's Guide (2018).

    Returns:
        `(point, lower, upper)`, each `[horizon]`.
    """
    x = np.asarray(history, dtype=np.float64)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"history must be 1-D with at least 2 points, got {x.shape}")
    lag = lag if x.shape[0] > lag else 1
    steps = np.arange(horizon)
    point = x[-lag:][steps % lag]
    sigma2 = float(np.mean((x[lag:] - x[:-lag]) ** 2))
    se = np.sqrt(sigma2 * (steps // lag + 1))
    z = NormalDist().inv_cdf(0.5 + level / 200.0)
    return point, point - z * se, point + z * se
