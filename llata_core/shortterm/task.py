"""The short-term (M4) task inside the one training harness: splits, validation, scores.

`llata train` reads a short-term `data` section (`M4-Hourly`, ..., or a long-format file
with `series_column`) through `load_short_term_splits`; `fit` trains on its random windows
and early-stops on the SMAPE of each series' held-out last horizon (`validation_smape`);
`score_forecasts` reports SMAPE, MASE and OWA against Naive2 on the test data, for the
trained model and for the no-training benchmarks (`benchmark_forecasts`).

Values are not scaled globally: the paper's M4 setting normalises each input window
inside the model (instance norm), and the metrics are scale-free. The scaler that travels
with a short-term artifact is therefore the identity on one channel, `value`
(`identity_scaler`), so `Forecaster.predict` takes a `[steps, 1]` history in data units.

References:
    Liu et al. (CALF), arXiv 2403.07300, short-term forecasting setting;
    Time-Series-Library `exp_short_term_forecasting.py` (validation on the last horizon of
    each training series, SMAPE), following N-BEATS (Oreshkin et al., ICLR 2020).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from llata_core.config import DataConfig, ShortTermIntervals
from llata_core.data import Scaler
from llata_core.errors import DataError
from llata_core.intervals import (
    DEFAULT_LEVELS,
    ConformalScores,
    bounds,
    calibrate_series,
    coverage,
)
from llata_core.shortterm.metrics import (
    absolute_coverage_difference,
    evaluate_forecasts,
    msis,
    naive1,
    naive2,
    seasonal_naive,
    smape,
)
from llata_core.shortterm.series import m4_mirror_paths, read_long_format, read_m4
from llata_core.shortterm.windows import ShortTermInputs, ShortTermTrainDataset, ShortTermWindows
from llata_core.tables import read_maybe_gzip, read_table_with_bytes, sha256_bytes

log = logging.getLogger(__name__)

VALUE_CHANNEL = "value"
ShortTermSplit = Literal["val", "test"]
Benchmark = Literal["naive1", "seasonal_naive", "naive2"]
Predict = Callable[[torch.Tensor], torch.Tensor]


def identity_scaler() -> Scaler:
    """The scaler of a short-term artifact: identity on the one channel `value`."""
    return Scaler((VALUE_CHANNEL,), np.zeros(1), np.ones(1))


@dataclass(frozen=True)
class ShortTermSplits:
    """Many univariate series cut for training, validation and test, and their lineage.

    Attributes:
        windows: the series with the validation and test rules (`ShortTermWindows`).
        train: random training windows (`ShortTermSample` items); the training loop calls
            `set_epoch` every epoch so that each epoch draws fresh cut points.
        scaler: the identity scaler saved with the model (see the module docstring).
        source: `mirror` (an M4 subset) or `file` (a long-format file).
        origin: the file(s) read.
        sha256: hash of the bytes read (uncompressed), for lineage.
        intervals: how conformal scores are calibrated on these series (the data
            config's `intervals`: the normalizer and the calibration windows per series).
    """

    windows: ShortTermWindows
    train: ShortTermTrainDataset
    scaler: Scaler
    source: str
    origin: str
    sha256: str
    intervals: ShortTermIntervals = ShortTermIntervals()

    @property
    def seasonality(self) -> int:
        return self.windows.seasonality

    def fingerprint(self) -> str:
        """Identifies the evaluation data: source bytes, window sizes and seasonality."""
        w = self.windows
        key = f"{self.sha256}|{w.input_size}|{w.horizon}|{w.seasonality}|{len(w.ids)}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def targets_fingerprint(self) -> str:
        """Identifies what a score is a score of: the source bytes, the series and their test
        horizons, but not the lookback (every lookback scores each series' same horizon)."""
        w = self.windows
        key = f"{self.sha256}|targets|{w.horizon}|{w.seasonality}|{len(w.ids)}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def _long_format_series(
    cfg: DataConfig,
) -> tuple[tuple[str, ...], list[np.ndarray], list[np.ndarray], str, str]:
    """Ids, training parts and test targets of a long-format file, plus origin and hash."""
    assert cfg.series_column is not None
    path = Path(cfg.dataset)
    frame, raw = read_table_with_bytes(path, cfg.timestamp_column)
    ids, series = read_long_format(frame, cfg.series_column, cfg.timestamp_column, cfg.value_column)
    need = 2 * cfg.horizon + 1
    for sid, values in zip(ids, series, strict=True):
        if values.shape[0] < need:
            raise DataError(
                f"{path}: series {sid!r} has {values.shape[0]} points; a long-format series "
                f"needs at least 2 * horizon + 1 = {need} (the last horizon is the test "
                "target, the horizon before it the validation target, and at least one "
                "point is left to train on)"
            )
    train = [s[: -cfg.horizon] for s in series]
    test = [s[-cfg.horizon :] for s in series]
    return ids, train, test, str(path), sha256_bytes(raw)


def load_short_term_splits(cfg: DataConfig, *, seed: int = 0) -> ShortTermSplits:
    """Read the short-term data a config names and cut it into windows.

    An M4 name (`M4-Hourly`) reads the subset's competition files from the benchmark
    mirror (`$LLATA_DATA_MIRROR/m4/`); its test file is the test target. A long-format
    file (`series_column` set) holds each series in full; its last `horizon` points are
    the test target. In both, the last `horizon` training points of each series are held
    out for validation, and an input window longer than the history before it is
    left-padded with zeros (mask 0), the N-BEATS / Time-Series-Library rule.

    Args:
        cfg: a short-term data section (`cfg.short_term`).
        seed: base seed of the training windows' cut points.

    Raises:
        DataError: files missing or malformed, or a series too short (fewer than
            `horizon + 1` training points, i.e. `2 * horizon + 1` in a long-format file).
    """
    if not cfg.short_term:
        raise DataError(f"{cfg.dataset!r} is not a short-term dataset")
    seasonality = cfg.seasonality or 1
    if cfg.m4_subset is not None:
        train_path, test_path = m4_mirror_paths(cfg.m4_subset)
        m4 = read_m4(train_path, test_path, cfg.m4_subset)
        windows = ShortTermWindows.from_m4(m4, input_size=cfg.input_size)
        if (windows.horizon, windows.seasonality) != (cfg.horizon, seasonality):
            raise DataError(
                f"M4 {m4.frequency_name} has horizon {m4.horizon} and seasonality "
                f"{m4.seasonality}; the config says {cfg.horizon} and {seasonality}"
            )
        digest = hashlib.sha256()
        for path in (train_path, test_path):
            digest.update(read_maybe_gzip(path))
        source, origin, sha256 = "mirror", f"{train_path},{test_path}", digest.hexdigest()
    else:
        ids, train, test, origin, sha256 = _long_format_series(cfg)
        windows = ShortTermWindows(
            train,
            cfg.horizon,
            seasonality=seasonality,
            ids=ids,
            test=test,
            input_size=cfg.input_size,
        )
        source = "file"
    return ShortTermSplits(
        windows=windows,
        train=windows.training_dataset(seed=seed),
        scaler=identity_scaler(),
        source=source,
        origin=origin,
        sha256=sha256,
        intervals=cfg.intervals or ShortTermIntervals(),
    )


@torch.no_grad()  # not inference_mode: the training loop validates with this mid-training
def forecast_series(
    predict: Predict,
    inputs: ShortTermInputs,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> np.ndarray:
    """One forecast per series: `predict` over every input window, in batches.

    Args:
        predict: `[B, L, 1] -> [B, H, 1]`, e.g. an inference model, or a training model's
            student (`lambda x: model(x, distill=False).y_time`).
        inputs: the left-padded input windows (`validation_inputs()` / `test_inputs()`).
        batch_size: windows per forward pass; does not change the result.
        device: where to run.
        bf16: run under bf16 autocast (training-time validation does, like the long-term
            validation; reported test scores are fp32).

    Returns:
        `[N, H]` float64 forecasts in data units.
    """
    dev = torch.device(device)
    chunks = []
    for start in range(0, inputs.insample.shape[0], batch_size):
        x = inputs.insample[start : start + batch_size].to(dev)  # [b, L, 1]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            y = predict(x)  # [b, H, 1]
        chunks.append(y.float()[:, :, 0].cpu().numpy())
    return np.concatenate(chunks).astype(np.float64)  # [N, H]


def validation_smape(
    predict: Predict,
    splits: ShortTermSplits,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    bf16: bool = False,
) -> float:
    """Mean SMAPE over series of the forecast of each held-out last horizon.

    This is what short-term training early-stops on (lower is better), as in
    Time-Series-Library's and CALF's M4 experiments.
    """
    w = splits.windows
    forecasts = forecast_series(
        predict, w.validation_inputs(), batch_size=batch_size, device=device, bf16=bf16
    )
    targets = w.validation_targets()
    return float(np.mean([smape(f, a) for f, a in zip(forecasts, targets, strict=True)]))


def benchmark_forecasts(
    method: Benchmark, splits: ShortTermSplits, split: ShortTermSplit = "test"
) -> np.ndarray:
    """`[N, H]` forecasts of a no-training benchmark from each series' history.

    Args:
        method: `naive1` (last value), `seasonal_naive` (last season repeated) or `naive2`
            (naive on the seasonally adjusted series, M4's reference for OWA).
        splits: the data.
        split: `test` forecasts after the full training series, `val` after each
            training part (the held-out horizon removed).
    """
    w = splits.windows
    return _benchmark(method, w.train if split == "test" else w.training_parts, w)


def _benchmark(
    method: Benchmark, histories: Sequence[np.ndarray], w: ShortTermWindows
) -> np.ndarray:
    if method == "naive1":
        return np.stack([naive1(h, w.horizon) for h in histories])
    if method == "seasonal_naive":
        return np.stack([seasonal_naive(h, w.horizon, w.seasonality) for h in histories])
    return np.stack([naive2(h, w.horizon, w.seasonality) for h in histories])


def calibration_backs(w: ShortTermWindows, horizons: int) -> range:
    """The calibration windows `k = 1 ..` (`ShortTermWindows.calibration_histories(k)`): up
    to `horizons` (`ShortTermIntervals.calibration_horizons`), as far back as the longest
    series has a point before the window (window 1, the held-out horizon, always exists)."""
    longest = max(len(s) for s in w.train)
    return range(1, min(horizons, (longest - 1) // w.horizon) + 1)


def benchmark_calibration_forecasts(method: Benchmark, splits: ShortTermSplits) -> list[np.ndarray]:
    """A benchmark's forecasts of the calibration windows, what `calibrate_forecasts` takes:
    element `k - 1` is `[n_k, H]`, from each `calibration_histories(k)`."""
    w = splits.windows
    backs = calibration_backs(w, splits.intervals.calibration_horizons)
    return [_benchmark(method, w.calibration_histories(k), w) for k in backs]


def score_forecasts(
    forecasts: np.ndarray, splits: ShortTermSplits, split: ShortTermSplit = "test"
) -> dict[str, float]:
    """SMAPE, MASE and OWA (against Naive2 on the same series) of `[N, H]` forecasts.

    `test` scores against the test targets with the full training series as in-sample
    data (the M4 competition's evaluation); `val` against each series' held-out horizon
    with the training part as in-sample data.

    Returns:
        `smape`, `mase`, `owa`, `naive2_smape`, `naive2_mase` and `n_series`.
    """
    w = splits.windows
    if split == "test":
        scores = evaluate_forecasts(
            list(forecasts), list(w.test_targets()), w.train, w.seasonality, ids=w.ids
        )
    else:
        scores = w.evaluate_validation(list(forecasts))
    return {**scores, "n_series": float(len(w.ids))}


def model_forecasts(
    model: torch.nn.Module,
    splits: ShortTermSplits,
    split: ShortTermSplit = "test",
    *,
    batch_size: int = 512,
) -> np.ndarray:
    """`[N, H]` fp32 forecasts of an inference model (`[B, L, 1] -> [B, H, 1]`) from each
    series' `test` input (its full history) or `val` input (before the held-out horizon)."""
    w = splits.windows
    inputs = w.test_inputs() if split == "test" else w.validation_inputs()
    device = next(model.parameters()).device
    model.eval()
    return forecast_series(model, inputs, batch_size=batch_size, device=device)


def model_calibration_forecasts(
    model: torch.nn.Module, splits: ShortTermSplits, *, batch_size: int = 512
) -> list[np.ndarray]:
    """An inference model's fp32 forecasts of the calibration windows, what
    `calibrate_forecasts` takes: element `k - 1` is `[n_k, H]`, from each
    `calibration_inputs(k)` (`k = 1`: the validation forecasts)."""
    w = splits.windows
    device = next(model.parameters()).device
    model.eval()
    return [
        forecast_series(model, w.calibration_inputs(k), batch_size=batch_size, device=device)
        for k in calibration_backs(w, splits.intervals.calibration_horizons)
    ]


def score_model(
    model: torch.nn.Module,
    splits: ShortTermSplits,
    split: ShortTermSplit = "test",
    *,
    batch_size: int = 512,
) -> dict[str, float]:
    """`score_forecasts` of an inference model, in fp32."""
    forecasts = model_forecasts(model, splits, split, batch_size=batch_size)
    return score_forecasts(forecasts, splits, split)


def calibrate_forecasts(
    forecasts: Sequence[np.ndarray], splits: ShortTermSplits, *, calibrated_at: str = ""
) -> ConformalScores:
    """Normalised conformal scores from forecasts of each series' last training horizons
    (`llata_core.intervals.calibrate_series`), as `splits.intervals` says: its normalizer,
    and up to its `calibration_horizons` windows per series.

    Absolute residuals pooled over series of unrelated scales would not be exchangeable;
    divided by each input window's seasonal-difference scale (mean absolute or root mean
    squared) they are, to the extent that the series' errors scale with their own
    variation. Which scale does that better, and whether older windows help, depends on
    the data, so both are a per-dataset setting chosen on validation
    (`DataConfig.intervals`). The first window is the held-out horizon the model never
    trained on; older ones lie in its training range, so their residuals are a little
    optimistic, but they give the quantile more scores.

    Args:
        forecasts: element `k - 1` holds the `[n_k, H]` forecasts of
            `calibration_inputs(k)` (`model_calibration_forecasts`,
            `benchmark_calibration_forecasts`), `k` in `calibration_backs`.
    """
    w = splits.windows
    backs = calibration_backs(w, splits.intervals.calibration_horizons)
    if len(forecasts) != len(backs):
        raise ValueError(
            f"{len(forecasts)} calibration windows of forecasts; these series have {len(backs)}"
        )
    inputs = [w.calibration_inputs(k) for k in backs]
    return calibrate_series(
        np.concatenate(forecasts),
        np.concatenate([w.calibration_targets(k) for k in backs]),
        np.concatenate([i.insample.numpy() for i in inputs]),
        w.seasonality,
        mask=np.concatenate([i.insample_mask.numpy() for i in inputs]),
        normalizer=splits.intervals.normalizer,
        split="val",
        data_fingerprint=splits.fingerprint(),
        calibrated_at=calibrated_at,
    )


def interval_scores(
    test_forecasts: np.ndarray,
    scores: ConformalScores,
    splits: ShortTermSplits,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> dict[str, float]:
    """`bounds_scores` of conformal intervals around `[N, H]` test forecasts. A level the
    calibration series are too few for (95 % needs 19) is left out."""
    lower, upper = interval_bounds(test_forecasts, scores, splits, levels)
    return bounds_scores(lower, upper, splits)


def interval_bounds(
    test_forecasts: np.ndarray,
    scores: ConformalScores,
    splits: ShortTermSplits,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Conformal `[N, H]` lower and upper bounds around test forecasts, by level, each
    series' scores scaled by its test input's window scale; a level the calibration
    series are too few for is left out."""
    inputs = splits.windows.test_inputs()
    levels = scores.answerable(levels)
    scale = scores.scale_of(inputs.insample.numpy(), inputs.insample_mask.numpy())
    lower, upper = bounds(test_forecasts[:, :, None], scores, levels, scale)
    return {k: v[:, :, 0] for k, v in lower.items()}, {k: v[:, :, 0] for k, v in upper.items()}


def bounds_scores(
    lower: Mapping[float, np.ndarray], upper: Mapping[float, np.ndarray], splits: ShortTermSplits
) -> dict[str, float]:
    """Coverage of every level's `[N, H]` bounds on the test targets, with M4's MSIS and ACD
    for the 95 % level when it is among them."""
    w = splits.windows
    y = w.test_targets()
    out: dict[str, float] = {}
    for level in lower:
        lo, hi = lower[level], upper[level]
        out[f"coverage_{level:g}"] = coverage(y, lo, hi)
        if level == 95.0:
            out["acd_95"] = absolute_coverage_difference(y, lo, hi, level)
            out["msis_95"] = msis(y, lo, hi, w.train, w.seasonality, level)
    return out
