"""SMAPE and MASE as differentiable training losses over masked windows.

They follow Time-Series-Library's M4 losses: the padded points of a window are masked
out, and a division by zero gives 0 rather than NaN. The distillation objective
(`llata_core.losses`) uses them as its task and output-consistency terms in the M4 setting.

References:
    Time-Series-Library (thuml) `utils/losses.py`, which follows N-BEATS (Oreshkin et al.,
    ICLR 2020).
"""

from __future__ import annotations

import torch
from torch import nn


def divide_no_nan(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """`numerator / denominator` with 0 wherever the quotient would be NaN or infinite.

    Written with `torch.where` on a safe denominator rather than by overwriting NaNs in
    place: the in-place version breaks autograd and a plain `where` over `a / 0` still
    back-propagates `0 * inf = NaN`.

    References:
        N-BEATS `common/torch/ops.py` and Time-Series-Library `utils/losses.py`
        (`divide_no_nan`).
    """
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)
    result = numerator / safe
    return torch.where(zero | ~torch.isfinite(result), torch.zeros_like(result), result)


def smape_loss(forecast: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Differentiable SMAPE: `200 * mean(mask * |F - A| / (|F| + |A|))`.

    The denominator is detached, so the gradient pushes only on the absolute error. The
    mean is over every element, masked ones included (as N-BEATS/TSL do).

    References:
        Time-Series-Library `utils/losses.py::smape_loss`; Oreshkin et al., N-BEATS.
    """
    denominator = forecast.detach().abs() + target.abs()
    return 200.0 * torch.mean(divide_no_nan((forecast - target).abs(), denominator) * mask)


def mase_loss(
    insample: torch.Tensor,
    seasonality: int,
    forecast: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    insample_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable MASE: `mean(mask * |A - F| / scale)`, scale per series.

    `scale` is the mean `|x_t - x_{t-m}|` over each series' input window (dimension 1);
    a series whose scale is 0 contributes 0. Without `insample_mask` zero padding enters
    the scale as in TSL; with it only pairs of real points count. When the window has no
    more than `m` points the scale uses `m = 1`.

    Args:
        insample: `[B, input_size]` or `[B, input_size, C]` input windows.
        seasonality: the period `m` (TSL calls it `freq`).
        forecast: `[B, horizon]` or `[B, horizon, C]`.
        target: same shape as `forecast`.
        mask: 0/1 weights of the target points, same shape as `forecast`.
        insample_mask: optional 0/1 mask of real input points, same shape as `insample`.

    References:
        Time-Series-Library `utils/losses.py::mase_loss`; Oreshkin et al., N-BEATS.
    """
    if insample.shape[1] < 2:
        raise ValueError("mase_loss needs input windows of at least 2 points")
    m = seasonality if insample.shape[1] > seasonality else 1
    differences = (insample[:, m:] - insample[:, :-m]).abs()  # [B, input_size - m, ...]
    if insample_mask is None:
        scale = differences.mean(dim=1, keepdim=True)  # [B, 1, ...]
    else:
        pairs = insample_mask[:, m:] * insample_mask[:, :-m]
        scale = divide_no_nan(
            (differences * pairs).sum(dim=1, keepdim=True), pairs.sum(dim=1, keepdim=True)
        )
    weights = divide_no_nan(mask, scale)  # scale broadcasts over the horizon
    return torch.mean((target - forecast).abs() * weights)


class SMAPELoss(nn.Module):
    """`smape_loss` as a module: `forward(forecast, target, mask)`."""

    def forward(
        self, forecast: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return smape_loss(forecast, target, mask)


class MASELoss(nn.Module):
    """`mase_loss` as a module: `forward(insample, seasonality, forecast, target, mask)`."""

    def forward(
        self,
        insample: torch.Tensor,
        seasonality: int,
        forecast: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return mase_loss(insample, seasonality, forecast, target, mask, insample_mask)
