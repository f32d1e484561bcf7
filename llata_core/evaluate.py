"""Evaluation: MSE / MAE on scaled values over every window of a split, interval coverage
and score when the model is calibrated, and the calibration itself.

Kept apart from training on purpose: the test split never enters the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from llata_core.intervals import (
    DEFAULT_LEVELS,
    ConformalScores,
    IntervalAccumulator,
    IntervalMetrics,
)
from llata_core.model import LlataModel


@dataclass(frozen=True)
class Metrics:
    """Errors on the scaled axis, the convention of the long-term forecasting literature.

    Attributes:
        mse / mae: averaged over every window, step and channel.
        n_windows: how many windows were scored (all of them; no batch is dropped).
        mse_by_step: MSE at each forecast step, to show how error grows with the horizon.
        mse_by_channel: MSE of each channel.
        intervals: coverage, width and interval score of each level, when the model was
            evaluated with its conformal scores; empty otherwise.
    """

    mse: float
    mae: float
    n_windows: int
    mse_by_step: tuple[float, ...]
    mse_by_channel: tuple[float, ...]
    intervals: tuple[IntervalMetrics, ...] = ()

    def to_dict(self) -> dict:
        """Flat JSON-able dict; interval metrics as `coverage_80`, `width_80`, `winkler_80`."""
        out = asdict(self)
        del out["intervals"]
        for item in self.intervals:
            out |= item.to_dict()
        return out


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, LlataModel):
        return model(x, distill=False).y_time
    return model(x)


def _forecasts(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device | str,
    autocast_bf16: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`(forecast, truth)` batches `[B, H, M]` over every window, in eval mode, on `device`."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    dev = torch.device(device)
    try:
        for x, y in loader:
            x, y = x.to(dev), y.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                pred = _predict(model, x)
            yield pred.float(), y
    finally:
        model.train(was_training)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    autocast_bf16: bool = False,
    intervals: ConformalScores | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> Metrics:
    """Score a model on every window of a dataset.

    Args:
        model: a `ForecastModel` (the served student) or a training `LlataModel`.
        dataset: windows `(x [L, M], y [H, M])` on the scaled axis.
        batch_size: windows per forward pass; does not change the result.
        device: where to run.
        autocast_bf16: evaluate under bf16 autocast (faster on GPU; fp32 by default so that
            reported metrics do not depend on the hardware's bf16 support).
        intervals: the model's conformal scores; with them, each level's coverage, width
            and interval score are measured in the same pass (scaled axis, like MSE).
        levels: the interval levels (percent) to measure.

    Returns:
        MSE, MAE and their breakdowns, accumulated in float64, and the interval metrics.
    """
    sq_sum = abs_sum = None
    n = 0
    acc = IntervalAccumulator(intervals, levels) if intervals is not None else None
    for pred, y in _forecasts(model, dataset, batch_size, device, autocast_bf16):
        err = pred.double() - y.double()  # [B, H, M]
        sq = (err**2).sum(dim=0)
        ab = err.abs().sum(dim=0)
        sq_sum = sq if sq_sum is None else sq_sum + sq
        abs_sum = ab if abs_sum is None else abs_sum + ab
        n += y.shape[0]
        if acc is not None:
            acc.add(pred.cpu().numpy(), y.cpu().numpy())
    if n == 0 or sq_sum is None or abs_sum is None:
        raise ValueError("cannot evaluate on an empty dataset")
    sq_np = sq_sum.cpu().numpy() / n  # [H, M]
    ab_np = abs_sum.cpu().numpy() / n
    return Metrics(
        mse=float(sq_np.mean()),
        mae=float(ab_np.mean()),
        n_windows=n,
        mse_by_step=tuple(float(v) for v in sq_np.mean(axis=1)),
        mse_by_channel=tuple(float(v) for v in sq_np.mean(axis=0)),
        intervals=acc.result() if acc is not None else (),
    )


@torch.inference_mode()
def residuals(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """`y - y_hat` of every window of `dataset`, in window (time) order, fp32 forward.

    Returns:
        float64 `[n_windows, horizon, channels]` on the scaled axis.

    Raises:
        ValueError: the dataset has no windows.
    """
    out = [
        (y.double() - pred.double()).cpu().numpy()
        for pred, y in _forecasts(model, dataset, batch_size, device, autocast_bf16=False)
    ]
    if not out:
        raise ValueError("cannot calibrate on an empty dataset")
    return np.concatenate(out)


@torch.inference_mode()
def calibrate(
    model: nn.Module,
    dataset: Dataset,
    *,
    split: str = "val",
    data_fingerprint: str = "",
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> ConformalScores:
    """Split-conformal scores of a trained model: its absolute residuals on every window of
    a calibration split, per horizon step and channel (see `llata_core.intervals`).

    The calibration split is the validation split. It is held out from fitting (no gradient
    ever sees it) and precedes the test split in time, so its residuals are the closest
    stand-in for the residuals of future forecasts that the data offers. Training does use
    it mildly: early stopping picks the epoch with the best validation score, which can make
    validation residuals a little smaller than fresh ones, and the intervals a little narrow;
    the test coverage that `evaluate` reports shows how much. Calibrating on the training
    split instead would be far more optimistic (the model fitted those residuals), and on the
    test split would leave nothing to check coverage on.

    Args:
        model: the inference model (or a training `LlataModel`).
        dataset: the calibration windows `(x [L, M], y [H, M])` on the scaled axis; all of
            them are used, even when training validated on a subset (`max_eval_windows`).
        split: the name of that split, recorded with the scores.
        data_fingerprint: identifies the calibration data (`Splits.fingerprint()`).
        batch_size: windows per forward pass; does not change the result.
        device: where to run; fp32 always, so scores do not depend on bf16 support.

    Returns:
        The sorted scores `[n_windows, horizon, channels]`.
    """
    return ConformalScores.from_residuals(
        residuals(model, dataset, batch_size=batch_size, device=device),  # [n, H, M]
        split=split,
        data_fingerprint=data_fingerprint,
        calibrated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def batch_predict(
    model: nn.Module, dataset: Dataset, indices: list[int], device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History, truth and forecast of a few windows (for plots), on the scaled axis."""
    xs, ys = zip(*(dataset[i] for i in indices), strict=True)
    x = torch.stack(xs).to(device)
    with torch.inference_mode():
        model.eval()
        pred = _predict(model, x).float().cpu().numpy()
    return x.cpu().numpy(), torch.stack(ys).numpy(), pred
