"""Forecast combination: the weighted mean of trained models' forecasts, one `nn.Module`.

Two cheap models of different lookbacks, averaged with a weight chosen on validation, beat
every single model on ETTh1-96 (`benchmarks/accuracy/ensemble.py`, RESULTS.md "Forecast
combination"). `Combination` is that mean as a forecasting model like any other: it takes
scaled windows `[B, L, M]` cut for its longest member (`cfg` is that member's, so
`cfg.data.input_size` is the longest lookback) and each member reads the last `input_size`
rows of each window, which is the window it reads on its own (the splits start `input_size`
rows before their border, so every lookback has the same futures; a short-term task's windows
are left-padded with zeros, so the last rows are again each member's own window). Its members
must forecast the same horizon of the same channels on the same scale (the same training
rows), or the mean means nothing; `Combination` refuses them otherwise, naming both.

`choose_weight` picks the weight of a pair on validation: a grid from 0 to 1 in steps of
0.1, so that either member alone is on it, each member forecasting every window once.

References: Bates & Granger, "The Combination of Forecasts" (1969); the weight on a grid
chosen on held-out data, as in the M4 combination benchmarks (Makridakis et al., 2020).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from llata_core.config import LlataConfig
from llata_core.data import Scaler

WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
"""The first member's weights `choose_weight` tries (the second gets `1 - w`)."""


@dataclass(frozen=True)
class Member:
    """One model of a combination.

    Attributes:
        name: what it is called (the candidate's name); error messages and artifacts use it.
        model: its inference model, `[B, input_size, M] -> [B, horizon, M]` scaled, with
            `.cfg` (a `LlataConfig`).
        scaler: the scaler its training rows fitted.
    """

    name: str
    model: nn.Module
    scaler: Scaler

    @property
    def cfg(self) -> LlataConfig:
        cfg = self.model.cfg
        assert isinstance(cfg, LlataConfig)
        return cfg


def scalers_agree(a: Scaler, b: Scaler) -> bool:
    """Whether two scalers put data on the same scale: same channels, same mean and std
    (fitted on the same training rows, up to float round-off)."""
    return (
        a.channels == b.channels
        and np.allclose(a.mean, b.mean, rtol=1e-9, atol=1e-12)
        and np.allclose(a.std, b.std, rtol=1e-9, atol=1e-12)
    )


def check_members(members: Sequence[Member]) -> None:
    """Refuse members whose forecasts cannot be averaged.

    Raises:
        ValueError: naming the first member and the one that differs from it: another
            horizon, other channels, another task (short-term or long-term) or another
            scaler (other training rows).
    """
    if not members:
        raise ValueError("a combination needs at least one member")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique: {names}")
    first = members[0]
    for other in members[1:]:
        pair = f"{first.name!r} and {other.name!r}"
        if first.cfg.data.horizon != other.cfg.data.horizon:
            raise ValueError(
                f"members {pair} forecast different horizons "
                f"({first.cfg.data.horizon} and {other.cfg.data.horizon} steps)"
            )
        if first.scaler.channels != other.scaler.channels:
            raise ValueError(
                f"members {pair} forecast different channels "
                f"({', '.join(first.scaler.channels)} and {', '.join(other.scaler.channels)})"
            )
        if first.cfg.data.short_term != other.cfg.data.short_term:
            raise ValueError(f"members {pair} are models of different tasks")
        if not scalers_agree(first.scaler, other.scaler):
            raise ValueError(
                f"members {pair} were scaled differently (their scalers were fitted on "
                "other training rows): their forecasts cannot be averaged"
            )


def mix(weights: Sequence[float], forecasts: Sequence[torch.Tensor]) -> torch.Tensor:
    """`sum_k weights[k] * forecasts[k]`, in member order (the order fixes the rounding)."""
    out = weights[0] * forecasts[0]
    for weight, forecast in zip(weights[1:], forecasts[1:], strict=True):
        out = out + weight * forecast
    return out


