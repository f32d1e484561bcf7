"""Long-term forecasting as a `ForecastTask`: windows cut from one multivariate series.

Validation and test are MSE/MAE on scaled values over every window (the convention of the
long-term forecasting literature); the headline is the test MSE. Every model leaves
training with its conformal scores, the residuals on the validation windows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from llata_core.config import DataConfig, TrainConfig
from llata_core.data import Scaler, Splits, load_series, make_splits
from llata_core.evaluate import Metrics, batch_predict, calibrate, evaluate
from llata_core.intervals import DEFAULT_LEVELS, ConformalScores, bounds
from llata_core.tasks.contract import (
    Evaluation,
    Headline,
    Lineage,
    Validate,
    as_task,
    data_for_model,
)

if TYPE_CHECKING:
    from llata_core.forecaster import Forecaster

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LongTermTask:
    """Train/val/test windows of one series, scored by MSE.

    Attributes:
        splits: the windows and the scaler fitted on the training rows.
        intervals: a trained model's conformal scores, when they apply to this data (its
            channels); `score` then adds interval metrics.
        calibrated_on: the split those scores were calibrated on, when it is this data's:
            coverage there says nothing, so `score` leaves it without interval metrics.
    """

    splits: Splits
    intervals: ConformalScores | None = None
    calibrated_on: str | None = None

    val_metric: ClassVar[str] = "mse"
    headline: ClassVar[Headline] = Headline("mse")
    reported: ClassVar[tuple[str, ...]] = ("mse", "mae")
    seasonality: ClassVar[int] = 1

    @classmethod
    def for_model(
        cls, fc: Forecaster, data: DataConfig | None = None, *, allow_synthetic: bool = False
    ) -> LongTermTask:
        """The task that scores a trained model on `data` (default its own; other data is a
        zero-shot evaluation), cut with the model's input size and horizon.

        The model's scaler is reused only when the channels and the dataset are its own;
        otherwise the data's own training rows fit the scaler (the zero-shot literature
        scores each dataset on its own scale). Its conformal scores are per named channel,
        so other channels get point metrics only.
        """
        data = data_for_model(fc, data)
        series = load_series(data, allow_synthetic=allow_synthetic)
        same_channels = tuple(series.channels) == tuple(fc.channels)
        same = same_channels and data.dataset == fc.config.data.dataset
        splits = make_splits(series, data, scaler=fc.scaler if same else None)
        intervals = fc.intervals
        if intervals is not None and not same_channels:
            log.info("channels differ from the model's: no interval metrics on %s", data.dataset)
            intervals = None
        calibrated_on = intervals.split if intervals is not None and same else None
        return cls(splits, intervals, calibrated_on)

    @property
    def scaler(self) -> Scaler:
        return self.splits.scaler

    @property
    def lineage(self) -> Lineage:
        series = self.splits.series
        return Lineage(series.source, series.origin, series.sha256)

    @property
    def train(self) -> Dataset:
        return self.splits.train

    def fingerprint(self) -> str:
        return self.splits.fingerprint()

    def targets_fingerprint(self) -> str:
        return self.splits.targets_fingerprint()

    def describe(self) -> str:
        s = self.splits
        return (
            f"{len(s.series.channels)} channels, windows train/val/test "
            f"{len(s.train)}/{len(s.val)}/{len(s.test)}"
        )

    def validator(self, train: TrainConfig, accelerator: Accelerator) -> Validate:
        """MSE and MAE on the validation windows (the first `max_eval_windows` of them)."""
        val_set: Dataset = self.splits.val
        if train.max_eval_windows is not None and train.max_eval_windows < len(self.splits.val):
            val_set = Subset(val_set, range(train.max_eval_windows))
        loader = DataLoader(val_set, batch_size=train.eval_batch_size, shuffle=False)
        loader = accelerator.prepare(loader)

        def validate(model: nn.Module, bf16: bool) -> dict[str, float]:
            mse, mae = _validate(model, loader, accelerator, bf16)
            return {"mse": mse, "mae": mae}

        return validate

    def evaluate(self, model: nn.Module, *, batch_size: int) -> Evaluation:
        """Validation and test MSE/MAE, and the conformal scores calibrated on validation
        (so that any artifact can answer interval levels) with their test coverage."""
        val = evaluate(model, self.splits.val, batch_size=batch_size)
        intervals = calibrate(
            model,
            self.splits.val,
            split="val",
            data_fingerprint=self.fingerprint(),
            batch_size=batch_size,
        )
        test = evaluate(model, self.splits.test, batch_size=batch_size, intervals=intervals)
        log.info("test MSE %.4f MAE %.4f over %d windows", test.mse, test.mae, test.n_windows)
        metrics: dict[str, Any] = {
            "mse": test.mse,
            "mae": test.mae,
            "n_windows": test.n_windows,
            "val_mse": val.mse,
            "val_mae": val.mae,
            "mse_by_step": list(test.mse_by_step),
            "calibration_windows": intervals.n,
        }
        for item in test.intervals:
            metrics |= item.to_dict()
        return Evaluation(metrics, intervals)

    def metrics(
        self, model: nn.Module, split: str, *, levels: Sequence[float] = DEFAULT_LEVELS
    ) -> Metrics:
        """`score` as typed metrics: point errors, and interval metrics where they apply."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"no {split!r} split; one of train, val, test")
        dataset = getattr(self.splits, split)
        intervals = self.intervals
        if intervals is not None and split == self.calibrated_on:
            log.info("the %s split calibrated the intervals: no interval metrics on it", split)
            intervals = None
        return evaluate(model, dataset, batch_size=512, intervals=intervals, levels=levels)

    def score(
        self, model: nn.Module, split: str, *, levels: Sequence[float] = DEFAULT_LEVELS
    ) -> dict[str, Any]:
        return self.metrics(model, split, levels=levels).to_dict()

    def plot(self, fc: Forecaster, path: Path) -> Path:
        return plot_forecasts(fc, self.splits, path)

    def sample_inputs(self, n: int) -> np.ndarray:
        val = self.splits.val
        return np.stack([val[i][0].numpy() for i in range(min(len(val), n))])


