"""Choosing the production model among candidates: by validation score, then by cost.

The candidates are model families at their lookbacks (LLaTA, its LLM-free student,
DLinear, ...), each trained on the same training split. The winner is the candidate with
the best validation score, except that when several are within `tolerance` of the best
(relatively; about one seed's spread), the cheapest to serve among them wins: a score
difference smaller than what the seed alone moves is not evidence. The test split never
enters the choice; it is reported beside it, and the registry gate uses it afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class CandidateReport:
    """One trained candidate: its scores and what it costs.

    Attributes:
        name: the candidate's name in `params.yaml`.
        overrides: the `section.key=value` overrides that made it from the base recipe.
        model_kind: `llata`, `dlinear` or `patchtst`.
        input_size: its lookback.
        val_score: the validation score (lower is better) that selection reads.
        val_metric: the name of that score (`mse`).
        test_score: the test score with the same metric, reported, never used to choose.
        train_seconds: wall time of its training.
        parameters: parameters of the served model.
        serving_ms_per_window: in-process inference time per window, measured on a batch
            of validation windows right after training (best of a few repeats).
        artifact: where its model artifact was written.
    """

    name: str
    overrides: tuple[str, ...]
    model_kind: str
    input_size: int
    val_score: float
    val_metric: str
    test_score: float | None
    train_seconds: float
    parameters: int
    serving_ms_per_window: float
    artifact: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overrides": list(self.overrides)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CandidateReport:
        return cls(**{**raw, "overrides": tuple(raw["overrides"])})


@dataclass(frozen=True)
class Selection:
    """The choice and why it was made.

    Attributes:
        winner: the chosen candidate's name.
        best_by_score: the candidate with the best validation score.
        tolerance: the relative tolerance applied.
        eligible: the candidates within the tolerance of the best score.
        reason: one sentence for people (registry, Prefect artifact, logs).
        candidates: every candidate's report, in the order they were listed.
    """

    winner: str
    best_by_score: str
    tolerance: float
    eligible: tuple[str, ...]
    reason: str
    candidates: tuple[CandidateReport, ...]

    @property
    def winner_report(self) -> CandidateReport:
        return next(c for c in self.candidates if c.name == self.winner)

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "best_by_score": self.best_by_score,
            "tolerance": self.tolerance,
            "eligible": list(self.eligible),
            "reason": self.reason,
            "candidates": [c.to_dict() for c in self.candidates],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Selection:
        return cls(
            winner=raw["winner"],
            best_by_score=raw["best_by_score"],
            tolerance=float(raw["tolerance"]),
            eligible=tuple(raw["eligible"]),
            reason=raw["reason"],
            candidates=tuple(CandidateReport.from_dict(c) for c in raw["candidates"]),
        )


def select_candidate(candidates: Sequence[CandidateReport], tolerance: float) -> Selection:
    """The best candidate by validation score; within `tolerance` of it, the cheapest.

    Args:
        candidates: the trained candidates (all scored with the same validation metric).
        tolerance: relative slack on the best validation score, e.g. 0.01 for 1 %.

    Returns:
        The selection, with every candidate's report.

    Raises:
        ValueError: no candidates, mixed metrics, a non-finite score or a bad tolerance.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    metrics = {c.val_metric for c in candidates}
    if len(metrics) > 1:
        raise ValueError(f"candidates were scored with different metrics: {sorted(metrics)}")
    bad = [c.name for c in candidates if not math.isfinite(c.val_score)]
    if bad:
        raise ValueError(f"candidates without a finite validation score: {bad}")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique: {names}")
    best = min(candidates, key=lambda c: c.val_score)
    bound = best.val_score * (1.0 + tolerance)
    eligible = [c for c in candidates if c.val_score <= bound]
    winner = min(eligible, key=lambda c: (c.serving_ms_per_window, c.parameters))
    metric = best.val_metric
    if winner.name == best.name:
        others = [c for c in eligible if c.name != winner.name]
        reason = f"{winner.name}: best validation {metric} {winner.val_score:.4f}"
        if others:
            reason += (
                f", and the cheapest to serve of those within {tolerance:.1%} of it "
                f"({winner.serving_ms_per_window:.3g} ms/window)"
            )
        else:
            runner_up = sorted(candidates, key=lambda c: c.val_score)[1:2]
            if runner_up:
                reason += f" (next: {runner_up[0].name} {runner_up[0].val_score:.4f})"
    else:
        reason = (
            f"{winner.name}: validation {metric} {winner.val_score:.4f} is within "
            f"{tolerance:.1%} of the best ({best.name} {best.val_score:.4f}), and it is the "
            f"cheapest to serve of those ({winner.serving_ms_per_window:.3g} ms/window against "
            f"{best.serving_ms_per_window:.3g})"
        )
    return Selection(
        winner=winner.name,
        best_by_score=best.name,
        tolerance=tolerance,
        eligible=tuple(c.name for c in eligible),
        reason=reason,
        candidates=tuple(candidates),
    )


def count_parameters(model: nn.Module) -> int:
    """Parameters of a served model (every tensor it holds as a parameter)."""
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def serving_ms_per_window(model: nn.Module, windows: np.ndarray, repeats: int = 3) -> float:
    """In-process forecast time per window: the best of `repeats` passes over `windows`.

    The best rather than the mean, because other work on the machine only ever adds time;
    the figure ranks candidates measured side by side, it is not a latency benchmark.

    Args:
        model: the inference model (`[B, L, M] -> [B, H, M]`).
        windows: a batch of history windows `[B, L, M]`.
        repeats: passes to time, after one warm-up pass.
    """
    if windows.ndim != 3 or len(windows) == 0:
        raise ValueError(f"expected a non-empty batch of windows [B, L, M], got {windows.shape}")
    x = torch.as_tensor(windows, dtype=torch.float32)
    model(x)  # warm-up: first-call allocations and kernel selection
    best = math.inf
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        model(x)
        best = min(best, time.perf_counter() - start)
    return best * 1000.0 / len(windows)
