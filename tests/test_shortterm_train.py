"""The short-term (M4) setting through the one harness: config, losses, `fit`, CLI, artifact.

A tiny M4-format Hourly subset is written to a temporary mirror, so `llata train` and
`llata evaluate` run end to end on a tiny backbone in seconds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from llata_core.backbone import prepare_backbone
from llata_core.cli import main
from llata_core.config import ConfigError, LlataConfig, config_from_dict, load_params
from llata_core.data import DataError
from llata_core.forecaster import Forecaster, ForecastInputError
from llata_core.intervals import window_scale
from llata_core.losses import (
    DistillationLoss,
    MASETerm,
    PointLoss,
    SMAPETerm,
    WindowContext,
)
from llata_core.model import LlataOutput
from llata_core.shortterm import (
    VALUE_CHANNEL,
    benchmark_forecasts,
    load_short_term_splits,
    mase_loss,
    score_forecasts,
    smape_loss,
)
from llata_core.train import config_digest, fit, resumable_digests
from tests.conftest import tiny_overrides

HOURLY_H = 48
WEEKLY_H = 13


def _m4_rows(series: list[np.ndarray], prefix: str = "H") -> list[str]:
    width = max(len(s) for s in series)
    rows = []
    for i, values in enumerate(series, start=1):
        cells = [f'"{v:.3f}"' for v in values] + [""] * (width - len(values))
        rows.append(",".join([f'"{prefix}{i}"', *cells]))
    header = ",".join(f'"V{j}"' for j in range(1, width + 2))
    return [header, *rows]


def write_tiny_hourly(
    mirror: Path, n_series: int = 12, short: int | None = None, subset: str = "Hourly"
) -> Path:
    """A learnable M4-format Hourly subset: daily cycles on different levels and lengths.

    Args:
        mirror: the mirror directory; files go to `mirror/m4/`.
        n_series: how many series.
        short: give the last series only this many training points.
        subset: `Weekly` writes the same cycles as a Weekly subset (`W` ids, horizon 13).
    """
    horizon, prefix = (WEEKLY_H, "W") if subset == "Weekly" else (HOURLY_H, "H")
    rng = np.random.default_rng(0)
    train, test = [], []
    for i in range(n_series):
        n = 150 + 10 * (i % 5) if short is None or i < n_series - 1 else short
        t = np.arange(n + horizon)
        level = 100.0 * (i + 1)
        values = level + 0.2 * level * np.sin(2 * np.pi * t / 24 + i)
        values += rng.normal(0, 0.01 * level, size=t.shape)
        train.append(values[:n])
        test.append(values[n:])
    folder = mirror / "m4"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{subset}-train.csv").write_text("\n".join(_m4_rows(train, prefix)) + "\n")
    (folder / f"{subset}-test.csv").write_text("\n".join(_m4_rows(test, prefix)) + "\n")
    return mirror


@pytest.fixture
def tiny_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    mirror = write_tiny_hourly(tmp_path / "mirror")
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(mirror))
    return mirror


def m4_params(backbone: str = "tiny-llama", **loss: str) -> dict:
    """Tiny-model params for `M4-Hourly`; the data sizes come from the subset."""
    raw = tiny_overrides(backbone, train__epochs=2, train__max_steps_per_epoch=None)
    raw["data"] = {"dataset": "M4-Hourly"}
    raw["loss"] = {"task": "smape", "consistency": "mase", "feature": "smooth_l1", **loss}
    return raw


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def test_m4_name_selects_short_term_with_the_subsets_sizes() -> None:
    data = load_params(None, ["data.dataset=M4-Hourly"]).data
    assert data.short_term and data.m4_subset == "Hourly"
    assert (data.horizon, data.input_size, data.seasonality) == (48, 96, 24)
    weekly = load_params(None, ["data.dataset=M4-Weekly", "data.input_size=39"]).data
    assert (weekly.horizon, weekly.input_size, weekly.seasonality) == (13, 39, 1)
    assert not load_params(None).data.short_term


def test_long_format_selects_short_term_and_defaults_input_to_twice_the_horizon() -> None:
    data = load_params(None, ["data.dataset=x.csv", "data.series_column=sid", "data.horizon=6"])
    assert data.data.short_term and data.data.input_size == 12
    assert data.data.seasonality is None  # 1 when the data is read


def test_short_term_config_errors() -> None:
    with pytest.raises(ConfigError, match="horizon 48"):
        load_params(None, ["data.dataset=M4-Hourly", "data.horizon=96"])
    with pytest.raises(ConfigError, match="unknown M4 frequency"):
        load_params(None, ["data.dataset=M4-Minutely"])
    with pytest.raises(ConfigError, match="long-term data only"):
        load_params(None, ["data.dataset=M4-Weekly", "data.few_shot_percent=10"])
    with pytest.raises(ConfigError, match="task"):
        load_params(None, ["loss.task=mape"])
    with pytest.raises(ConfigError, match="feature"):
        load_params(None, ["loss.feature=smape"])  # features are not forecasts


def test_the_interval_scheme_is_chosen_per_dataset() -> None:
    """`data.intervals` is filled in from the dataset (each M4 subset's validated scheme,
    the defaults for a long-format file), key by key under what the config sets."""

    def scheme(*overrides: str) -> tuple[str, int]:
        data = load_params(None, list(overrides)).data
        assert data.intervals is not None
        return data.intervals.normalizer, data.intervals.calibration_horizons

    assert scheme("data.dataset=M4-Hourly") == ("seasonal-rmse", 3)
    assert scheme("data.dataset=M4-Weekly") == ("seasonal-mae", 1)
    assert scheme("data.dataset=x.csv", "data.series_column=sid") == ("seasonal-rmse", 3)
    assert scheme("data.dataset=M4-Weekly", "data.intervals.calibration_horizons=3") == (
        "seasonal-mae",
        3,
    )
    assert scheme("data.dataset=M4-Hourly", "data.intervals.normalizer=seasonal-mae") == (
        "seasonal-mae",
        3,
    )
    assert load_params(None).data.intervals is None  # long-term: absolute residuals
    # Saved with the model, and read back as it was saved.
    weekly = load_params(None, ["data.dataset=M4-Weekly"])
    assert weekly.to_dict()["data"]["intervals"] == {
        "normalizer": "seasonal-mae",
        "calibration_horizons": 1,
    }
    assert config_from_dict(weekly.to_dict()) == weekly
    # Not a training setting: a checkpoint resumes whatever the model will be calibrated with.
    other = load_params(None, ["data.dataset=M4-Weekly", "data.intervals.normalizer=seasonal-rmse"])
    assert config_digest(other) == config_digest(weekly)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.intervals.normalizer=seasonal-std", "normalizer"),
        ("data.intervals.normalizer=none", "'seasonal-mae' or 'seasonal-rmse'"),
        ("data.intervals.calibration_horizons=0", "calibration_horizons"),
        ("data.intervals.quantile=0.9", "quantile"),
        ("data.intervals=mae", "data.intervals must be a mapping"),
    ],
)
def test_a_bad_interval_scheme_is_a_clear_error(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_params(None, ["data.dataset=M4-Weekly", override])


def test_long_term_data_has_no_short_term_interval_scheme() -> None:
    with pytest.raises(ConfigError, match="data.intervals applies to short-term data only"):
        load_params(None, ["data.dataset=ETTh1", "data.intervals.normalizer=seasonal-mae"])


def test_checkpoints_written_before_later_settings_existed_still_resume() -> None:
    """A long-term checkpoint written before the short-term settings (or the baselines'
    `model.kind`/`model.baseline`, or `train.lr_schedule`) existed carries a digest without
    them; it still resumes."""
    cfg = load_params(None, ["data.dataset=ETTh1", "train.epochs=3"])

    def digest_without(*dropped: tuple[str, str]) -> str:
        raw = cfg.to_dict()
        # Settings newer than every one of these checkpoints: never in their digests; nor is
        # the interval scheme, which does not change training.
        del raw["model"]["seasonal_base"], raw["model"]["baseline"]["dlinear_norm"]
        del raw["data"]["intervals"]
        for section, key in dropped:
            del raw[section][key]
        return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]

    data = [("data", k) for k in ("series_column", "value_column", "seasonality")]
    model = [("model", "kind"), ("model", "baseline")]
    schedule = [("train", "lr_schedule")]
    assert config_digest(cfg) == digest_without(*data, *model, *schedule)
    assert digest_without(*data) in resumable_digests(cfg)  # written before the baselines
    assert digest_without(*data, *model) in resumable_digests(cfg)  # before lr_schedule
    halving = load_params(None, ["data.dataset=ETTh1", "train.epochs=3", "train.lr_schedule=halve"])
    assert not resumable_digests(halving) & resumable_digests(cfg)
    assert cfg.to_dict()["model"]["kind"] == "llata"
    short = load_params(None, ["data.dataset=M4-Weekly"])
    assert config_digest(short) != config_digest(LlataConfig())
    assert not resumable_digests(short) & resumable_digests(LlataConfig())
    dlinear = load_params(None, ["data.dataset=ETTh1", "train.epochs=3", "model.kind=dlinear"])
    assert not resumable_digests(dlinear) & resumable_digests(cfg)


# --------------------------------------------------------------------------------------
# Losses chosen by the config, on explicit tensors
# --------------------------------------------------------------------------------------


def _tensors() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 10, 1, generator=gen) * 10 + 1
    y = torch.rand(4, 5, 1, generator=gen) * 10 + 1
    pred = torch.rand(4, 5, 1, generator=gen) * 10 + 1
    mask = torch.ones(4, 5, 1)
    mask[0, 3:] = 0.0
    return x, y, pred, mask


def test_losses_are_selected_by_the_config_and_match_the_m4_definitions() -> None:
    x, y, pred, mask = _tensors()
    cfg = config_from_dict({"loss": {"task": "smape", "consistency": "mase", "w_feat": 0}})
    loss = DistillationLoss(cfg.loss, seasonality=2)
    assert isinstance(loss.task, SMAPETerm) and isinstance(loss.consistency, MASETerm)
    teacher = y + 0.5
    context = WindowContext(x, torch.ones_like(x), mask)
    out = loss(LlataOutput(pred, teacher), y, context)
    assert out.task == pytest.approx(smape_loss(pred, y, mask).item())
    expected = mase_loss(x, 2, pred, teacher, mask, torch.ones_like(x))
    assert out.consistency == pytest.approx(expected.item())
    assert out.total.item() == pytest.approx(out.task.item() + out.consistency.item())
    with pytest.raises(ValueError, match="input window"):
        MASETerm(2)(pred, y)


def test_point_losses_are_plain_without_a_mask_and_masked_with_one() -> None:
    x, y, pred, mask = _tensors()
    assert torch.equal(PointLoss("l1")(pred, y, WindowContext(x)), torch.nn.L1Loss()(pred, y))
    masked = PointLoss("mse")(pred, y, WindowContext(x, target_mask=mask))
    expected = (((pred - y) ** 2) * mask).sum() / mask.sum()
    assert masked.item() == pytest.approx(expected.item())


# --------------------------------------------------------------------------------------
# Data and training
# --------------------------------------------------------------------------------------


def test_splits_of_an_m4_subset(tiny_mirror: Path) -> None:
    cfg = config_from_dict(m4_params())
    splits = load_short_term_splits(cfg.data, seed=3)
    assert splits.seasonality == 24 and len(splits.windows.ids) == 12
    assert splits.scaler.channels == (VALUE_CHANNEL,)
    np.testing.assert_array_equal(splits.scaler.transform(np.array([[5.0]])), [[5.0]])
    assert splits.train.seed == 3 and len(splits.train) == 12
    naive = score_forecasts(benchmark_forecasts("naive2", splits), splits)
    assert naive["owa"] == 1.0 and naive["n_series"] == 12


def test_fit_draws_fresh_windows_each_epoch_and_resumes_exactly(
    tiny_mirror: Path, tmp_path: Path
) -> None:
    raw = m4_params()
    raw["train"]["epochs"] = 3
    cfg = config_from_dict(raw)
    backbone = prepare_backbone(cfg.model)
    splits = load_short_term_splits(cfg.data, seed=cfg.train.seed)
    straight = fit(cfg, splits, backbone, run_dir=tmp_path / "a", progress=False)
    assert splits.train.epoch == 2  # set for every epoch: fresh cut points
    assert [h.val_metric for h in straight.history] == ["smape"] * 3
    smapes = [h.val_score for h in straight.history]
    assert straight.best_val_score == min(smapes)
    assert straight.best_epoch == 1 + smapes.index(min(smapes))

    one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 1})})
    fit(one, load_short_term_splits(cfg.data, seed=0), backbone, run_dir=tmp_path / "b")
    state_path = tmp_path / "b" / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    state["config_digest"] = config_digest(cfg)  # as if the 3-epoch run had been killed
    state_path.write_text(json.dumps(state))
    resumed = fit(
        cfg,
        load_short_term_splits(cfg.data, seed=0),
        backbone,
        run_dir=tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert [round(h.val_score, 5) for h in resumed.history] == [round(s, 5) for s in smapes]


def test_llata_train_and_evaluate_end_to_end(
    tiny_mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(m4_params()))
    model = tmp_path / "model"
    code = main(
        ["train", "--params", str(params), "--out", str(model), "--run-dir", str(tmp_path / "r")]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 2 and {"test_smape", "test_mase", "test_owa"} <= out.keys()
    assert 0 < out["test_smape"] < 200 and out["test_mase"] > 0 and out["test_owa"] > 0
    saved = json.loads((model / "metrics.json").read_text())
    assert saved["smape"] == out["test_smape"] and saved["val_smape"] > 0
    assert saved["naive2_smape"] > 0 and saved["n_series"] == 12

    assert main(["evaluate", "--model", str(model), "--metrics-out", str(tmp_path / "m.json")]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["dataset"] == "M4-Hourly" and scored["split"] == "test"
    for key in ("smape", "mase", "owa"):
        assert scored[key] == pytest.approx(saved[key], rel=1e-9)
    assert main(["evaluate", "--model", str(model), "--split", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "val"
    assert main(["evaluate", "--model", str(model), "--split", "train"]) == 2
    assert "short-term model" in capsys.readouterr().err

    # The artifact is a univariate forecaster in data units (identity scaler, one channel).
    fc = Forecaster.load(model)
    assert fc.channels == (VALUE_CHANNEL,) and (fc.input_size, fc.horizon) == (96, 48)
    history = np.linspace(100.0, 200.0, 120)[:, None]
    with torch.no_grad():
        direct = fc.model(torch.tensor(history[-96:][None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(fc.predict(history), direct, rtol=1e-5)

    # Intervals: seasonal-RMSE-normalised scores, the last three training horizons of each
    # series, so a series' half-width scales with its own recent variation; 36 windows
    # answer 95 %, not 99 %.
    assert fc.intervals is not None and fc.intervals.normalizer == "seasonal-rmse"
    assert (fc.intervals.n, fc.intervals.seasonality) == (36, 24)
    assert saved["calibration_windows"] == 36 and 0 <= saved["coverage_80"] <= 1
    assert 0 <= saved["coverage_95"] <= 1 and saved["msis_95"] > 0
    for scale in (1.0, 10.0):
        bands = fc.predict(history * scale, levels=(80,))
        window = history[-96:][None] * scale  # [1, L, 1]
        half = fc.intervals.half_width(80) * window_scale(window, 24, None, "seasonal-rmse")[0]
        np.testing.assert_allclose(bands.upper[80] - bands.point, half, rtol=1e-4)
    with pytest.raises(ForecastInputError, match="needs at least 99 calibration windows"):
        fc.predict(history, levels=(99,))
    (model / "intervals.safetensors").unlink()  # an artifact from before M4 intervals ...
    manifest = json.loads((model / "manifest.json").read_text())
    del manifest["files"]["intervals.safetensors"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert Forecaster.load(model).intervals is None
    assert main(["calibrate", "--model", str(model)]) == 0  # ... calibrates without training
    summary = json.loads(capsys.readouterr().out)
    assert summary["calibration_windows"] == 36 and summary["test_series_windows"] == 12
    assert summary["coverage_80"] == pytest.approx(saved["coverage_80"])
    assert Forecaster.load(model).intervals.normalizer == "seasonal-rmse"  # type: ignore[union-attr]


def _train_weekly(tmp_path: Path, name: str, *sets: str) -> Path:
    """`llata train` of a tiny DLinear on the tiny Weekly mirror, with `--set` overrides."""
    raw = tiny_overrides(train__epochs=1, train__max_steps_per_epoch=None)
    raw["data"] = {"dataset": "M4-Weekly"}
    raw["model"] |= {"kind": "dlinear"}
    raw["loss"] = {"task": "smape"}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    model, run_dir = tmp_path / name, tmp_path / f"{name}-run"
    args = ["train", "--params", str(params), "--out", str(model), "--run-dir", str(run_dir)]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 0
    return model


def _saved_config_without_intervals(model: Path) -> None:
    """Rewrite an artifact's config.json as a version before `data.intervals` wrote it."""
    path = model / "config.json"
    config = json.loads(path.read_text())
    del config["llata"]["data"]["intervals"]
    path.write_text(json.dumps(config, indent=2))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["config.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(manifest))


def test_a_weekly_model_is_calibrated_with_weeklys_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Training on M4-Weekly calibrates with Weekly's scheme (`seasonal-mae`, the held-out
    horizon alone: one window per series), and the config saved with the model says so; a
    `--set` of the scheme reaches the artifact the same way."""
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(write_tiny_hourly(tmp_path / "m", subset="Weekly")))
    model = _train_weekly(tmp_path, "weekly")
    capsys.readouterr()
    saved = json.loads((model / "config.json").read_text())["llata"]["data"]
    assert saved["intervals"] == {"normalizer": "seasonal-mae", "calibration_horizons": 1}
    fc = Forecaster.load(model)
    assert fc.intervals is not None and fc.intervals.normalizer == "seasonal-mae"
    assert (fc.intervals.n, fc.intervals.seasonality) == (12, 1)
    assert fc.metrics["calibration_windows"] == 12
    history = np.linspace(100.0, 200.0, 40)[:, None]
    bands = fc.predict(history, levels=(80,))
    window = history[-fc.input_size :][None]  # [1, L, 1]
    half = fc.intervals.half_width(80) * window_scale(window, 1, None, "seasonal-mae")[0]
    np.testing.assert_allclose(bands.upper[80] - bands.point, half, rtol=1e-4)

    rmse = _train_weekly(tmp_path, "rmse", "data.intervals.normalizer=seasonal-rmse")
    rmse_fc = Forecaster.load(rmse)
    assert rmse_fc.intervals is not None and rmse_fc.intervals.normalizer == "seasonal-rmse"
    assert rmse_fc.intervals.n == 12  # Weekly's one window per series, key by key
    three = _train_weekly(tmp_path, "three", "data.intervals.calibration_horizons=3")
    assert Forecaster.load(three).intervals.n == 36  # type: ignore[union-attr]


def test_an_artifact_calibrated_before_the_per_dataset_scheme_answers_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Weekly artifact from before `data.intervals` (calibrated `seasonal-rmse` on three
    windows per series, its config without the setting) loads and answers exactly as
    before; `llata calibrate` recalibrates it with Weekly's scheme."""
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(write_tiny_hourly(tmp_path / "m", subset="Weekly")))
    model = _train_weekly(
        tmp_path,
        "old",
        "data.intervals.normalizer=seasonal-rmse",
        "data.intervals.calibration_horizons=3",
    )
    capsys.readouterr()
    history = np.linspace(100.0, 200.0, 40)[:, None] + np.sin(np.arange(40))[:, None]
    before = Forecaster.load(model).predict(history, levels=(80, 95))
    _saved_config_without_intervals(model)
    old = Forecaster.load(model)
    assert old.intervals is not None and old.intervals.normalizer == "seasonal-rmse"
    assert old.intervals.n == 36
    after = old.predict(history, levels=(80, 95))
    np.testing.assert_array_equal(after.point, before.point)
    for level in (80, 95):
        np.testing.assert_array_equal(after.lower[level], before.lower[level])
        np.testing.assert_array_equal(after.upper[level], before.upper[level])

    assert main(["calibrate", "--model", str(model)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["calibration_windows"] == 12
    recalibrated = Forecaster.load(model).intervals
    assert recalibrated is not None and recalibrated.normalizer == "seasonal-mae"


def test_dlinear_and_a_long_format_file_with_padding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Baselines train through the same harness; a long-format file is short-term data, and
    a series shorter than input_size + horizon is left-padded (the documented rule)."""
    rng = np.random.default_rng(1)
    rows = []
    for sid, n in (("a", 60), ("b", 45), ("c", 20)):  # c: 20 - 6 test - 6 val = 8 < input 12
        values = 50 + 5 * np.sin(np.arange(n) / 2) + rng.normal(0, 0.5, n)
        rows += [{"series_id": sid, "step": t, "value": v} for t, v in enumerate(values)]
    path = tmp_path / "long.csv"
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    raw = tiny_overrides(train__epochs=1)
    raw["data"] = {
        "dataset": str(path),
        "series_column": "series_id",
        "timestamp_column": "step",
        "horizon": 6,
        "seasonality": 2,
    }
    raw["model"] |= {"kind": "dlinear"}
    raw["model"]["baseline"] = {"moving_avg": 5}
    raw["loss"] = {"task": "smape"}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    model = tmp_path / "model"
    args = ["train", "--params", str(params), "--out", str(model), "--run-dir", str(tmp_path / "r")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_smape"] > 0
    cfg = json.loads((model / "config.json").read_text())["llata"]
    assert cfg["data"]["input_size"] == 12 and cfg["model"]["kind"] == "dlinear"
    splits = load_short_term_splits(config_from_dict(raw).data)
    assert splits.windows.ids == ("a", "b", "c")
    assert splits.windows.validation_inputs().insample_mask[2, :4].sum() == 0  # padded


def test_too_short_series_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = write_tiny_hourly(tmp_path / "mirror", n_series=3, short=40)  # < horizon + 1
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(mirror))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(m4_params()))
    assert main(["train", "--params", str(params), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "series 'H3' has 40 points" in err and "horizon + 1 = 49" in err

    path = tmp_path / "long.csv"
    frame = pd.DataFrame(
        {"sid": ["a"] * 30 + ["b"] * 12, "date": list(range(30)) + list(range(12))}
    )
    frame["value"] = 1.0 + np.arange(len(frame)) % 7
    frame.to_csv(path, index=False)
    data = load_params(None, [f"data.dataset={path}", "data.series_column=sid", "data.horizon=6"])
    with pytest.raises(DataError, match=r"series 'b' has 12 points; .* 2 \* horizon \+ 1 = 13"):
        load_short_term_splits(data.data)
