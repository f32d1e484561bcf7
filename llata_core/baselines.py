"""Baselines trained in the same harness as LLaTA: DLinear and a small PatchTST.

They follow the forecaster contract (`forward(x [B, L, M], distill) -> LlataOutput`) so the
same `fit`, `evaluate`, artifact and serving code handle them; they have no teacher, so
the distillation terms never apply. Both are channel-independent. With `model.seasonal_base`
they forecast the correction to the window's seasonal naive forecast, and their output
maps start at zero, so an untrained baseline is exactly seasonal naive.

References:
    Zeng et al., "Are Transformers Effective for Time Series Forecasting?" (DLinear),
    AAAI 2023. Nie et al., "A Time Series is Worth 64 Words" (PatchTST), ICLR 2023.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llata_core.config import LlataConfig
from llata_core.model import LlataOutput, instance_norm, output_level


class Baseline(nn.Module):
    """What the harness expects of a training model besides `predict`."""

    cfg: LlataConfig

    def projection_parameters(self) -> list[nn.Parameter]:
        return []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, distill: bool = False) -> LlataOutput:
        return LlataOutput(self.predict(x))  # no teacher: `distill` has nothing to add

    def to_inference(self) -> BaselineForecastModel:
        return BaselineForecastModel(self).eval()


class BaselineForecastModel(nn.Module):
    """The inference form of a baseline: `[B, L, M] -> [B, H, M]`, like `ForecastModel`."""

    backbone_config = None

    def __init__(self, net: Baseline):
        super().__init__()
        self.cfg = net.cfg
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.predict(x)


class DLinear(Baseline):
    """Moving-average decomposition, one linear map `L -> H` for trend and one for the rest."""

    def __init__(self, cfg: LlataConfig):
        super().__init__()
        self.cfg = cfg
        L, H = cfg.data.input_size, cfg.data.horizon
        self.kernel = cfg.model.baseline.moving_avg
        self.trend = nn.Linear(L, H)
        self.seasonal = nn.Linear(L, H)
        if cfg.model.seasonal_base:
            for layer in (self.trend, self.seasonal):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def moving_average(self, x: torch.Tensor) -> torch.Tensor:
        """The trend of the decomposition: `[B, L, M] -> [B, L, M]`, each step the mean of
        `kernel` steps around it. The ends are replicated so that the average keeps length
        `L` (as in the reference code)."""
        pad = (self.kernel - 1) // 2
        front = x[:, :1].expand(-1, pad, -1)
        back = x[:, -1:].expand(-1, self.kernel - 1 - pad, -1)
        padded = torch.cat([front, x, back], dim=1).transpose(1, 2)  # [B, M, L + k - 1]
        return F.avg_pool1d(padded, self.kernel, stride=1).transpose(1, 2)  # [B, L, M]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.model.baseline.dlinear_norm:
            z, mean, std = instance_norm(x)  # [B, L, M]
        else:  # the reference DLinear maps raw values: its level is zero
            z, mean, std = x, torch.zeros(()), torch.ones(())
        trend = self.moving_average(z)  # [B, L, M]
        seasonal = z - trend
        y = self.trend(trend.transpose(1, 2)) + self.seasonal(seasonal.transpose(1, 2))
        return y.transpose(1, 2) * std + output_level(x, mean, self.cfg)  # [B, H, M]


class PatchTST(Baseline):
    """Instance norm, patches of each channel as tokens, a transformer encoder, a flat head.

    Defaults follow PatchTST's small-dataset (ETTh) configuration: patch 16, stride 8,
    3 layers, d 16, 4 heads, feed-forward 128, dropout 0.3. LayerNorm replaces the
    reference's BatchNorm (a simplification, noted in the benchmark results).
    """

    def __init__(self, cfg: LlataConfig):
        super().__init__()
        self.cfg = cfg
        b = cfg.model.baseline
        L, H = cfg.data.input_size, cfg.data.horizon
        self.patch_len, self.stride = b.patch_len, b.stride
        n_patches = (L - b.patch_len) // b.stride + 2  # +1 for the end padding patch
        self.embed = nn.Linear(b.patch_len, b.d_model)
        self.position = nn.Parameter(torch.empty(n_patches, b.d_model).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(b.dropout)
        layer = nn.TransformerEncoderLayer(
            b.d_model,
            b.heads,
            dim_feedforward=b.ffn,
            dropout=b.dropout,
            batch_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, b.layers, enable_nested_tensor=False)
        self.head = nn.Linear(n_patches * b.d_model, H)
        if cfg.model.seasonal_base:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        B, _, M = x.shape
        x_norm, mean, std = instance_norm(x)  # [B, L, M]
        series = x_norm.transpose(1, 2)  # [B, M, L]
        series = F.pad(series, (0, self.stride), mode="replicate")  # [B, M, L + stride]
        patches = series.unfold(-1, self.patch_len, self.stride)  # [B, M, P, patch_len]
        tokens = self.embed(patches).reshape(B * M, -1, self.embed.out_features)  # [B*M, P, d]
        z = self.encoder(self.drop(tokens + self.position))  # [B*M, P, d]
        y = self.head(z.reshape(B, M, -1))  # [B, M, H]
        return y.transpose(1, 2) * std + output_level(x, mean, self.cfg)  # [B, H, M]


BASELINES: dict[str, type[Baseline]] = {"dlinear": DLinear, "patchtst": PatchTST}


def build_baseline(cfg: LlataConfig) -> Baseline:
    """The baseline that `cfg.model.kind` names."""
    return BASELINES[cfg.model.kind](cfg)
