"""The distillation objective as small modules over explicit tensors.

`total = task(y_time, y) + w_out * consistency(y_time, y_text)
         + w_feat * sum_k decay^k * feature(A_k f_time_k, B_k f_text_k)`,
with `k` counted from the last level, so the deepest features weigh most.

References:
    Liu et al. (CALF), arXiv 2403.07300, section 3.3-3.4, equations for the feature
    regularisation and output consistency losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llata_core.config import LossConfig, LossKind
from llata_core.model import LlataOutput


def elementwise_loss(kind: LossKind) -> nn.Module:
    """The mean-reduced loss of a kind named in the configuration."""
    if kind == "l1":
        return nn.L1Loss()
    if kind == "smooth_l1":
        return nn.SmoothL1Loss()
    if kind == "mse":
        return nn.MSELoss()
    raise ValueError(f"unknown loss kind {kind!r}")


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
    """Task loss on the student plus the two distillation terms (teacher -> student)."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.task = elementwise_loss(cfg.task)
        self.consistency = elementwise_loss(cfg.consistency)
        self.feature = FeatureRegularisation(cfg.feature, cfg.decay)

    def forward(self, out: LlataOutput, y: torch.Tensor) -> LossBreakdown:
        task = self.task(out.y_time, y)
        zero = task.new_zeros(())
        consistency = feature = zero
        if self.cfg.w_out > 0:
            if out.y_text is None:
                raise ValueError("consistency loss needs the teacher's output (distill=True)")
            consistency = self.consistency(out.y_time, out.y_text)
        if self.cfg.w_feat > 0:
            if out.f_time is None or out.f_text is None:
                raise ValueError("feature loss needs both branches' features (distill=True)")
            feature = self.feature(out.f_time, out.f_text)
        total = task + self.cfg.w_out * consistency + self.cfg.w_feat * feature
        return LossBreakdown(total, task.detach(), consistency.detach(), feature.detach())