as_task.register(Splits, LongTermTask)


@torch.no_grad()
def _validate(
    model: nn.Module, loader: DataLoader, acc: Accelerator, bf16: bool
) -> tuple[float, float]:
    """Validation MSE/MAE of the student, summed across processes."""
    model.eval()
    sq = torch.zeros((), dtype=torch.float64, device=acc.device)
    ab = torch.zeros((), dtype=torch.float64, device=acc.device)
    count = torch.zeros((), dtype=torch.float64, device=acc.device)
    for x, y in loader:
        with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(x, distill=False).y_time
        pred, y = acc.gather_for_metrics((pred.float(), y))
        err = pred.double() - y.double()
        sq += (err**2).sum()
        ab += err.abs().sum()
        count += err.numel()
    model.train()
    return float(sq / count), float(ab / count)


def plot_forecasts(
    fc: Forecaster, splits: Splits, path: Path, n: int = 4, channel: int = -1
) -> Path:
    """Forecast vs actual for a few evenly spaced test windows (one channel), as PNG.

    A calibrated model's 80% and 95% conformal bands are shaded around the forecast (a
    level its calibration windows are too few for is left out).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = list(np.linspace(0, len(splits.test) - 1, n).astype(int))
    x, y, pred = batch_predict(fc.model, splits.test, idx)
    bands: list[tuple[float, np.ndarray, np.ndarray]] = []  # (level, lower, upper), widest first
    if fc.intervals is not None and tuple(splits.series.channels) == tuple(fc.channels):
        for level in sorted(DEFAULT_LEVELS, reverse=True):
            try:
                lower, upper = bounds(pred.astype(np.float64), fc.intervals, (level,))
            except ValueError as err:
                log.info("no %g%% band in the plot: %s", level, err)
                continue
            bands.append((level, lower[level], upper[level]))
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.3 * n), sharex=True)
    axes = np.atleast_1d(axes)
    L = x.shape[1]
    for k, (ax, i, xi, yi, pi) in enumerate(zip(axes, idx, x, y, pred, strict=True)):
        steps = range(L, L + len(pi))
        for shade, (level, lo, hi) in zip((0.15, 0.3), bands, strict=False):
            ax.fill_between(
                steps,
                lo[k, :, channel],
                hi[k, :, channel],
                color="tab:red",
                alpha=shade,
                lw=0,
                label=f"{level:g}% interval",
            )
        ax.plot(range(L), xi[:, channel], color="0.4", lw=1, label="history")
        ax.plot(range(L, L + len(yi)), yi[:, channel], color="k", lw=1.2, label="actual")
        ax.plot(range(L, L + len(pi)), pi[:, channel], color="tab:red", lw=1.2, label="forecast")
        ax.set_ylabel(f"window {i}")
    axes[0].legend(loc="upper left", ncol=3 + len(bands), fontsize=8)
    axes[0].set_title(f"{fc.channels[channel]} (scaled), test split")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
