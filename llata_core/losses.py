"""The distillation objective as small modules over explicit tensors.

`total = task(y_time, y) + w_out * consistency(y_time, y_text)
         + w_feat * sum_k decay^k * feature(A_k f_time_k, B_k f_text_k)`,
with `k` counted from the last level, so the deepest features weigh most.

The two forecast terms (task, consistency) take a `WindowContext` besides forecast and
target: the M4 losses need the input window (MASE's scale) and the masks of padded
points. Long-term windows carry no masks, and there the point losses are exactly the
mean-reduced `torch.nn` losses.

References:
    Liu et al. (CALF), arXiv 2403.07300, section 3.3-3.4, equations for the feature
    regularisation and output consistency losses; its M4 setting uses SMAPE as the task
    loss and MASE as the output consistency loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llata_core.config import ForecastLossKind, LossConfig, LossKind
from llata_core.model import LlataOutput
from llata_core.shortterm import mase_loss, smape_loss


def elementwise_loss(kind: LossKind, reduction: str = "mean") -> nn.Module:
    """The loss of a kind named in the configuration (mean-reduced by default)."""
    if kind == "l1":
        return nn.L1Loss(reduction=reduction)
    if kind == "smooth_l1":
        return nn.SmoothL1Loss(reduction=reduction)
    if kind == "mse":
        return nn.MSELoss(reduction=reduction)
    raise ValueError(f"unknown loss kind {kind!r}")


@dataclass(frozen=True)
class WindowContext:
    """What a forecast loss may need besides the forecast and its target.

    Attributes:
        insample: the input window `[B, L, M]` the forecast was made from.
        insample_mask: 1 on real input points, 0 on left padding; None means all real.
        target_mask: 1 on real target points, 0 where a series ran out; None means all real.
    """

    insample: torch.Tensor
    insample_mask: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None


class PointLoss(nn.Module):
    """l1 / smooth_l1 / mse, averaged over the real target points (all, without a mask)."""

    def __init__(self, kind: LossKind):
        super().__init__()
        self.mean = elementwise_loss(kind)
        self.pointwise = elementwise_loss(kind, reduction="none")

    def forward(
        self, forecast: torch.Tensor, target: torch.Tensor, context: WindowContext | None = None
    ) -> torch.Tensor:
        mask = None if context is None else context.target_mask
        if mask is None:
            return self.mean(forecast, target)
        return (self.pointwise(forecast, target) * mask).sum() / mask.sum().clamp_min(1.0)


class SMAPETerm(nn.Module):
    """SMAPE as a training loss (`shortterm.smape_loss`, masked, detached denominator)."""

    def forward(
        self, forecast: torch.Tensor, target: torch.Tensor, context: WindowContext | None = None
    ) -> torch.Tensor:
        mask = None if context is None else context.target_mask
        return smape_loss(forecast, target, torch.ones_like(target) if mask is None else mask)


class MASETerm(nn.Module):
    """MASE as a training loss, scaled by each input window's seasonal differences.

    Args:
        seasonality: the period `m` of the data (M4 Hourly 24; 1 for non-seasonal data).
    """

    def __init__(self, seasonality: int = 1):
        super().__init__()
        self.seasonality = seasonality

    def forward(
        self, forecast: torch.Tensor, target: torch.Tensor, context: WindowContext | None = None
    ) -> torch.Tensor:
        if context is None:
            raise ValueError("the MASE loss needs the input window (a WindowContext)")
        mask = context.target_mask
        return mase_loss(
            context.insample,
            self.seasonality,
            forecast,
            target,
            torch.ones_like(target) if mask is None else mask,
            context.insample_mask,
        )


def forecast_loss(kind: ForecastLossKind, seasonality: int = 1) -> nn.Module:
    """The forecast-term module of a kind named in the configuration."""
    if kind == "smape":
        return SMAPETerm()
    if kind == "mase":
        return MASETerm(seasonality)
    return PointLoss(kind)


class FeatureRegularisation(nn.Module):
    """`sum_k decay^k * reg(f_time_k, f_text_k)`, `k = 0` at the last level."""

    def __init__(self, kind: LossKind, decay: float):
        super().__init__()
        self.reg = elementwise_loss(kind)
        self.decay = decay

    def forward(
        self, f_time: tuple[torch.Tensor, ...], f_text: tuple[torch.Tensor, ...]
    ) -> torch.Tensor:
        levels = zip(reversed(f_time), reversed(f_text), strict=True)
        return sum((self.decay**k) * self.reg(a, b) for k, (a, b) in enumerate(levels))  # type: ignore[return-value]


@dataclass
class LossBreakdown:
    """The total and each weighted term's raw value, for logging."""

    total: torch.Tensor
    task: torch.Tensor
    consistency: torch.Tensor
    feature: torch.Tensor


class DistillationLoss(nn.Module):
    """Task loss on the student plus the two distillation terms (teacher -> student).

    Args:
        cfg: which loss each term uses and the weights.
        seasonality: the data's period `m`, for a `mase` term (1 when not seasonal).
    """

    def __init__(self, cfg: LossConfig, seasonality: int = 1):
        super().__init__()
        self.cfg = cfg
        self.task = forecast_loss(cfg.task, seasonality)
        self.consistency = forecast_loss(cfg.consistency, seasonality)
        self.feature = FeatureRegularisation(cfg.feature, cfg.decay)

    def forward(
        self, out: LlataOutput, y: torch.Tensor, context: WindowContext | None = None
    ) -> LossBreakdown:
        """The weighted objective and its terms.

        Args:
            out: the model's output (the teacher's parts when distilling).
            y: the target `[B, H, M]`.
            context: the window `y` follows; `mase` needs it, and its target mask limits
                both forecast terms to real points. None: no masks, no `mase`.
        """
        task = self.task(out.y_time, y, context)
        zero = task.new_zeros(())
        consistency = feature = zero
        if self.cfg.w_out > 0:
            if out.y_text is None:
                raise ValueError("consistency loss needs the teacher's output (distill=True)")
            consistency = self.consistency(out.y_time, out.y_text, context)
        if self.cfg.w_feat > 0:
            if out.f_time is None or out.f_text is None:
                raise ValueError("feature loss needs both branches' features (distill=True)")
            feature = self.feature(out.f_time, out.f_text)
        total = task + self.cfg.w_out * consistency + self.cfg.w_feat * feature
        return LossBreakdown(total, task.detach(), consistency.detach(), feature.detach())
