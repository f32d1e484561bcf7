"""Conformal intervals: the quantile rule, level checks, and coverage at nominal on data
whose noise is known (model tests: a least-squares linear forecaster, fixed seeds)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from llata_core.config import config_from_dict
from llata_core.data import Splits, make_splits, series_from_frame
from llata_core.evaluate import calibrate, evaluate
from llata_core.intervals import (
    ACI_LEVEL_RANGE,
    MAX_LEVELS,
    ConformalScores,
    IntervalAccumulator,
    bounds,
    calibrate_series,
    conformal_rank,
    coverage,
    interval_score,
    validate_levels,
    window_scale,
)
from llata_core.shortterm import absolute_coverage_difference, msis, random_walk_intervals

L, H = 24, 6


def test_conformal_rank_is_the_finite_sample_quantile() -> None:
    # (n + 1) * 0.8 = 8.000000000000002 in floats; the rank is exactly 8.
    assert conformal_rank(9, 80) == 8
    assert conformal_rank(19, 95) == 19
    assert conformal_rank(4, 80) == 4
    with pytest.raises(ValueError, match="95% interval needs at least 19 calibration windows"):
        conformal_rank(18, 95)
    with pytest.raises(ValueError, match="80% interval needs at least 4"):
        conformal_rank(3, 80)
    # The defining property: the smallest score q with #{scores <= q} >= (n + 1) p, i.e.
    # the k-th smallest, k = ceil((n + 1) p). (numpy's "higher" quantile at q = k / n
    # indexes q (n - 1), so it takes the (k + 1)-th: wider than the rule needs.)
    rng = np.random.default_rng(0)
    for n in (20, 57, 100, 999):
        raw = rng.exponential(size=(n, 3, 2))
        scores = ConformalScores.from_residuals(raw)
        for level in (50.0, 80.0, 90.0, 95.0, 97.5):
            if (n + 1) * level / 100 > n:  # 97.5% needs 39 windows
                with pytest.raises(ValueError, match="needs at least 39"):
                    scores.half_width(level)
                continue
            q = scores.half_width(level)  # [3, 2]
            at_most = (scores.scores <= q).sum(axis=0)
            below = (scores.scores < q).sum(axis=0)
            assert (at_most >= (n + 1) * level / 100).all()
            assert (below < (n + 1) * level / 100).all()
            assert np.isin(q, np.abs(raw).astype(np.float32)).all()


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ((0,), "outside"),
        ((100,), "outside"),
        ((-5,), "outside"),
        ((150.0,), "outside"),
        ((float("nan"),), "outside"),
        ((0.8,), "looks like a fraction"),
        ((80, 80.0), "given twice"),
        ((), "at least one"),
        (tuple(range(50, 50 + MAX_LEVELS + 1)), f"at most {MAX_LEVELS}"),
        (("80",), "not a number"),
        ((True,), "not a number"),
        ("80", "sequence of numbers"),
    ],
)
def test_bad_levels_raise_value_error(levels: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_levels(levels)


def test_good_levels_keep_their_order() -> None:
    assert validate_levels([95, 80]) == (95.0, 80.0)
    assert validate_levels((np.int64(90), 97.5)) == (90.0, 97.5)


def test_scores_reject_what_is_not_a_sorted_score_set() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ConformalScores(np.zeros((0, 2, 1), np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        ConformalScores(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="sorted"):
        ConformalScores(np.array([[[2.0]], [[1.0]]], np.float32))
    with pytest.raises(ValueError, match="finite and non-negative"):
        ConformalScores(np.array([[[-1.0]]], np.float32))


def test_coverage_and_interval_score_by_hand() -> None:
    y = np.array([0.0, 1.0, 2.0, 5.0])
    lo, hi = np.full(4, 0.5), np.full(4, 2.0)
    assert coverage(y, lo, hi) == 0.5  # bounds included
    # Width 1.5, plus 2 / alpha times the miss: alpha = 0.2 -> 10 * 0.5 and 10 * 3.
    np.testing.assert_allclose(interval_score(y, lo, hi, 80), [6.5, 1.5, 1.5, 31.5])


# ------------------------------------------------------------------ coverage on known noise


class LeastSquaresLinear(nn.Module):
    """A channel-wise linear forecaster `L -> H` fitted in closed form on training windows."""

    def __init__(self, splits: Splits):
        super().__init__()
        x = splits.train.values.unfold(0, L + H, 1).numpy()  # [N, M, L + H]
        n_channels = x.shape[1]
        weight = np.zeros((n_channels, L + 1, H))
        for m in range(n_channels):
            design = np.hstack([x[:, m, :L], np.ones((x.shape[0], 1))])  # [N, L + 1]
            weight[m] = np.linalg.lstsq(design, x[:, m, L:], rcond=None)[0]
        self.weight = nn.Parameter(torch.tensor(weight, dtype=torch.float32))  # [M, L + 1, H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight[:, :L], self.weight[:, L]  # [M, L, H], [M, H]
        return torch.einsum("blm,mlh->bhm", x, w) + b.T  # [B, H, M]


def _splits(values: np.ndarray) -> Splits:
    n_rows, n_channels = values.shape
    frame = pd.DataFrame(values, columns=[f"c{i}" for i in range(n_channels)])
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=n_rows, freq="h"))
    cfg = config_from_dict({"data": {"dataset": "generated", "input_size": L, "horizon": H}})
    return make_splits(series_from_frame(frame, cfg.data, origin="generated"), cfg.data)


def _standard_error(level: float, n_cal: int, n_test: int, inflation: float = 1.0) -> float:
    """Standard deviation of one step and channel's test coverage around the nominal level.

    Split conformal coverage given the calibration set is Beta-distributed with variance
    about p(1-p)/n_cal; counting it on n_test fresh values adds p(1-p)/n_test. `inflation`
    divides both counts for serially correlated residuals (n_eff = n / inflation).

    References:
        Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction" (2021),
        section 3.2 (the Beta distribution of coverage).
    """
    p = level / 100
    return math.sqrt(p * (1 - p) * inflation * (1 / n_cal + 1 / n_test))


def test_coverage_is_nominal_on_sine_plus_gaussian_noise() -> None:
    """Independent noise of known scale: every step and channel covers at its level."""
    rng = np.random.default_rng(2024)
    n_rows, sigma = 40_000, np.array([0.5, 2.0])
    t = np.arange(n_rows)[:, None]
    values = 3 * np.sin(2 * np.pi * t / 24 + np.array([0.0, 1.0])) + sigma * rng.normal(
        size=(n_rows, 2)
    )
    splits = _splits(values)
    model = LeastSquaresLinear(splits)
    scores = calibrate(model, splits.val)
    n_cal, n_test = scores.n, len(splits.test)
    assert n_cal == len(splits.val) > 3900 and n_test > 7900
    metrics = evaluate(model, splits.test, intervals=scores, levels=(80, 95))
    assert [m.level for m in metrics.intervals] == [80.0, 95.0]

    # Per step and channel, recomputed from the test windows.
    x = splits.test.values.unfold(0, L + H, 1)  # [N, M, L + H]
    with torch.no_grad():
        pred = model(x[:, :, :L].transpose(1, 2)).numpy()  # [N, H, M]
    y = x[:, :, L:].transpose(1, 2).numpy()
    for item in metrics.intervals:
        p = item.level / 100
        se = _standard_error(item.level, n_cal, n_test)
        q = scores.half_width(item.level)  # [H, M]
        cell = ((y >= pred - q) & (y <= pred + q)).mean(axis=0)  # [H, M]
        assert np.abs(cell - p).max() < 4 * se, (item.level, cell)
        # The pooled figure: at least nominal up to sampling error, and not wastefully above
        # it (conformal's upper bound is p + 1 / (n + 1)). Its cells share target values
        # (step h of one window is step h + 1 of the one before), so they are not averaged
        # down as independent draws would be.
        assert item.coverage == pytest.approx(cell.mean(), abs=1e-9)
        assert p - 4 * se < item.coverage < p + 1 / (n_cal + 1) + 4 * se
        assert item.winkler > item.width > 0
    # The widths are the noise's: the optimal forecaster's error is the Gaussian noise, so
    # the 80% half-width is 1.2816 sigma in data units (the fitted model adds a little).
    half = scores.half_width(80) * splits.scaler.std  # [H, M], data units
    ratio = half / (1.2816 * sigma)
    assert (ratio > 0.95).all() and (ratio < 1.12).all(), ratio


def test_per_step_widths_follow_the_growing_error_of_an_ar1_series() -> None:
    """AR(1) noise: the error variance of step h is (1 - phi^2h) / (1 - phi^2) times step
    1's, so one width for all steps would over-cover the first steps and under-cover the
    last; per-step scores cover each step."""
    rng = np.random.default_rng(7)
    n_rows, phi = 40_000, 0.8
    eps = rng.normal(size=(n_rows, 1))
    values = np.zeros((n_rows, 1))
    for i in range(1, n_rows):
        values[i] = phi * values[i - 1] + eps[i]
    splits = _splits(values)
    model = LeastSquaresLinear(splits)
    scores = calibrate(model, splits.val)
    half = scores.half_width(80)[:, 0]  # [H]
    steps = np.arange(1, H + 1)
    theory = np.sqrt((1 - phi ** (2 * steps)) / (1 - phi**2))
    np.testing.assert_allclose(half / half[0], theory, rtol=0.1)

    metrics = evaluate(model, splits.test, intervals=scores, levels=(80,))
    # Consecutive windows share all but one innovation of a step's error: the effective
    # sample is about (1 - phi) / (1 + phi) of the windows, hence the inflation.
    se = _standard_error(80, scores.n, len(splits.test), inflation=(1 + phi) / (1 - phi))
    assert abs(metrics.intervals[0].coverage - 0.8) < 4 * se

    # One pooled width (the 80% quantile of all steps' scores) over-covers the first step
    # and under-covers the last, on the same test values.
    pooled = np.quantile(scores.scores[:, :, 0], 0.8)
    x = splits.test.values.unfold(0, L + H, 1)
    with torch.no_grad():
        pred = model(x[:, :, :L].transpose(1, 2)).numpy()[:, :, 0]
    err = np.abs(x[:, 0, L:].numpy() - pred)  # [N, H]
    per_step = (err <= half).mean(axis=0)
    assert np.abs(per_step - 0.8).max() < 4 * se
    assert (err[:, 0] <= pooled).mean() > per_step[0] + 0.05
    assert (err[:, -1] <= pooled).mean() < per_step[-1] - 0.03


def test_accumulator_matches_one_pass_over_all_values() -> None:
    rng = np.random.default_rng(1)
    scores = ConformalScores.from_residuals(rng.normal(size=(200, 4, 3)))
    pred, y = rng.normal(size=(50, 4, 3)), rng.normal(size=(50, 4, 3))
    acc = IntervalAccumulator(scores, (80, 95))
    for start in range(0, 50, 16):
        acc.add(pred[start : start + 16], y[start : start + 16])
    for item in acc.result():
        q = scores.half_width(item.level)
        assert item.coverage == pytest.approx(coverage(y, pred - q, pred + q))
        assert item.width == pytest.approx(2 * q.mean())
        want = interval_score(y, pred - q, pred + q, item.level).mean()
        assert item.winkler == pytest.approx(want)
        assert item.n_values == y.size
    with pytest.raises(ValueError, match="needs at least"):
        IntervalAccumulator(ConformalScores.from_residuals(rng.normal(size=(10, 4, 3))), (95,))


# ------------------------------------------------------- panels of many series (M4)


def test_window_scale_is_the_seasonal_naive_mae_of_the_observed_points() -> None:
    x = np.array(
        [
            [1.0, 2.0, 3.0, 1.0, 2.0, 4.0],  # seasonal diffs (m = 3): 0, 0, 1
            [1.0, 2.0, 3.0, 1.0, 2.0, 3.0],  # seasonal diffs all 0 -> first differences
            [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],  # flat: 1% of the level
            [0.0, 0.0, 2.0, 4.0, 3.0, 6.0],  # left padding: only pairs inside the mask
        ]
    )[:, :, None]
    mask = np.ones_like(x)
    mask[3, :2] = 0
    scale = window_scale(x, 3, mask)
    assert scale.shape == (4, 1, 1)
    np.testing.assert_allclose(scale.ravel(), [1 / 3, 6 / 5, 0.05, 4.0])
    with pytest.raises(ValueError, match=r"\[batch, steps, channels\]"):
        window_scale(x[0], 3)


def test_normalised_scores_round_trip_and_insist_on_a_scale(tmp_path) -> None:
    rng = np.random.default_rng(3)
    residuals = rng.normal(size=(30, 4, 1))
    scale = rng.uniform(1, 100, size=(30, 1, 1))
    scores = ConformalScores.from_residuals(residuals * scale, scale=scale, seasonality=24)
    assert (scores.normalizer, scores.seasonality) == ("seasonal-mae", 24)
    np.testing.assert_allclose(
        scores.scores, np.sort(np.abs(residuals), axis=0).astype(np.float32), rtol=1e-6
    )
    scores.save(tmp_path / "s.safetensors")
    back = ConformalScores.load(tmp_path / "s.safetensors")
    assert (back.normalizer, back.seasonality) == ("seasonal-mae", 24)
    assert back.describe()["normalizer"] == "seasonal-mae"
    point = np.zeros((2, 4, 1))
    with pytest.raises(ValueError, match="need each input window's scale"):
        bounds(point, back, (80,))
    lower, upper = bounds(point, back, (80,), np.array([[[1.0]], [[10.0]]]))
    np.testing.assert_allclose(upper[80][1], 10 * upper[80][0])
    np.testing.assert_allclose(lower[80], -upper[80])
    absolute = ConformalScores.from_residuals(residuals)
    with pytest.raises(ValueError, match="take no window scale"):
        bounds(point, absolute, (80,), np.ones((2, 1, 1)))
    with pytest.raises(ValueError, match="does not fit"):
        ConformalScores.from_residuals(residuals, scale=np.ones((30, 1, 2)))


def test_panel_coverage_is_nominal_across_series_on_unrelated_scales() -> None:
    """Series whose noise is proportional to their own scale (1 to 10,000): one set of
    normalised scores covers each series at the nominal level, where absolute scores
    would be far too wide for the small series and too narrow for the large ones."""
    rng = np.random.default_rng(2024)
    n_series, length, horizon, m = 4000, 96, 12, 12
    level_of = 10 ** rng.uniform(0, 4, size=n_series)  # [N]
    t = np.arange(length + 2 * horizon)
    season = np.sin(2 * np.pi * t / m)
    noise = rng.normal(size=(n_series, t.size))
    y = level_of[:, None] * (5 + season + 0.3 * noise)  # [N, T]
    truth = level_of[:, None] * (5 + season)  # the best forecast: the noise-free pattern

    def block(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        inputs = y[:, start - length : start, None]  # [N, L, 1]
        return inputs, truth[:, start : start + horizon], y[:, start : start + horizon]

    cal_in, cal_pred, cal_y = block(length)
    test_in, test_pred, test_y = block(length + horizon)
    half = n_series // 2
    scores = calibrate_series(cal_pred[:half], cal_y[:half], cal_in[:half], m)
    scale = window_scale(test_in[half:], m)
    lower, upper = bounds(test_pred[half:, :, None], scores, (80, 95), scale)
    for level in (80, 95):
        p = level / 100
        se = math.sqrt(p * (1 - p) * (1 / half + 1 / (half * horizon)))
        got = coverage(test_y[half:], lower[level][:, :, 0], upper[level][:, :, 0])
        assert abs(got - p) < 4 * se + 1 / (half + 1), (level, got)
        # As good on the smallest series as on the largest.
        small, large = level_of[half:] < 10, level_of[half:] > 1000
        for part in (small, large):
            got = coverage(test_y[half:][part], lower[level][part, :, 0], upper[level][part, :, 0])
            assert abs(got - p) < 0.03, (level, got)


def test_naive_intervals_follow_the_textbook_formulas() -> None:
    x = np.array([1.0, 2, 4, 3, 5, 6, 5, 7])
    point, lower, upper = random_walk_intervals(x, 4, 95)
    sigma = math.sqrt(np.mean(np.diff(x) ** 2))  # 16 / 7
    z = 1.959963984540054
    np.testing.assert_allclose(point, 7.0)
    np.testing.assert_allclose(upper - point, z * sigma * np.sqrt([1, 2, 3, 4]))
    np.testing.assert_allclose(point - lower, upper - point)
    # Seasonal naive: the last season repeated; the error grows once per season ahead.
    point, lower, upper = random_walk_intervals(x, 5, 80, lag=3)
    np.testing.assert_allclose(point, [6, 5, 7, 6, 5])
    sigma = math.sqrt(np.mean((x[3:] - x[:-3]) ** 2))
    z = 1.2815515655446004
    np.testing.assert_allclose(upper - point, z * sigma * np.sqrt([1, 1, 1, 2, 2]))


def test_msis_and_acd_by_hand() -> None:
    y = np.array([[10.0, 12.0], [100.0, 130.0]])
    lower = np.array([[9.0, 9.0], [90.0, 90.0]])
    upper = np.array([[11.0, 11.0], [110.0, 110.0]])
    insample = [np.array([1.0, 3.0, 5.0]), np.array([10.0, 30.0, 50.0])]  # scales 2 and 20
    # Series 1: widths 2, 2 and a miss of 1 at a = 0.05 -> (2 + 2 + 40) / 2 / 2 = 11.
    # Series 2: widths 20, 20 and a miss of 20 -> (20 + 20 + 800) / 2 / 20 = 21.
    assert msis(y, lower, upper, insample, seasonality=1, level=95) == pytest.approx(16.0)
    assert absolute_coverage_difference(y, lower, upper, 95) == pytest.approx(0.45)
    with pytest.raises(ValueError, match="in-sample seasonal differences are 0"):
        msis(y, lower, upper, [np.ones(3), insample[1]], seasonality=1)


@pytest.mark.parametrize("scaled", [False, True])
def test_bounds_of_several_levels_are_each_levels_own(scaled: bool) -> None:
    """All levels are computed in one broadcast; each must equal point -+ its own half-width
    (times the window's scale), for a batch and for a horizon shorter than the calibrated."""
    rng = np.random.default_rng(11)
    residuals = rng.normal(size=(40, 6, 3))
    scale = rng.uniform(1, 5, size=(40, 1, 3))
    scores = ConformalScores.from_residuals(residuals, **({"scale": scale} if scaled else {}))
    point = rng.normal(size=(5, 4, 3))  # [B, h < calibrated 6, M]
    window = rng.uniform(1, 5, size=(5, 1, 3)) if scaled else None
    levels = (95.0, 50.0, 80.0)
    lower, upper = bounds(point, scores, levels, window)
    assert list(lower) == list(upper) == list(levels)
    for level in levels:
        q = scores.half_width(level)[:4] * (window if window is not None else 1.0)
        np.testing.assert_array_equal(lower[level], point - q)
        np.testing.assert_array_equal(upper[level], point + q)
    assert bounds(point, scores, (), window) == ({}, {})  # no level answerable: no bounds


def test_window_scale_rmse_is_the_root_mean_squared_seasonal_difference() -> None:
    x = np.array(
        [
            [1.0, 2.0, 3.0, 1.0, 2.0, 5.0],  # seasonal diffs (m = 3): 0, 0, 2
            [5.0, 5.0, 5.0, 5.0, 5.0, 5.0],  # flat: 1% of the level, as for the MAE
        ]
    )[:, :, None]
    rmse = window_scale(x, 3, None, "seasonal-rmse")
    np.testing.assert_allclose(rmse.ravel(), [math.sqrt(4 / 3), 0.05])
    np.testing.assert_allclose(window_scale(x, 3).ravel(), [2 / 3, 0.05])  # MAE unchanged
    with pytest.raises(ValueError, match="no window scale"):
        window_scale(x, 3, None, "none")


def test_rmse_scores_round_trip_and_answer_with_the_rmse_scale(tmp_path) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 48, 1)) * rng.uniform(1, 100, size=(30, 1, 1))  # [n, L, 1]
    scale = window_scale(x, 24, None, "seasonal-rmse")
    residuals = rng.normal(size=(30, 4, 1)) * scale
    scores = ConformalScores.from_residuals(
        residuals, scale=scale, seasonality=24, normalizer="seasonal-rmse"
    )
    scores.save(tmp_path / "s.safetensors")
    back = ConformalScores.load(tmp_path / "s.safetensors")
    assert (back.normalizer, back.seasonality) == ("seasonal-rmse", 24)
    assert back.describe()["normalizer"] == "seasonal-rmse"
    np.testing.assert_array_equal(back.scores, scores.scores)
    np.testing.assert_allclose(back.scale_of(x), scale)
    assert not np.allclose(back.scale_of(x), window_scale(x, 24))  # not the MAE
    with pytest.raises(ValueError, match="normalizer is 'none'"):
        ConformalScores.from_residuals(residuals, scale=scale, normalizer="none")
    with pytest.raises(ValueError, match="seasonal-rmse scores need"):
        ConformalScores.from_residuals(residuals, normalizer="seasonal-rmse")


