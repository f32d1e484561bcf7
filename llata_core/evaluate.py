"""Evaluation: MSE / MAE on scaled values over every window of a split.

Kept apart from training on purpose: the test split never enters the training loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from llata_core.model import LlataModel


@dataclass(frozen=True)
class Metrics:
    """Errors on the scaled axis, the convention of the long-term forecasting literature.

    Attributes:
        mse / mae: averaged over every window, step and channel.
        n_windows: how many windows were scored (all of them; no batch is dropped).
        mse_by_step: MSE at each forecast step, to show how error grows with the horizon.
        mse_by_channel: MSE of each channel.
    """

    mse: float
    mae: float
    n_windows: int
    mse_by_step: tuple[float, ...]
    mse_by_channel: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(model, LlataModel):
        return model(x, distill=False).y_time
    return model(x)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    autocast_bf16: bool = False,
) -> Metrics:
    """Score a model on every window of a dataset.

    Args:
        model: a `ForecastModel` (the served student) or a training `LlataModel`.
        dataset: windows `(x [L, M], y [H, M])` on the scaled axis.
        batch_size: windows per forward pass; does not change the result.
        device: where to run.
        autocast_bf16: evaluate under bf16 autocast (faster on GPU; fp32 by default so that
            reported metrics do not depend on the hardware's bf16 support).

    Returns:
        MSE, MAE and their breakdowns, accumulated in float64.
    """
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False)
    sq_sum = abs_sum = None
    n = 0
    dev = torch.device(device)
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            pred = _predict(model, x)
        err = pred.float().double() - y.double()  # [B, H, M]
        sq = (err**2).sum(dim=0)
        ab = err.abs().sum(dim=0)
        sq_sum = sq if sq_sum is None else sq_sum + sq
        abs_sum = ab if abs_sum is None else abs_sum + ab
        n += x.shape[0]
    model.train(was_training)
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