class Combination(nn.Module):
    """The weighted mean of its members' forecasts, each from its own lookback.

    Attributes:
        cfg: the longest member's configuration (`cfg.data.input_size` is the lookback the
            combination needs; horizon and channels are every member's).
        scaler: the members' common scaler.
        names: the members' names, in order.
        weights: the members' weights, non-negative, summing to 1.
    """

    def __init__(self, members: Sequence[Member], weights: Sequence[float]):
        super().__init__()
        check_members(members)
        weights = tuple(float(w) for w in weights)
        if len(weights) != len(members):
            raise ValueError(f"{len(members)} members but {len(weights)} weights")
        if not all(math.isfinite(w) and w >= 0.0 for w in weights) or not math.isclose(
            sum(weights), 1.0, abs_tol=1e-9
        ):
            raise ValueError(f"weights must be non-negative and sum to 1, got {list(weights)}")
        longest = max(members, key=lambda m: m.cfg.data.input_size)
        self.cfg = longest.cfg
        self.scaler = members[0].scaler
        self.names = tuple(m.name for m in members)
        self.weights = weights
        self.members = nn.ModuleList([m.model for m in members])
        self.input_sizes = tuple(m.cfg.data.input_size for m in members)
        self.kinds = tuple(m.cfg.model.kind for m in members)
        self.llms = tuple(llm_blocks(m.cfg) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, L >= longest input_size, M]` scaled -> `[B, horizon, M]` scaled (fp32)."""
        forecasts = [
            model(x[:, -size:, :]).float()  # [B, H, M]: the member's own last rows
            for model, size in zip(self.members, self.input_sizes, strict=True)
        ]
        return mix(self.weights, forecasts)

    def describe_members(self) -> list[dict[str, object]]:
        """Each member's name, family, LLM backbone and blocks (an LLM member only: the
        registry's metadata cannot hold None), lookback and weight (for the registry and `GET
        /model`; the weight rounded to 10 decimals for people: `1 - 0.7` is
        0.30000000000000004 in floats, and the forward keeps that exact value)."""
        return [
            {
                "name": name,
                "kind": kind,
                **({"backbone": backbone, "n_layers": n_layers} if backbone is not None else {}),
                "input_size": size,
                "weight": round(weight, 10),
            }
            for name, kind, (backbone, n_layers), size, weight in zip(
                self.names, self.kinds, self.llms, self.input_sizes, self.weights, strict=True
            )
        ]


def llm_blocks(cfg: LlataConfig) -> tuple[str | None, int | None]:
    """A model's LLM backbone and how many of its blocks it keeps; `(None, None)` for a
    baseline (DLinear, PatchTST), whose configuration's model section is unused."""
    if cfg.model.kind != "llata":
        return None, None
    return cfg.model.backbone, cfg.model.n_layers


def weights_precision(model: nn.Module) -> str:
    """`bf16` or `fp32`, the dtype a model's weights are held in; `mixed` when they differ,
    as in a combination of an LLM model loaded in bf16 and a baseline, which always runs in
    fp32 (`Forecaster.describe()` gives each member's own)."""
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes == {torch.bfloat16}:
        return "bf16"
    return "mixed" if torch.bfloat16 in dtypes else "fp32"


class _Memo(nn.Module):
    """A member that forecasts each distinct input once and replays it after, so that
    scoring the eleven weights of the grid costs one pass of each member, not eleven."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.seen: dict[tuple[tuple[int, ...], bytes], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = x.detach().cpu().contiguous().numpy().tobytes()
        key = (tuple(x.shape), hashlib.blake2b(data, digest_size=16).digest())
        if key not in self.seen:
            self.seen[key] = self.model(x)
        return self.seen[key]


@dataclass(frozen=True)
class WeightChoice:
    """The first member's weight chosen on validation.

    Attributes:
        weight: the chosen weight of the first member (the second's is `1 - weight`).
        score: the validation score at that weight (lower is better).
        by_weight: the validation score of every weight tried.
    """

    weight: float
    score: float
    by_weight: dict[float, float]

    @property
    def weights(self) -> tuple[float, float]:
        return (self.weight, 1.0 - self.weight)

    @property
    def alone(self) -> bool:
        """Whether the choice is one member alone (weight 0 or 1): no combination."""
        return self.weight in (0.0, 1.0)


def choose_weight(
    first: Member,
    second: Member,
    score: Callable[[nn.Module], float],
    grid: Sequence[float] = WEIGHT_GRID,
) -> WeightChoice:
    """The weight of `first` (the second gets `1 - w`) with the lowest validation score.

    Args:
        first / second: the two members.
        score: a model's validation score, lower is better (e.g. its MSE on the validation
            windows cut for the longest member); never the test split.
        grid: the weights to try; a tie goes to the weight nearer 0.5.

    Returns:
        The chosen weight, its score and every weight's score.
    """
    memos = [Member(m.name, _Memo(m.model), m.scaler) for m in (first, second)]
    by_weight = {float(w): float(score(Combination(memos, (w, 1.0 - w)).eval())) for w in grid}
    best = min(by_weight, key=lambda w: (by_weight[w], abs(w - 0.5)))
    return WeightChoice(best, by_weight[best], by_weight)