def test_scores_written_before_rmse_load_and_answer_as_before(tmp_path) -> None:
    """A `seasonal-mae` file exactly as the code before `seasonal-rmse` wrote it (same
    metadata keys and values) still loads and scales by each window's seasonal MAE."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    sorted_scores = np.sort(np.abs(rng.normal(size=(40, 4, 1))), axis=0).astype(np.float32)
    metadata = {
        "format": "1",
        "method": "split-conformal-absolute-residual",
        "normalizer": "seasonal-mae",
        "seasonality": "24",
        "split": "val",
        "data_fingerprint": "abc",
        "calibrated_at": "2026-12-02T00:00:00Z",
    }
    save_file({"scores": sorted_scores}, str(tmp_path / "old.safetensors"), metadata=metadata)
    old = ConformalScores.load(tmp_path / "old.safetensors")
    assert old.normalizer == "seasonal-mae"
    x = rng.normal(size=(2, 48, 1))
    point = np.zeros((2, 4, 1))
    _, upper = bounds(point, old, (80,), old.scale_of(x))
    np.testing.assert_allclose(upper[80], old.half_width(80)[None] * window_scale(x, 24))


def test_short_term_calibration_covers_skewed_noise_at_nominal() -> None:
    """The short-term calibration (`calibrate_forecasts` with the default scheme: the last
    three training horizons of each series, `seasonal-rmse` scale) around the noise-free
    forecast of series whose noise is skewed (centred exponential, all its tail above the
    forecast) and whose scales are unrelated: test coverage is nominal within sampling
    error at 80 % and 95 %."""
    from llata_core.shortterm import (
        ShortTermSplits,
        ShortTermWindows,
        calibrate_forecasts,
        identity_scaler,
        interval_bounds,
    )

    rng = np.random.default_rng(11)
    n_series, horizon, m, length = 2000, 12, 12, 120
    level_of = 10 ** rng.uniform(0, 3, size=n_series)  # [N]
    t = np.arange(length + horizon)
    pattern = 5 + np.sin(2 * np.pi * t / m)
    noise = rng.exponential(size=(n_series, t.size)) - 1.0  # mean 0, skewed
    y = level_of[:, None] * (pattern + 0.3 * noise)  # [N, T]
    truth = level_of[:, None] * pattern
    windows = ShortTermWindows(
        list(y[:, :length]), horizon, seasonality=m, test=list(y[:, length:]), input_size=48
    )
    splits = ShortTermSplits(
        windows, windows.training_dataset(), identity_scaler(), "file", "generated", ""
    )
    forecasts = [truth[:, length - k * horizon : length - (k - 1) * horizon] for k in (1, 2, 3)]
    scores = calibrate_forecasts(forecasts, splits)
    assert (scores.normalizer, scores.n) == ("seasonal-rmse", 3 * n_series)
    lower, upper = interval_bounds(truth[:, length:], scores, splits, (80, 95))
    test_y = y[:, length:]
    for level in (80, 95):
        p = level / 100
        # Series-level correlation (one scale per series) widens the spread; 5 binomial
        # standard errors over series leave room for it.
        se = math.sqrt(p * (1 - p) / n_series)
        got = coverage(test_y, lower[level], upper[level])
        assert abs(got - p) < 5 * se, (level, got)
        # The skew shows in where the misses fall: more above the upper bound than below
        # the lower one (symmetric scores cover in total, not in each tail).
        above = np.mean(test_y > upper[level]) / max(np.mean(test_y < lower[level]), 1e-9)
        assert above > 1.5, (level, above)


def test_short_term_calibration_follows_the_splits_interval_scheme() -> None:
    """`calibrate_forecasts` makes the scores `splits.intervals` names: a Weekly-like scheme
    (`seasonal-mae`, one window per series) stores the held-out horizon's absolute
    residuals over each input window's seasonal MAE, and takes one window, not three."""
    from llata_core.config import ShortTermIntervals
    from llata_core.shortterm import (
        ShortTermSplits,
        ShortTermWindows,
        benchmark_calibration_forecasts,
        calibrate_forecasts,
        identity_scaler,
    )

    rng = np.random.default_rng(3)
    series = [50 + np.cumsum(rng.normal(size=60)) * (i + 1) for i in range(30)]
    windows = ShortTermWindows(series, 5, seasonality=1, input_size=10)
    mae = ShortTermIntervals(normalizer="seasonal-mae", calibration_horizons=1)
    splits = ShortTermSplits(
        windows, windows.training_dataset(), identity_scaler(), "file", "generated", "", mae
    )
    forecasts = benchmark_calibration_forecasts("naive1", splits)
    assert len(forecasts) == 1
    scores = calibrate_forecasts(forecasts, splits)
    assert (scores.normalizer, scores.n, scores.seasonality) == ("seasonal-mae", 30, 1)
    inputs = windows.validation_inputs()
    scale = window_scale(inputs.insample.numpy(), 1, inputs.insample_mask.numpy())  # [N, 1, 1]
    by_hand = np.abs(windows.validation_targets() - forecasts[0]) / scale[:, :, 0]  # [N, H]
    rank = conformal_rank(30, 80)
    np.testing.assert_allclose(scores.half_width(80)[:, 0], np.sort(by_hand, axis=0)[rank - 1])
    with pytest.raises(ValueError, match="3 calibration windows of forecasts; these series have 1"):
        calibrate_forecasts([forecasts[0]] * 3, splits)
    default = dataclasses.replace(splits, intervals=ShortTermIntervals())
    three = calibrate_forecasts(benchmark_calibration_forecasts("naive1", default), default)
    assert (three.normalizer, three.n) == ("seasonal-rmse", 90)


