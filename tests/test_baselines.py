"""Baselines in the same harness: DLinear and PatchTST train, save, load and forecast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llata_core.baselines import DLinear, PatchTST
from llata_core.config import config_from_dict
from llata_core.data import load_series, make_splits
from llata_core.forecaster import Forecaster, save_artifact
from llata_core.train import fit
from tests.conftest import tiny_overrides


@pytest.mark.parametrize("kind", ["dlinear", "patchtst"])
def test_baseline_trains_saves_and_loads(kind: str, sine_csv: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(
        tiny_overrides(
            data__dataset=str(sine_csv),
            model__kind=kind,
            train__epochs=3,
            train__lr=5e-3,
            train__max_steps_per_epoch=None,
        )
    )
    splits = make_splits(load_series(cfg.data), cfg.data)
    result = fit(cfg, splits, None, run_dir=tmp_path / "run", progress=False)
    assert result.history[-1].val_score < result.history[0].val_score
    assert result.history[0].consistency_loss == 0.0  # no teacher, no distillation
    path = save_artifact(
        tmp_path / "model",
        result.model.to_inference(),
        splits.scaler,
        {"mse": result.best_val_score},
    )
    fc = Forecaster.load(path)
    history = load_series(cfg.data).values[-40:]
    out = fc.predict(history)
    assert out.shape == (8, 3) and np.isfinite(out).all()
    described = fc.describe()
    assert described["kind"] == kind
    assert described["backbone"] is None and described["n_layers"] is None  # no LLM blocks


def test_dlinear_decomposition_is_exact_on_a_linear_trend() -> None:
    cfg = config_from_dict(tiny_overrides(model__kind="dlinear"))
    model = DLinear(cfg)
    x = torch.linspace(0, 1, 32).reshape(1, 32, 1)
    trend = model.moving_average(x)
    # Away from the replicated ends, the moving average of a line is the line itself.
    assert torch.allclose(trend[0, 12:-12, 0], x[0, 12:-12, 0], atol=1e-6)


def test_patchtst_shapes_and_channel_independence() -> None:
    cfg = config_from_dict(tiny_overrides(model__kind="patchtst"))
    model = PatchTST(cfg).eval()
    x = torch.randn(2, 32, 3)
    y = model(x).y_time
    assert y.shape == (2, 8, 3)
    x2 = x.clone()
    x2[:, :, 1] += torch.randn(2, 32)
    y2 = model(x2).y_time
    assert torch.allclose(y[:, :, 0], y2[:, :, 0]) and torch.allclose(y[:, :, 2], y2[:, :, 2])
