"""The LLaTA forecaster, top to bottom: the whole forward path in dependency order.

x [B, L, M] -> instance norm -> channel-as-token encoder -> h_time [B, M, d]
  student:  h_time -> LoRA-tuned LLM blocks (+ residual) -> head -> y_time [B, H, M]
  teacher:  h_time -> cross-attention onto principal word embeddings -> h_text [B, M, d]
            -> frozen LLM blocks (+ residual) -> head -> y_text [B, H, M]
  both expose the hidden states of every level, projected by A_k / B_k for the feature loss.
Inference keeps the student alone with LoRA merged (`ForecastModel`). The head's output is
de-normalised onto the window's mean, or with `model.seasonal_base` onto its seasonal naive
forecast (`output_level`, shared with the baselines).

References:
    Liu et al., "Taming Pre-trained LLMs for Generalised Time Series Forecasting via
    Cross-modal Knowledge Distillation" (CALF), arXiv 2403.07300, sections 3.1-3.4.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel

from llata_core.backbone import PreparedBackbone, architecture_of
from llata_core.config import ConfigError, LlataConfig

EPS = 1e-5


@dataclass
class LlataOutput:
    """What the loss needs from one forward pass.

    Attributes:
        y_time: the student's forecast `[B, H, M]` (the model's prediction).
        y_text: the teacher's forecast `[B, H, M]`, None when the teacher did not run.
        f_time / f_text: projected hidden states of every level, `N+1` tensors `[B, M, d]`.
    """

    y_time: torch.Tensor
    y_text: torch.Tensor | None = None
    f_time: tuple[torch.Tensor, ...] | None = None
    f_text: tuple[torch.Tensor, ...] | None = None


def instance_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardise each window and channel over time (RevIN without affine terms)."""
    mean = x.mean(dim=1, keepdim=True)  # [B, 1, M]
    std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + EPS)  # [B, 1, M]
    return (x - mean) / std, mean, std