def test_calibration_windows_step_back_one_horizon_at_a_time() -> None:
    from llata_core.shortterm import ShortTermWindows

    series = [np.arange(10.0), np.arange(100.0, 105.0)]  # the second: two horizons + 1
    w = ShortTermWindows(series, 2)
    np.testing.assert_array_equal(w.calibration_targets(1), w.validation_targets())
    assert [len(h) for h in w.calibration_histories(1)] == [8, 3]
    np.testing.assert_array_equal(w.calibration_targets(2), [[6.0, 7.0], [101.0, 102.0]])
    np.testing.assert_array_equal(w.calibration_targets(3), [[4.0, 5.0]])  # too short: left out
    assert [len(h) for h in w.calibration_histories(3)] == [4]
    assert w.calibration_inputs(3).insample.shape == (1, 4, 1)


def test_series_too_short_for_older_windows_calibrate_on_what_they_have() -> None:
    """Series of `horizon + 1 .. 2 * horizon` training points have no window before the
    held-out one: calibration uses that one alone instead of failing."""
    from llata_core.shortterm import (
        ShortTermSplits,
        ShortTermWindows,
        benchmark_calibration_forecasts,
        calibrate_forecasts,
        calibration_backs,
        identity_scaler,
    )

    rng = np.random.default_rng(0)
    series = [rng.normal(size=n) + 10 for n in (5, 6, 7, 8)]  # horizon 4: 5 to 8 points
    windows = ShortTermWindows(series, 4, seasonality=2, input_size=4)
    splits = ShortTermSplits(
        windows, windows.training_dataset(), identity_scaler(), "file", "generated", ""
    )
    assert list(calibration_backs(windows, 3)) == [1]
    scores = calibrate_forecasts(benchmark_calibration_forecasts("naive1", splits), splits)
    assert scores.n == 4
    longer = ShortTermWindows([*series, np.arange(20.0)], 4, seasonality=2, input_size=4)
    assert list(calibration_backs(longer, 3)) == [1, 2, 3]
    assert list(calibration_backs(longer, 2)) == [1, 2]


