"""Tests of the M4 short-term setting: parsing, windows, metrics, benchmarks and losses.

Metric expectations are written out as arithmetic on the literal inputs, so a reader can
check each one by hand against the M4 definitions.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from llata_core.data import DataError
from llata_core.shortterm import (
    M4Dataset,
    MASELoss,
    ShortTermSample,
    ShortTermWindows,
    SMAPELoss,
    evaluate_forecasts,
    evaluate_m4,
    m4_mirror_paths,
    mase,
    mase_loss,
    naive1,
    naive2,
    owa,
    read_long_format,
    read_m4,
    seasonal_indices,
    seasonal_naive,
    seasonality_test,
    smape,
    smape_loss,
)

# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def test_smape_hand_computed() -> None:
    assert smape([2.0], [1.0]) == pytest.approx(200 * 1 / 3)
    assert smape([-1.0], [1.0]) == pytest.approx(200 * 2 / 2)  # the 200 ceiling
    # 0/0 counts as a perfect point: mean(0, 200 * 2 / 4)
    assert smape([0.0, 1.0], [0.0, 3.0]) == pytest.approx((0 + 200 * 2 / 4) / 2)
    assert smape([5.0, 5.0], [5.0, 5.0]) == 0.0


def test_smape_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="differ"):
        smape([1.0, 2.0], [1.0])


def test_mase_seasonality_1() -> None:
    insample = [1.0, 2.0, 4.0, 7.0]  # |diffs| 1, 2, 3 -> scale 2
    assert mase([8.0, 10.0], [9.0, 9.0], insample, 1) == pytest.approx(((1 + 1) / 2) / 2)


def test_mase_seasonality_2() -> None:
    insample = [1.0, 5.0, 2.0, 6.0, 4.0]  # |2-1|, |6-5|, |4-2| -> scale 4/3
    expected = ((2 + 1) / 2) / ((1 + 1 + 2) / 3)
    assert mase([7.0, 3.0], [5.0, 4.0], insample, 2) == pytest.approx(expected)
    assert expected == pytest.approx(1.125)


def test_mase_short_insample_falls_back_to_lag_1() -> None:
    # 2 points cannot give a lag-4 difference: the scale uses m = 1, |5 - 3| = 2
    assert mase([6.0], [5.0], [3.0, 5.0], 4) == pytest.approx(1 / 2)


def test_mase_flat_insample_is_an_error() -> None:
    with pytest.raises(ValueError, match="undefined"):
        mase([1.0], [2.0], [3.0, 3.0, 3.0], 1)


def test_owa_hand_computed() -> None:
    assert owa(10.0, 2.0, 20.0, 4.0) == pytest.approx((10 / 20 + 2 / 4) / 2)
    assert owa(15.0, 3.0, 10.0, 2.0) == pytest.approx((15 / 10 + 3 / 2) / 2)
    with pytest.raises(ValueError):
        owa(1.0, 1.0, 0.0, 1.0)


def test_naive1_and_seasonal_naive() -> None:
    np.testing.assert_array_equal(naive1([1.0, 2.0, 3.0], 2), [3.0, 3.0])
    np.testing.assert_array_equal(
        seasonal_naive([1.0, 2.0, 3.0, 4.0, 5.0], 5, 2), [4.0, 5.0, 4.0, 5.0, 4.0]
    )
    # shorter than one season, or m = 1: the naive forecast
    np.testing.assert_array_equal(seasonal_naive([1.0, 2.0], 3, 4), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(seasonal_naive([1.0, 2.0], 2, 1), [2.0, 2.0])


def test_seasonality_test_formula_at_the_boundary() -> None:
    # [1, 3] repeated: deviations alternate -1, +1; acf_1 = -(n-1)/n, acf_2 = (n-2)/n.
    six = [1.0, 3.0] * 3
    limit_six = 1.645 * math.sqrt((1 + 2 * (5 / 6) ** 2) / 6)  # = 1.038 > acf_2 = 4/6
    assert limit_six > 4 / 6
    assert seasonality_test(six, 2) is False
    twelve = [1.0, 3.0] * 6
    limit_twelve = 1.645 * math.sqrt((1 + 2 * (11 / 12) ** 2) / 12)  # = 0.777 < 10/12
    assert limit_twelve < 10 / 12
    assert seasonality_test(twelve, 2) is True
    # fewer than 3 seasons, m = 1 and a flat series are never seasonal
    assert seasonality_test([1.0, 3.0] * 2, 2) is False
    assert seasonality_test(twelve, 1) is False
    assert seasonality_test([2.0] * 12, 2) is False


def _reference_seasonality_test(x: np.ndarray, m: int) -> bool:
    """The M4 test written out with loops: |acf_m| > 1.645 sqrt((1 + 2 sum_{k<m} acf_k^2) / n)."""
    n, mean = len(x), sum(x) / len(x)
    denominator = sum((v - mean) ** 2 for v in x)
    acf = [
        sum((x[t] - mean) * (x[t - k] - mean) for t in range(k, n)) / denominator
        for k in range(1, m + 1)
    ]
    return abs(acf[m - 1]) > 1.645 * math.sqrt((1 + 2 * sum(a * a for a in acf[: m - 1])) / n)


def test_seasonality_test_agrees_with_the_written_out_formula_near_the_boundary() -> None:
    rng = np.random.default_rng(5)
    decisions = []
    for _ in range(300):
        m = int(rng.integers(2, 7))
        n = int(rng.integers(3 * m, 6 * m))
        x = rng.normal(size=n) + rng.uniform(0, 4) * np.resize(rng.normal(size=m), n)
        decision = seasonality_test(x, m)
        assert decision == _reference_seasonality_test(x, m)
        decisions.append(decision)
    assert 0.2 < np.mean(decisions) < 0.8  # both outcomes are exercised


def test_seasonal_indices_use_the_centred_2xm_moving_average() -> None:
    x = [2.0, 4.0, 4.0, 8.0, 6.0, 12.0]
    # 2x2 MA weights (1/4, 1/2, 1/4): trend at t=1..4 is 3.5, 5, 6.5, 8
    ratios_even_t = [4 / 5, 6 / 8]  # t = 2, 4
    ratios_odd_t = [4 / 3.5, 8 / 6.5]  # t = 1, 3
    figure = np.array([np.mean(ratios_even_t), np.mean(ratios_odd_t)])
    np.testing.assert_allclose(seasonal_indices(x, 2), figure / figure.mean())


def test_naive2_reproduces_an_obvious_multiplicative_season() -> None:
    pattern = [1.0, 2.0, 3.0, 4.0]
    x = np.array(pattern * 6)  # trend 2.5, indices 0.4 0.8 1.2 1.6
    assert seasonality_test(x, 4)
    np.testing.assert_allclose(seasonal_indices(x, 4), [0.4, 0.8, 1.2, 1.6])
    np.testing.assert_allclose(naive2(x, 6, 4), [1.0, 2.0, 3.0, 4.0, 1.0, 2.0])
    # ending mid-season: the forecast continues in phase
    np.testing.assert_allclose(naive2(x[:22], 6, 4), [3.0, 4.0, 1.0, 2.0, 3.0, 4.0])
    # seasonal naive agrees on a pure season
    np.testing.assert_allclose(seasonal_naive(x[:22], 6, 4), naive2(x[:22], 6, 4))


def test_naive2_on_a_non_seasonal_series_is_naive1() -> None:
    x = 10.0 + np.random.default_rng(0).normal(size=48)
    assert not seasonality_test(x, 12)
    np.testing.assert_array_equal(naive2(x, 5, 12), naive1(x, 5))
    np.testing.assert_array_equal(naive2(x, 5, 1), naive1(x, 5))


def test_evaluate_forecasts_averages_per_series_values() -> None:
    # m = 1, horizon 1. Series A: in-sample [1, 2] (scale 1), actual 3, forecast 3,
    # Naive2 = 2. Series B: in-sample [10, 14] (scale 4), actual 12, forecast 13, Naive2 14.
    # Series C: in-sample [4, 4, 8] (scale (0 + 4) / 2 = 2), actual 6, forecast 6, Naive2 8.
    result = evaluate_forecasts(
        [np.array([3.0]), np.array([13.0]), np.array([6.0])],
        [np.array([3.0]), np.array([12.0]), np.array([6.0])],
        [np.array([1.0, 2.0]), np.array([10.0, 14.0]), np.array([4.0, 4.0, 8.0])],
        1,
    )
    smape_mean = (0 + 200 * 1 / 25 + 0) / 3
    mase_mean = (0 + 1 / 4 + 0) / 3
    naive2_smape = (200 * 1 / 5 + 200 * 2 / 26 + 200 * 2 / 14) / 3
    naive2_mase = (1 / 1 + 2 / 4 + 2 / 2) / 3
    assert result["smape"] == pytest.approx(smape_mean)
    assert result["mase"] == pytest.approx(mase_mean)
    assert result["naive2_smape"] == pytest.approx(naive2_smape)
    assert result["naive2_mase"] == pytest.approx(naive2_mase)
    assert result["owa"] == pytest.approx((smape_mean / naive2_smape + mase_mean / naive2_mase) / 2)


def test_evaluate_forecasts_names_the_bad_series() -> None:
    with pytest.raises(ValueError, match="'b'.*NaN"):
        evaluate_forecasts(
            [np.array([1.0]), np.array([np.nan])],
            [np.array([1.0]), np.array([1.0])],
            [np.array([1.0, 2.0]), np.array([1.0, 2.0])],
            1,
            ids=["a", "b"],
        )
    with pytest.raises(ValueError, match="1 forecasts, 2 actuals"):
        evaluate_forecasts([np.array([1.0])], [np.array([1.0])] * 2, [np.array([1.0, 2.0])] * 2, 1)


def _seasonal_dataset() -> M4Dataset:
    rng = np.random.default_rng(1)
    season = np.array([1.0, 3.0, 5.0, 2.0])
    train, test = [], []
    for level, length in ((10.0, 40), (50.0, 33), (5.0, 60)):
        full = level * np.resize(season, length + 8) * (1 + 0.05 * rng.normal(size=length + 8))
        train.append(full[:length])
        test.append(full[length:])
    return M4Dataset(
        ids=("Q1", "Q2", "Q3"),
        train=tuple(train),
        test=tuple(test),
        horizon=8,
        seasonality=4,
        frequency_name="Quarterly",
    )


def test_owa_of_naive2_against_itself_is_exactly_one() -> None:
    dataset = _seasonal_dataset()
    forecasts = [naive2(x, dataset.horizon, dataset.seasonality) for x in dataset.train]
    result = evaluate_m4(forecasts, dataset)
    assert result["owa"] == 1.0
    assert result["smape"] == result["naive2_smape"] > 0
    # ignoring a strong season (naive1) scores above 1
    naive = [naive1(x, dataset.horizon) for x in dataset.train]
    assert evaluate_m4(naive, dataset)["owa"] > 1.0


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


def test_smape_loss_hand_computed_and_masked() -> None:
    forecast = torch.tensor([[2.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 0.0]])
    loss = SMAPELoss()(forecast, target, torch.ones(1, 2))
    assert loss.item() == pytest.approx((200 * 1 / 3 + 0) / 2)  # 0/0 point counts 0
    loss.backward()
    assert forecast.grad is not None and torch.isfinite(forecast.grad).all()
    assert smape_loss(forecast, target, torch.tensor([[0.0, 1.0]])).item() == 0.0


def test_mase_loss_matches_numpy_mase() -> None:
    loss = MASELoss()(
        torch.tensor([[1.0, 2.0, 4.0, 7.0]]),
        1,
        torch.tensor([[8.0, 10.0]]),
        torch.tensor([[9.0, 9.0]]),
        torch.ones(1, 2),
    )
    assert loss.item() == pytest.approx(((1 + 1) / 2) / 2)
    loss2 = mase_loss(
        torch.tensor([[1.0, 5.0, 2.0, 6.0, 4.0]]),
        2,
        torch.tensor([[7.0, 3.0]]),
        torch.tensor([[5.0, 4.0]]),
        torch.ones(1, 2),
    )
    assert loss2.item() == pytest.approx(1.125)


def test_mase_loss_padding_and_flat_windows() -> None:
    insample = torch.tensor([[0.0, 0.0, 1.0, 2.0, 4.0, 7.0]])
    forecast, target = torch.tensor([[8.0, 10.0]]), torch.tensor([[9.0, 9.0]])
    mask = torch.ones(1, 2)
    # without the input mask the zero padding enters the scale: |diffs| 0 1 1 2 3 -> 7/5
    assert mase_loss(insample, 1, forecast, target, mask).item() == pytest.approx(1 / (7 / 5))
    # with it only real pairs count: 1 2 3 -> 2
    in_mask = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    assert mase_loss(insample, 1, forecast, target, mask, in_mask).item() == pytest.approx(1 / 2)
    # a flat window has scale 0 and contributes 0, not NaN, also to the gradient
    f = torch.tensor([[1.0, 2.0]], requires_grad=True)
    flat = mase_loss(torch.full((1, 4), 3.0), 1, f, torch.zeros(1, 2), mask)
    flat.backward()
    assert flat.item() == 0.0
    assert f.grad is not None and torch.isfinite(f.grad).all()


# --------------------------------------------------------------------------------------
# M4 parsing
# --------------------------------------------------------------------------------------

_HEADER = ",".join(f'"V{i}"' for i in range(1, 9))


def _write(path: Path, rows: list[str], *, compress: bool = False) -> Path:
    text = "\n".join([_HEADER, *rows]) + "\n"
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _yearly_test_rows() -> list[str]:
    return ['"Y1","1","2","3","4","5","6",', '"Y2","7","8","9","10","11","12",']


@pytest.mark.parametrize("compress", [False, True])
def test_read_m4_ragged_rows(tmp_path: Path, compress: bool) -> None:
    train = _write(
        tmp_path / "Yearly-train.csv",
        ['"Y1","1.5","2","3","4","5","6","7"', '"Y2","10","20","30",,,,'],
        compress=compress,
    )
    test = _write(tmp_path / "Yearly-test.csv", _yearly_test_rows(), compress=compress)
    dataset = read_m4(train, test)
    assert dataset.ids == ("Y1", "Y2")
    assert (dataset.horizon, dataset.seasonality, dataset.frequency_name) == (6, 1, "Yearly")
    np.testing.assert_array_equal(dataset.train[0], [1.5, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(dataset.train[1], [10, 20, 30])
    assert dataset.train[1].dtype == np.float64
    np.testing.assert_array_equal(dataset.test[1], [7, 8, 9, 10, 11, 12])
    assert not dataset.train[0].flags.writeable


def test_read_m4_empty_cell_inside_a_series_names_row_and_column(tmp_path: Path) -> None:
    train = _write(tmp_path / "t.csv", ['"Y1","1","2","3"', '"Y2","1","","3",,'])
    test = _write(tmp_path / "s.csv", _yearly_test_rows())
    with pytest.raises(DataError, match=r"t\.csv: row 3 \(series 'Y2'\), column 3 \(V3\): empty"):
        read_m4(train, test)


def test_read_m4_non_numeric_value_is_an_error(tmp_path: Path) -> None:
    train = _write(tmp_path / "t.csv", ['"Y1","1","2","x3"', '"Y2","1","2","3"'])
    test = _write(tmp_path / "s.csv", _yearly_test_rows())
    with pytest.raises(DataError, match=r"row 2 \(series 'Y1'\), column 4 \(V4\): non-numeric"):
        read_m4(train, test)


def test_read_m4_ids_and_test_lengths_must_match(tmp_path: Path) -> None:
    train = _write(tmp_path / "t.csv", ['"Y1","1","2","3"', '"Y3","1","2","3"'])
    test = _write(tmp_path / "s.csv", _yearly_test_rows())
    with pytest.raises(DataError, match=r"only in train: \['Y3'\], only in test: \['Y2'\]"):
        read_m4(train, test)
    train = _write(tmp_path / "t.csv", ['"Y1","1","2","3"', '"Y2","1","2","3"'])
    short = _write(tmp_path / "s.csv", ['"Y1","1","2","3","4","5","6"', '"Y2","1","2"'])
    with pytest.raises(DataError, match="'Y2' has 2 test values.*horizon is 6"):
        read_m4(train, short)


def test_m4_mirror_paths_prefers_gzip_and_reports_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "m4"
    folder.mkdir()
    for name in ("Daily-train.csv.gz", "Daily-train.csv", "Daily-test.csv"):
        (folder / name).write_text("")
    assert m4_mirror_paths("daily", tmp_path) == (
        folder / "Daily-train.csv.gz",
        folder / "Daily-test.csv",
    )
    with pytest.raises(DataError, match="M4 Hourly train file not found"):
        m4_mirror_paths("Hourly", tmp_path)
    with pytest.raises(DataError, match="unknown M4 frequency"):
        m4_mirror_paths("Minutely", tmp_path)


# --------------------------------------------------------------------------------------
# Long format
# --------------------------------------------------------------------------------------


def test_read_long_format_sorts_within_series() -> None:
    frame = pd.DataFrame(
        {
            "series_id": ["b", "a", "b", "a", "b"],
            "timestamp": [3, 2, 1, 1, 2],
            "value": [30.0, 2.0, 10.0, 1.0, 20.0],
        }
    )
    ids, series = read_long_format(frame)
    assert ids == ("b", "a")
    np.testing.assert_array_equal(series[0], [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(series[1], [1.0, 2.0])


def test_read_long_format_errors() -> None:
    frame = pd.DataFrame({"series_id": ["a", "a"], "timestamp": [1, 2], "value": [1.0, None]})
    with pytest.raises(DataError, match="series 'a' at 2"):
        read_long_format(frame)
    frame = pd.DataFrame({"series_id": ["a", "a"], "timestamp": [1, 1], "value": [1.0, 2.0]})
    with pytest.raises(DataError, match="more than one row"):
        read_long_format(frame)
    with pytest.raises(DataError, match="lacks columns"):
        read_long_format(frame, time_column="ds")


# --------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------


def test_short_series_is_left_padded_with_a_mask() -> None:
    # horizon 3, input_size 2 * 3 = 6; 5 points leave 2 before the held-out 3
    windows = ShortTermWindows([np.array([1.0, 2.0, 3.0, 4.0, 5.0])], 3)
    assert windows.input_size == 6
    val = windows.validation_inputs()
    assert val.insample.shape == (1, 6, 1)
    np.testing.assert_array_equal(val.insample[0, :, 0].numpy(), [0, 0, 0, 0, 1, 2])
    np.testing.assert_array_equal(val.insample_mask[0, :, 0].numpy(), [0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(windows.validation_targets(), [[3.0, 4.0, 5.0]])
    test = windows.test_inputs()
    np.testing.assert_array_equal(test.insample[0, :, 0].numpy(), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(test.insample_mask[0, :, 0].numpy(), [0, 1, 1, 1, 1, 1])
    with pytest.raises(DataError, match="no test data"):
        windows.test_targets()


def test_series_shorter_than_horizon_plus_one_raises() -> None:
    with pytest.raises(DataError, match="series 'tiny' has 3 points.*horizon \\+ 1 = 4"):
        ShortTermWindows([np.arange(10.0), np.arange(3.0)], 3, ids=["ok", "tiny"])


def test_one_point_training_part_gives_no_training_windows(caplog) -> None:
    windows = ShortTermWindows([np.arange(1.0, 5.0), np.arange(1.0, 30.0)], 3, ids=["s", "l"])
    with caplog.at_level(logging.WARNING, logger="llata_core.shortterm"):
        dataset = windows.training_dataset()
    assert "s" in caplog.text and dataset.ids == ("l",)
    only_short = ShortTermWindows([np.arange(1.0, 5.0)], 3)
    with pytest.raises(DataError, match="no series is long enough"):
        only_short.training_dataset()


def test_training_windows_follow_the_sampling_rule() -> None:
    horizon, history_size = 3, 2.0
    series = [np.arange(1.0, 41.0), np.arange(101.0, 109.0)]  # values name their position
    windows = ShortTermWindows(series, horizon, history_size=history_size, input_size=6)
    dataset = windows.training_dataset(seed=7, samples_per_series=50)
    assert len(dataset) == 2 * 50
    limit = int(history_size * horizon)  # cut points in the last 6 points of each part
    for index in range(len(dataset)):
        part = windows.training_parts[index // 50]
        length = part.shape[0]  # 37 and 5 (the last 3 are held out)
        cut = dataset.cut_point(index)
        assert max(1, length - limit) <= cut <= length - 1
        sample = dataset[index]
        x, x_mask = sample.insample[:, 0].numpy(), sample.insample_mask[:, 0].numpy()
        y, y_mask = sample.target[:, 0].numpy(), sample.target_mask[:, 0].numpy()
        history = part[max(0, cut - 6) : cut]
        np.testing.assert_array_equal(x[6 - history.shape[0] :], history)
        np.testing.assert_array_equal(x_mask, [0] * (6 - history.shape[0]) + [1] * len(history))
        future = part[cut : cut + horizon]
        np.testing.assert_array_equal(y[: future.shape[0]], future)
        np.testing.assert_array_equal(y_mask, [1] * len(future) + [0] * (3 - len(future)))
        assert (y[y_mask == 0] == 0).all() and (x[x_mask == 0] == 0).all()
        assert y.max() <= part[-1]  # never a held-out validation point


def test_training_windows_are_deterministic_per_seed_and_epoch() -> None:
    windows = ShortTermWindows([np.arange(1.0, 200.0)] * 4, 6)
    a = windows.training_dataset(seed=3, samples_per_series=5)
    b = windows.training_dataset(seed=3, samples_per_series=5)
    cuts = [a.cut_point(i) for i in range(len(a))]
    assert cuts == [b.cut_point(i) for i in range(len(b))]
    # reading in another order gives the same items
    for i in reversed(range(len(a))):
        torch.testing.assert_close(a[i].insample, b[i].insample)
    assert cuts != [
        windows.training_dataset(seed=4, samples_per_series=5).cut_point(i) for i in range(20)
    ]
    a.set_epoch(1)
    assert cuts != [a.cut_point(i) for i in range(len(a))]


def test_training_windows_collate_into_batches() -> None:
    windows = ShortTermWindows([np.arange(1.0, 60.0), np.arange(1.0, 10.0)], 4)
    batch = next(iter(DataLoader(windows.training_dataset(), batch_size=2)))
    assert isinstance(batch, ShortTermSample)
    assert batch.insample.shape == (2, 8, 1) and batch.target_mask.shape == (2, 4, 1)
    assert batch.insample.dtype == torch.float32


def test_validation_evaluation_uses_the_training_part() -> None:
    rng = np.random.default_rng(2)
    x = np.resize([1.0, 2.0, 3.0, 4.0], 30) * (1 + 0.1 * rng.normal(size=30))
    windows = ShortTermWindows([x], 4, seasonality=4)
    part, target = x[:26], x[26:]
    np.testing.assert_array_equal(windows.validation_targets(), [target])
    perfect = windows.evaluate_validation(windows.validation_targets())
    assert perfect["smape"] == 0.0 and perfect["mase"] == 0.0
    benchmark = naive2(part, 4, 4)
    assert perfect["naive2_smape"] == pytest.approx(smape(benchmark, target))
    assert perfect["naive2_mase"] == pytest.approx(mase(benchmark, target, part, 4))


# --------------------------------------------------------------------------------------
# Data: the real M4 mirror
# --------------------------------------------------------------------------------------


def _m4_mirror() -> Path:
    root = os.environ.get("LLATA_DATA_MIRROR")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "m4"


@pytest.mark.parametrize(
    ("name", "n_series", "horizon", "naive2_smape", "naive2_mase"),
    # published M4 Naive2 results (Makridakis et al. 2020, table 4)
    [("Hourly", 414, 48, 18.383, 2.395), ("Weekly", 359, 13, 9.161, 2.777)],
)
def test_real_m4_mirror_parses_and_reproduces_naive2(
    name: str, n_series: int, horizon: int, naive2_smape: float, naive2_mase: float
) -> None:
    folder = _m4_mirror()
    train, test = folder / f"{name}-train.csv.gz", folder / f"{name}-test.csv.gz"
    if not (train.is_file() and test.is_file()):
        pytest.skip(f"no M4 mirror at {folder}")
    dataset = read_m4(train, test)
    assert (len(dataset), dataset.horizon, dataset.frequency_name) == (n_series, horizon, name)
    forecasts = [naive2(x, dataset.horizon, dataset.seasonality) for x in dataset.train]
    result = evaluate_m4(forecasts, dataset)
    assert round(result["smape"], 3) == naive2_smape
    assert round(result["mase"], 3) == naive2_mase
    assert result["owa"] == 1.0
