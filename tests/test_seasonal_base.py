"""`model.seasonal_base`: every kind forecasts a correction to the window's seasonal naive
forecast, is exactly seasonal naive while the correction is zero, and saves the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from llata_core.backbone import prepare_backbone
from llata_core.baselines import build_baseline
from llata_core.checkpoint import config_digest
from llata_core.config import LlataConfig, config_from_dict
from llata_core.data import Scaler
from llata_core.forecaster import Forecaster, save_artifact
from llata_core.model import LlataModel, seasonal_base
from llata_core.shortterm import seasonal_naive
from tests.conftest import sine_frame, tiny_overrides

OLD_MODEL = Path(__file__).resolve().parent / "fixtures" / "old_format" / "longterm_model"
PERIOD = 6  # the tiny configs forecast 8 steps from 32: one and a third seasons
KINDS = [("dlinear", False), ("dlinear", True), ("patchtst", False), ("llata", False)]


def _cfg(kind: str, norm: bool = False, **extra: object) -> LlataConfig:
    return config_from_dict(
        tiny_overrides(
            model__kind=kind,
            model__seasonal_base=True,
            model__baseline={"dlinear_norm": norm},
            data__seasonality=PERIOD,
            **extra,
        )
    )


def _model(cfg: LlataConfig) -> nn.Module:
    torch.manual_seed(0)
    if cfg.model.kind == "llata":
        return LlataModel(cfg, prepare_backbone(cfg.model))
    return build_baseline(cfg)


def _snaive(x: torch.Tensor, horizon: int, period: int) -> np.ndarray:
    """The numpy reference (`shortterm.seasonal_naive`) on every window and channel."""
    return np.stack(
        [
            np.stack([seasonal_naive(w[:, c], horizon, period) for c in range(w.shape[1])], 1)
            for w in x.double().numpy()
        ]
    )


def _step(model: nn.Module, x: torch.Tensor) -> None:
    """One Adam step towards a target away from seasonal naive, so the correction moves."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = (model(x, distill=False).y_time - 1.0).abs().mean()
    loss.backward()
    opt.step()


@pytest.mark.parametrize(("horizon", "period"), [(48, 24), (13, 1), (8, 6), (5, 7)])
def test_seasonal_base_is_seasonal_naive_of_each_window(horizon: int, period: int) -> None:
    x = torch.randn(3, 30, 2, dtype=torch.float64)
    base = seasonal_base(x, horizon, period)
    assert base.shape == (3, horizon, 2)
    np.testing.assert_array_equal(base.numpy(), _snaive(x, horizon, period))


@pytest.mark.parametrize(("kind", "norm"), KINDS)
def test_untrained_correction_is_zero_so_the_forecast_is_seasonal_naive(
    kind: str, norm: bool
) -> None:
    cfg = _cfg(kind, norm)
    model = _model(cfg).eval()
    x = torch.randn(4, 32, 3) * 50 + 200
    with torch.no_grad():
        y = model(x, distill=False).y_time
        served = model.to_inference().eval()(x)
    assert y.shape == served.shape == (4, 8, 3)
    expected = _snaive(x, 8, PERIOD)
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(served.double().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(("kind", "norm"), [("dlinear", False), ("dlinear", True)])
def test_zeroed_correction_weights_give_seasonal_naive_exactly(kind: str, norm: bool) -> None:
    cfg = _cfg(kind, norm)
    model = _model(cfg)
    x = torch.randn(4, 32, 1) * 10 + 100
    _step(model, x)
    with torch.no_grad():
        assert not np.allclose(model(x).y_time.numpy(), _snaive(x, 8, PERIOD))
        for p in model.parameters():
            p.zero_()
        np.testing.assert_array_equal(model(x).y_time.double().numpy(), _snaive(x, 8, PERIOD))


@pytest.mark.parametrize(("kind", "norm"), [("dlinear", True), ("llata", False)])
def test_option_survives_save_and_load(kind: str, norm: bool, tmp_path: Path) -> None:
    cfg = _cfg(kind, norm)
    model = _model(cfg)
    x = torch.randn(4, 32, 3) + 5
    _step(model, x)
    inference = model.to_inference().eval()
    scaler = Scaler(("a", "b", "c"), np.zeros(3), np.ones(3))
    path = save_artifact(tmp_path / "model", inference, scaler, {"mse": 1.0})
    raw = json.loads((path / "config.json").read_text())["llata"]["model"]
    assert raw["seasonal_base"] is True and raw["baseline"]["dlinear_norm"] is norm
    fc = Forecaster.load(path)
    assert fc.config.model.seasonal_base and fc.config.model.baseline.dlinear_norm is norm
    history = x[0].numpy().astype(np.float64)
    with torch.no_grad():
        expected = inference(x[:1])[0].numpy()
    np.testing.assert_allclose(fc.predict(history), expected, rtol=1e-5, atol=1e-5)


def test_an_artifact_saved_before_the_option_loads_without_it() -> None:
    raw = json.loads((OLD_MODEL / "config.json").read_text())["llata"]["model"]
    assert "seasonal_base" not in raw and "dlinear_norm" not in raw["baseline"]
    fc = Forecaster.load(OLD_MODEL)
    assert not fc.config.model.seasonal_base and not fc.config.model.baseline.dlinear_norm
    forecast = fc.predict(sine_frame().iloc[-fc.input_size :])
    expected = np.load(OLD_MODEL.parent / "longterm_model_forecast.npy")
    np.testing.assert_allclose(forecast, expected, rtol=1e-6)


def test_the_options_change_the_checkpoint_digest_only_when_set() -> None:
    # A baseline section off its defaults keeps its keys in the digest; the new key at its
    # default must still leave it out, or checkpoints of such runs would stop resuming.
    # The literals are the digests these configs had before the options existed.
    plain = config_from_dict(tiny_overrides(model__kind="dlinear"))
    moving = config_from_dict(
        tiny_overrides(model__kind="dlinear", model__baseline={"moving_avg": 5})
    )
    assert (config_digest(plain), config_digest(moving)) == ("c48d3786527c1743", "a99b226eb2ef580b")
    based = config_from_dict(tiny_overrides(model__kind="dlinear", model__seasonal_base=True))
    normed = config_from_dict(
        tiny_overrides(model__kind="dlinear", model__baseline={"dlinear_norm": True})
    )
    assert len({config_digest(c) for c in (plain, moving, based, normed)}) == 4