# Adaptive conformal inference on the daily rolling recalibration (the intervals benchmark's
# `aci-30d` scheme): residuals generated with a known variance, one window per hour.
PER_DAY = 24


def _stream(rng: np.random.Generator, days: int, sigma: float, horizon: int = 8) -> np.ndarray:
    return sigma * rng.normal(size=(days * PER_DAY, horizon, 2))  # [n, H, M]


def _rolling_as_before(val: np.ndarray, test: np.ndarray, days: int) -> dict[float, np.ndarray]:
    """The rolling scheme as the benchmark computed it before ACI existed."""
    horizon, k = test.shape[1], days * PER_DAY
    stream = np.abs(np.concatenate([val, test]))
    half = {lv: np.empty_like(test) for lv in (80.0, 95.0)}
    for start in range(0, len(test), PER_DAY):
        known = len(val) + max(start - horizon + 1, 0)
        window = stream[max(known - k, 0) : known]
        for lv in half:
            q = conformal_rank(len(window), lv)
            half[lv][start : start + PER_DAY] = np.partition(window, q - 1, axis=0)[q - 1]
    return half


def test_aci_with_gamma_zero_is_the_rolling_scheme_exactly() -> None:
    from benchmarks.intervals.coverage import aci_levels

    rng = np.random.default_rng(0)
    val, test = _stream(rng, 40, 1.0), _stream(rng, 30, 1.5)
    half, issued = aci_levels(val, test, PER_DAY, 30, gamma=0.0)
    before = _rolling_as_before(val, test, 30)
    for lv in (80.0, 95.0):
        np.testing.assert_array_equal(half[lv], before[lv])
        assert (issued[lv] == lv).all()


