"""Short-term forecasting (M4 and the like) as a `ForecastTask`: many univariate series.

Training draws random windows from every series; validation is the SMAPE of each series'
held-out last horizon; the test scores are SMAPE, MASE and OWA against Naive2, and OWA is
the headline (M4's ranking metric). Conformal scores are normalised by each input
window's seasonal-difference scale, from each series' last training horizons, as the data
config's `intervals` says (`llata_core.shortterm.calibrate_forecasts`): absolute residuals
pooled over series of very different scales would not be exchangeable.

References:
    Makridakis et al., "The M4 Competition", International Journal of Forecasting 2020
    (OWA: SMAPE and MASE relative to Naive2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset

from llata_core.config import DataConfig, TrainConfig
from llata_core.data import Scaler
from llata_core.intervals import DEFAULT_LEVELS, ConformalScores
from llata_core.shortterm import (
    ShortTermSplit,
    ShortTermSplits,
    calibrate_forecasts,
    interval_bounds,
    interval_scores,
    load_short_term_splits,
    model_calibration_forecasts,
    model_forecasts,
    score_forecasts,
    score_model,
    validation_smape,
)
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

SPLIT_ERROR = "a short-term model is scored on --split test or val"


@dataclass(frozen=True)
class ShortTermTask:
    """Many univariate series, validated by SMAPE and judged by OWA.

    Attributes:
        splits: the series with their training windows and validation/test rules.
    """

    splits: ShortTermSplits

    val_metric: ClassVar[str] = "smape"
    headline: ClassVar[Headline] = Headline("owa")
    reported: ClassVar[tuple[str, ...]] = ("smape", "mase", "owa")

    @classmethod
    def for_model(cls, fc: Forecaster, data: DataConfig | None = None) -> ShortTermTask:
        """The task that scores a trained short-term model on `data` (default its own; e.g.
        the same series in another file), cut with the model's input size and horizon.

        Raises:
            ValueError: `data` is not short-term data.
        """
        data = data_for_model(fc, data)
        if not data.short_term:
            raise ValueError(f"{data.dataset!r} is not short-term data; the model is short-term")
        return cls(load_short_term_splits(data))

    @property
    def seasonality(self) -> int:
        return self.splits.seasonality

    @property
    def scaler(self) -> Scaler:
        return self.splits.scaler

    @property
    def lineage(self) -> Lineage:
        s = self.splits
        return Lineage(s.source, s.origin, s.sha256)

    @property
    def train(self) -> Dataset:
        return self.splits.train

    def fingerprint(self) -> str:
        return self.splits.fingerprint()

    def targets_fingerprint(self) -> str:
        return self.splits.targets_fingerprint()

    def describe(self) -> str:
        w = self.splits.windows
        return (
            f"{len(w.ids)} univariate series, input {w.input_size}, horizon {w.horizon}, "
            f"seasonality {w.seasonality}"
        )

    def validator(self, train: TrainConfig, accelerator: Accelerator) -> Validate:
        """SMAPE of each series' held-out horizon; every process scores all series (they
        are few), without a loader."""

        def validate(model: nn.Module, bf16: bool) -> dict[str, float]:
            model.eval()
            score = validation_smape(
                lambda x: model(x, distill=False).y_time,
                self.splits,
                batch_size=train.eval_batch_size,
                device=accelerator.device,
                bf16=bf16,
            )
            model.train()
            return {"smape": score}

        return validate

    def calibrate(self, model: nn.Module, *, batch_size: int = 512) -> ConformalScores:
        """The model's conformal scores from its forecasts of each series' last training
        horizons (`llata_core.shortterm.calibrate_forecasts`)."""
        windows = model_calibration_forecasts(model, self.splits, batch_size=batch_size)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return calibrate_forecasts(windows, self.splits, calibrated_at=stamp)

    def calibrated(
        self, model: nn.Module, *, batch_size: int = 512
    ) -> tuple[ConformalScores, np.ndarray, dict[str, float]]:
        """The model's conformal scores, its `[N, H]` test forecasts, and those intervals'
        test coverage (with M4's MSIS and ACD at 95 %)."""
        intervals = self.calibrate(model, batch_size=batch_size)
        test = model_forecasts(model, self.splits, "test", batch_size=batch_size)
        return intervals, test, interval_scores(test, intervals, self.splits)

    def evaluate(self, model: nn.Module, *, batch_size: int) -> Evaluation:
        """Test SMAPE, MASE and OWA, the conformal scores and their test coverage (with
        M4's MSIS and ACD at 95 %), and the validation SMAPE of the inference model."""
        val = score_model(model, self.splits, "val", batch_size=batch_size)
        intervals, test, checked = self.calibrated(model, batch_size=batch_size)
        scores = score_forecasts(test, self.splits, "test") | checked
        log.info(
            "test SMAPE %.3f MASE %.3f OWA %.3f over %d series; intervals %s",
            scores["smape"],
            scores["mase"],
            scores["owa"],
            len(self.splits.windows.ids),
            {k: round(v, 3) for k, v in scores.items() if k.startswith(("coverage", "msis"))},
        )
        metrics = {**scores, "val_smape": val["smape"], "calibration_windows": intervals.n}
        return Evaluation(metrics, intervals)

    def score(
        self, model: nn.Module, split: str, *, levels: Sequence[float] = DEFAULT_LEVELS
    ) -> dict[str, Any]:
        """SMAPE, MASE and OWA on `test` (the test targets) or `val` (each series' held-out
        last horizon); no interval metrics, so `levels` is not used."""
        if split not in ("test", "val"):
            raise ValueError(SPLIT_ERROR)
        return score_model(model, self.splits, cast(ShortTermSplit, split))

    def plot(self, fc: Forecaster, path: Path, n: int = 4) -> Path:
        """Forecast against the test target for a few evenly spaced series, with the
        calibrated model's 80 % and 95 % conformal bands, as PNG (data units)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        w = self.splits.windows
        pick = list(np.unique(np.linspace(0, len(w.ids) - 1, min(n, len(w.ids))).astype(int)))
        forecasts = model_forecasts(fc.model, self.splits, "test")
        lower: dict[float, np.ndarray] = {}
        upper: dict[float, np.ndarray] = {}
        if fc.intervals is not None:
            lower, upper = interval_bounds(forecasts, fc.intervals, self.splits)
        inputs = w.test_inputs()
        targets = w.test_targets()
        fig, axes = plt.subplots(len(pick), 1, figsize=(9, 2.3 * len(pick)))
        axes = np.atleast_1d(axes)
        L = w.input_size
        steps = range(L, L + w.horizon)
        for ax, i in zip(axes, pick, strict=True):
            real = inputs.insample_mask[i, :, 0].numpy() > 0
            history = np.where(real, inputs.insample[i, :, 0].numpy(), np.nan)
            for shade, level in zip((0.15, 0.3), sorted(lower, reverse=True), strict=False):
                ax.fill_between(
                    steps,
                    lower[level][i],
                    upper[level][i],
                    color="tab:red",
                    alpha=shade,
                    lw=0,
                    label=f"{level:g}% interval",
                )
            ax.plot(range(L), history, color="0.4", lw=1, label="history")
            ax.plot(steps, targets[i], color="k", lw=1.2, label="actual")
            ax.plot(steps, forecasts[i], color="tab:red", lw=1.2, label="forecast")
            ax.set_ylabel(w.ids[i])
        axes[0].legend(loc="upper left", ncol=3 + len(lower), fontsize=8)
        axes[0].set_title(f"test horizon of {len(pick)} of {len(w.ids)} series")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def sample_inputs(self, n: int) -> np.ndarray:
        return self.splits.windows.validation_inputs().insample[:n].numpy()


as_task.register(ShortTermSplits, ShortTermTask)