def seasonal_base(x: torch.Tensor, horizon: int, period: int) -> torch.Tensor:
    """The seasonal naive forecast of each window: its last `period` points repeated.

    `[B, L, M] -> [B, H, M]`, step `k` is `x[:, L - period + k % period]`, the numpy
    `shortterm.seasonal_naive` on a window. A window with fewer than `period` real points
    (left-padded with zeros) repeats some padding; every M4 Hourly series is far longer.
    """
    period = min(period, x.shape[1])
    season = x[:, -period:]  # [B, m, M]
    repeats = -(-horizon // period)
    return season.repeat(1, repeats, 1)[:, :horizon]  # [B, H, M]


def output_level(x: torch.Tensor, mean: torch.Tensor, cfg: LlataConfig) -> torch.Tensor:
    """What a model's de-normalised output is added to: the window's mean `[B, 1, M]`, or
    with `model.seasonal_base` its seasonal naive forecast `[B, H, M]` (the network then
    forecasts the correction to seasonal naive)."""
    if not cfg.model.seasonal_base:
        return mean
    return seasonal_base(x, cfg.data.horizon, cfg.data.seasonality or 1)


class InputEncoder(nn.Module):
    """Channel as token: each channel's window is embedded, then one transformer layer mixes
    channels. Shared by both branches (the teacher reads its output through the match)."""

    def __init__(self, input_size: int, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.embed = nn.Linear(input_size, d)
        self.mix = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=ffn, dropout=dropout, batch_first=True
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mix(self.embed(tokens))  # [B, M, L] -> [B, M, d]


class CrossModalMatch(nn.Module):
    """Multi-head cross-attention from time tokens onto the principal word embeddings.

    The keys and values depend only on `P`, never on the input, so they are projected once
    per call and broadcast over the batch; the published code repeats `P` B times first,
    which at batch 256 costs about 170 GFLOP of identical work per forward pass.
    """

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ConfigError(f"hidden size {d} is not divisible by encoder_heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)

    def forward(self, h_time: torch.Tensor, principal: torch.Tensor) -> torch.Tensor:
        B, M, d = h_time.shape
        K = principal.shape[0]
        dh = d // self.heads
        q = self.q(h_time).view(B, M, self.heads, dh).transpose(1, 2)  # [B, h, M, dh]
        k = self.k(principal).view(K, self.heads, dh).transpose(0, 1)  # [h, K, dh]
        v = self.v(principal).view(K, self.heads, dh).transpose(0, 1)  # [h, K, dh]
        k, v = k.unsqueeze(0).expand(B, -1, -1, -1), v.unsqueeze(0).expand(B, -1, -1, -1)
        att = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))  # [B, h, M, dh]
        return self.out(att.transpose(1, 2).reshape(B, M, d))  # [B, M, d]


class Branch(nn.Module):
    """LLM blocks over token embeddings, with the input added back as a residual.

    Returns the branch output `[B, M, d]` and the hidden states of all `N+1` levels. With no
    backbone (N = 0, the "no LLM" ablation) the branch is the identity with one level.
    """

    def __init__(self, backbone: PreTrainedModel | PeftModel | None):
        super().__init__()
        self.backbone = backbone

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if self.backbone is None:
            return h, (h,)
        out = self.backbone(inputs_embeds=h, output_hidden_states=True, use_cache=False)
        return out.last_hidden_state + h, tuple(out.hidden_states)  # [B, M, d], N+1 x [B, M, d]


def _set_trainable(
    module: nn.Module, names: tuple[str, ...], position_embedding: str | None, base: nn.Module
) -> None:
    """Unfreeze norm layers (by class name, from the architecture table) and the learned
    position embedding, if any. LoRA parameters are left as PEFT set them."""
    for sub in module.modules():
        if type(sub).__name__ in names:
            for p in sub.parameters():
                p.requires_grad_(True)
    if position_embedding is not None:
        getattr(base, position_embedding).weight.requires_grad_(True)


def _lora_student(backbone: PreTrainedModel, cfg: LlataConfig) -> PeftModel:
    arch = architecture_of(backbone.config)
    lora = LoraConfig(
        r=cfg.model.lora.r,
        lora_alpha=cfg.model.lora.alpha,
        lora_dropout=cfg.model.lora.dropout,
        target_modules=list(arch.lora_targets),
        fan_in_fan_out=backbone.config.model_type == "gpt2",  # GPT-2 uses Conv1D layers
        bias="none",
    )
    student = get_peft_model(copy.deepcopy(backbone), lora)
    _set_trainable(student, arch.norm_classes, arch.position_embedding, student.get_base_model())
    return student


def _frozen_teacher(backbone: PreTrainedModel) -> PreTrainedModel:
    arch = architecture_of(backbone.config)
    teacher = copy.deepcopy(backbone)
    teacher.requires_grad_(False)
    if arch.position_embedding is not None:  # the paper trains the teacher's wpe only
        getattr(teacher, arch.position_embedding).weight.requires_grad_(True)
    return teacher


class LlataModel(nn.Module):
    """The training model: input encoder, cross-modal match, teacher and student branches,
    per-level feature projections and the shared head."""

    def __init__(self, cfg: LlataConfig, backbone: PreparedBackbone):
        super().__init__()
        self.cfg = cfg
        self.backbone_config = backbone.config
        d = backbone.hidden_size
        n_levels = (cfg.model.n_layers if backbone.model is not None else 0) + 1
        if cfg.model.n_layers > 0 and backbone.model is None:
            raise ConfigError("n_layers > 0 but the prepared backbone holds no blocks")
        self.encoder = InputEncoder(
            cfg.data.input_size,
            d,
            cfg.model.encoder_heads,
            cfg.model.encoder_ffn,
            cfg.model.dropout,
        )
        self.match = CrossModalMatch(d, cfg.model.encoder_heads)
        self.register_buffer("principal", backbone.principal.clone(), persistent=True)  # [K, d]
        if backbone.model is not None and cfg.model.n_layers > 0:
            self.student = Branch(_lora_student(backbone.model, cfg))
            self.teacher = Branch(_frozen_teacher(backbone.model))
        else:
            self.student, self.teacher = Branch(None), Branch(None)
        self.time_proj = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(n_levels))
        self.text_proj = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(n_levels))
        self.head = nn.Linear(d, cfg.data.horizon)
        if cfg.model.seasonal_base:  # start from seasonal naive: the correction is zero
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def projection_parameters(self) -> list[nn.Parameter]:
        """The feature-loss projections `A_k, B_k` (trained at their own learning rate)."""
        return [*self.time_proj.parameters(), *self.text_proj.parameters()]

    def forward(self, x: torch.Tensor, distill: bool = True) -> LlataOutput:
        """Forecast a batch of windows.

        Args:
            x: history windows `[B, L, M]` on the scaled axis.
            distill: also run the teacher and return what the distillation losses need.

        Returns:
            The student's forecast and, with `distill`, the teacher's and the features.
        """
        if x.dim() != 3 or x.shape[1] != self.cfg.data.input_size:
            raise ValueError(
                f"expected windows [B, {self.cfg.data.input_size}, M], got {tuple(x.shape)}"
            )
        x_norm, mean, std = instance_norm(x)  # [B, L, M]
        tokens = x_norm.transpose(1, 2)  # [B, M, L]
        h_time = self.encoder(tokens)  # [B, M, d]
        out_time, feats_time = self.student(h_time)  # [B, M, d]
        level = output_level(x, mean, self.cfg)  # [B, 1, M] or [B, H, M]
        y_time = self.head(out_time).transpose(1, 2) * std + level  # [B, H, M]
        if not distill:
            return LlataOutput(y_time)
        h_text = self.match(h_time, self.principal)  # [B, M, d]
        out_text, feats_text = self.teacher(h_text)  # [B, M, d]
        y_text = self.head(out_text).transpose(1, 2) * std + level  # [B, H, M]
        f_time = tuple(p(f) for p, f in zip(self.time_proj, feats_time, strict=True))
        f_text = tuple(p(f) for p, f in zip(self.text_proj, feats_text, strict=True))
        return LlataOutput(y_time, y_text, f_time, f_text)

    def to_inference(self) -> ForecastModel:
        """The student alone, LoRA merged into the weights: what is saved and served."""
        backbone = None
        if self.student.backbone is not None:
            peft_model = copy.deepcopy(self.student.backbone)
            assert isinstance(peft_model, PeftModel)
            backbone = peft_model.merge_and_unload()
        model = ForecastModel(self.cfg, self.backbone_config, backbone=backbone)
        model.encoder.load_state_dict(self.encoder.state_dict())
        model.head.load_state_dict(self.head.state_dict())
        return model.eval()