def test_aci_recovers_nominal_coverage_after_a_variance_step_where_rolling_does_not() -> None:
    from benchmarks.intervals.coverage import aci_levels

    rng = np.random.default_rng(1)
    val = _stream(rng, 60, 1.0)
    test = np.concatenate([_stream(rng, 20, 1.0), _stream(rng, 100, 2.0)])
    rolling, _ = aci_levels(val, test, PER_DAY, 30, gamma=0.0)
    np.testing.assert_array_equal(
        aci_levels(val, test, PER_DAY, 30, 0.0, 7 * PER_DAY)[0][95], rolling[95]
    )
    # Fed back per arrived window, or as production does (a trial on the newest week).
    for holdout in (None, 7 * PER_DAY):
        aci, issued = aci_levels(val, test, PER_DAY, 30, 0.05, holdout)
        # 46 080 independent indicators per level: a standard error of 0.1-0.2 points.
        for lv, gap in ((80.0, 0.02), (95.0, 0.01)):
            assert coverage(test, -rolling[lv], rolling[lv]) < lv / 100 - 2 * gap
            assert abs(coverage(test, -aci[lv], aci[lv]) - lv / 100) < gap
            assert issued[lv].max() > lv  # the level rose while the intervals under-covered


def test_aci_feedback_waits_for_the_targets_and_the_level_stays_in_range() -> None:
    from benchmarks.intervals.coverage import aci_levels

    rng = np.random.default_rng(2)
    horizon = 2 * PER_DAY  # a window's target is known two days after it is issued
    val = _stream(rng, 30, 1.0, horizon)
    test = _stream(rng, 30, 10.0, horizon)  # every interval misses at first
    half, issued = aci_levels(val, test, PER_DAY, 30, gamma=0.5)
    for lv in (80.0, 95.0):
        # Days 0 and 1 are issued before any test target is known: the nominal level.
        assert (issued[lv][:horizon] == lv).all()
        assert issued[lv][horizon] > lv
        assert ACI_LEVEL_RANGE[0] <= issued[lv].min() and issued[lv].max() <= ACI_LEVEL_RANGE[1]
    # At level 100 the half-width is the largest score of the rolling window.
    at_top = np.flatnonzero(issued[95.0] == 100.0)
    assert at_top.size
    start = int(at_top[0])
    known = len(val) + start - horizon + 1
    window = np.abs(np.concatenate([val, test]))[known - 30 * PER_DAY : known]
    np.testing.assert_array_equal(half[95.0][start], window.max(axis=0))


def test_aci_gamma_is_chosen_on_validation_by_the_larger_miss() -> None:
    from benchmarks.intervals.coverage import ACI_GAMMAS, choose_gamma

    rng = np.random.default_rng(3)
    stationary = _stream(rng, 90, 1.0)
    drifting = np.concatenate([_stream(rng, 30, 1.0), _stream(rng, 60, 2.0)])
    calm, shifted = choose_gamma(stationary, PER_DAY), choose_gamma(drifting, PER_DAY)
    for choice in (calm, shifted):
        grid = choice["validation"]
        assert set(grid) == {f"{g:g}" for g in ACI_GAMMAS}
        misses = {
            g: max(abs(c["coverage_80"] - 0.80), abs(c["coverage_95"] - 0.95))
            for g, c in grid.items()
        }
        assert misses[f"{choice['gamma']:g}"] == min(misses.values())
    assert shifted["gamma"] > calm["gamma"]
    with pytest.raises(ValueError, match="do not exceed"):
        choose_gamma(_stream(rng, 30, 1.0), PER_DAY)


def test_aci_step_moves_the_level_by_the_miss_rate_and_stays_in_range() -> None:
    from llata_core.intervals import aci_step

    # 95%: a 15% miss rate raises the level by 100 * 0.1 * (0.15 - 0.05) = 1 point.
    assert aci_step(95.0, 95.0, 0.15, 0.1) == pytest.approx(96.0)
    assert aci_step(96.0, 95.0, 0.0, 0.1) == pytest.approx(95.5)  # no misses: lower
    assert aci_step(83.0, 80.0, 0.2, 0.1) == 83.0  # at the nominal miss rate: unchanged
    assert aci_step(99.9, 95.0, 1.0, 0.5) == ACI_LEVEL_RANGE[1]
    assert aci_step(51.0, 80.0, 0.0, 0.5) == ACI_LEVEL_RANGE[0]
    assert aci_step(97.3, 95.0, 1.0, 0.0) == 97.3  # gamma 0: ACI off