class ForecastModel(nn.Module):
    """Inference: input encoder -> temporal branch (LoRA merged) -> head. No teacher, no
    cross-attention. Built from the saved configs alone, so loading needs no backbone."""

    def __init__(
        self,
        cfg: LlataConfig,
        backbone_config: PretrainedConfig,
        backbone: PreTrainedModel | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.backbone_config = backbone_config
        d = int(backbone_config.hidden_size)
        self.encoder = InputEncoder(
            cfg.data.input_size,
            d,
            cfg.model.encoder_heads,
            cfg.model.encoder_ffn,
            cfg.model.dropout,
        )
        if backbone is None and cfg.model.n_layers > 0:
            backbone = AutoModel.from_config(backbone_config)
        self.branch = Branch(backbone if cfg.model.n_layers > 0 else None)
        self.head = nn.Linear(d, cfg.data.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, L, M]` history -> `[B, H, M]` forecast, same units as `x`."""
        x = x.float()
        x_norm, mean, std = instance_norm(x)  # [B, L, M], statistics in fp32
        # The weights may be bf16 (`Forecaster.load(precision="bf16")`): the network runs in
        # their dtype, the normalisation and its inverse stay in fp32.
        h = self.encoder(x_norm.transpose(1, 2).to(self.head.weight.dtype))  # [B, M, d]
        out, _ = self.branch(h)  # [B, M, d]
        level = output_level(x, mean, self.cfg)  # [B, 1, M] or [B, H, M]
        return self.head(out).float().transpose(1, 2) * std + level  # [B, H, M]