def test_scores_read_a_nominal_level_at_its_effective_level(tmp_path: Path) -> None:
    from llata_core.intervals import effective_rank

    rng = np.random.default_rng(4)
    plain = ConformalScores.from_residuals(rng.normal(size=(99, 4, 2)))
    adapted = plain.with_levels({80.0: 90.0, 95.0: 100.0})
    np.testing.assert_array_equal(adapted.half_width(80), plain.half_width(90))
    np.testing.assert_array_equal(adapted.half_width(95), plain.scores[-1])  # beyond n: max
    np.testing.assert_array_equal(adapted.half_width(50), plain.half_width(50))  # no state
    assert (effective_rank(99, 100.0), effective_rank(99, 90.0)) == (99, conformal_rank(99, 90))
    # The nominal level still needs its windows, whatever its effective level.
    with pytest.raises(ValueError, match="95% interval needs at least 19"):
        ConformalScores(plain.scores[:10]).with_levels({95.0: 60.0}).half_width(95)

    # Save / load keeps the state; scores without it load with none and read as before.
    adapted.save(tmp_path / "aci.safetensors")
    plain.save(tmp_path / "plain.safetensors")
    loaded = ConformalScores.load(tmp_path / "aci.safetensors")
    assert loaded.effective_levels == {80.0: 90.0, 95.0: 100.0}
    np.testing.assert_array_equal(loaded.half_width(80), adapted.half_width(80))
    assert "effective_levels" in loaded.describe()
    old = ConformalScores.load(tmp_path / "plain.safetensors")
    assert old.effective_levels == {} and "effective_levels" not in old.describe()
    np.testing.assert_array_equal(old.half_width(80), plain.half_width(80))

    for bad in ({80.0: 40.0}, {80.0: 100.5}, {0.8: 90.0}):
        with pytest.raises(ValueError):
            plain.with_levels(bad)
