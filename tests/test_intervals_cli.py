"""Intervals through every model family and the command line (`calibrate`, `evaluate`,
`forecast --levels`), on a tiny backbone and a small CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from llata_core.backbone import prepare_backbone
from llata_core.baselines import build_baseline
from llata_core.cli import main
from llata_core.config import config_from_dict
from llata_core.data import load_series, make_splits
from llata_core.evaluate import calibrate, evaluate
from llata_core.forecaster import Forecaster, save_artifact
from llata_core.model import LlataModel
from tests.conftest import sine_frame, tiny_overrides

FAMILY_OVERRIDES = {
    "llata": {},
    "llata-no-llm": {"model__n_layers": 0},
    "dlinear": {"model__kind": "dlinear"},
    "patchtst": {"model__kind": "patchtst"},
}


@pytest.mark.parametrize("family", FAMILY_OVERRIDES)
def test_every_family_calibrates_saves_and_answers_levels(
    family: str, sine_csv: Path, tmp_path: Path
) -> None:
    cfg = config_from_dict(tiny_overrides(data__dataset=str(sine_csv), **FAMILY_OVERRIDES[family]))
    splits = make_splits(load_series(cfg.data), cfg.data)
    if cfg.model.kind == "llata":
        model = LlataModel(cfg, prepare_backbone(cfg.model)).to_inference()
    else:
        model = build_baseline(cfg).to_inference()
    scores = calibrate(model, splits.val, data_fingerprint=splits.fingerprint())
    assert (scores.n, scores.horizon, scores.n_channels) == (len(splits.val), 8, 3)
    path = save_artifact(tmp_path / "m", model, splits.scaler, {}, intervals=scores)
    fc = Forecaster.load(path)
    bands = fc.predict(load_series(cfg.data).values[-40:], levels=(80, 95))
    assert bands.point.shape == (8, 3)
    assert (bands.lower[95] <= bands.lower[80]).all() and (bands.upper[80] <= bands.upper[95]).all()
    (m80, m95) = evaluate(fc.model, splits.test, intervals=fc.intervals).intervals
    assert 0.0 <= m80.coverage <= m95.coverage <= 1.0 and m80.width < m95.width


@pytest.fixture
def trained(tmp_path: Path, sine_csv: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    raw = tiny_overrides(data__dataset=str(sine_csv), model__kind="dlinear")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    model = tmp_path / "model"
    argv = ["train", "--params", str(params), "--out", str(model), "--run-dir", str(tmp_path)]
    assert main([*argv, "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    return model


def test_calibrate_evaluate_forecast_with_levels(
    trained: Path, sine_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Training calibrates every long-term model; `llata calibrate` redoes it in place.
    assert Forecaster.load(trained).intervals is not None
    assert "coverage_80" in json.loads((trained / "metrics.json").read_text())
    assert main(["calibrate", "--model", str(trained)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["calibration_split"] == "val" and summary["calibration_windows"] > 20
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["coverage_80"] == summary["coverage_80"]
    assert {"mse", "winkler_95", "width_80", "calibration_windows"} <= set(metrics)
    assert Forecaster.load(trained).intervals is not None  # the manifest verifies

    plot = tmp_path / "plot.png"
    assert main(["evaluate", "--model", str(trained), "--plot", str(plot)]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["coverage_80"] == pytest.approx(metrics["coverage_80"])
    assert scored["winkler_95"] == pytest.approx(metrics["winkler_95"])
    assert plot.stat().st_size > 1000
    assert main(["evaluate", "--model", str(trained), "--split", "val"]) == 0
    assert "coverage_80" not in json.loads(capsys.readouterr().out)  # the calibration split

    out = tmp_path / "fc.csv"
    forecast = ["forecast", "--model", str(trained), "--input", str(sine_csv)]
    assert main([*forecast, "--output", str(out), "--levels", "80", "95"]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["date", "c0", "c1", "c2"] and len(frame) == 8
    assert list(frame.columns[4:8]) == ["c0_lo_80", "c0_hi_80", "c0_lo_95", "c0_hi_95"]
    assert len(frame.columns) == 4 + 3 * 4
    assert (frame["c2_lo_95"] <= frame["c2_lo_80"]).all()
    assert (frame["c2_lo_80"] <= frame["c2"]).all() and (frame["c2"] <= frame["c2_hi_80"]).all()
    plain = tmp_path / "plain.csv"
    assert main([*forecast, "--output", str(plain)]) == 0
    np.testing.assert_allclose(pd.read_csv(plain)[["c0", "c1", "c2"]], frame[["c0", "c1", "c2"]])
    capsys.readouterr()

    assert main([*forecast, "--levels", "80", "--horizon", "20"]) == 2
    assert "calibrated for the trained horizon of 8 steps" in capsys.readouterr().err
    assert main([*forecast, "--levels", "120"]) == 2
    assert "outside (0, 100)" in capsys.readouterr().err


def test_calibrate_refuses_data_the_model_was_not_trained_on(
    trained: Path, sine_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in trained.iterdir()}
    frame = pd.read_csv(sine_csv)
    frame.loc[frame.index[-1], "c0"] += 1.0
    frame.to_csv(sine_csv, index=False)
    assert main(["calibrate", "--model", str(trained)]) == 2
    assert "was trained on" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == before  # untouched


def test_recalibrate_on_fresh_data_checks_the_scheme_then_stores_the_newest_scores(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After drift (noise 40 times the training noise), `calibrate --data` widens the
    intervals; metrics.json records the scheme's coverage on windows it did not calibrate on."""
    before = Forecaster.load(trained).intervals
    assert before is not None
    fresh = sine_frame(n_rows=400, seed=7)
    rng = np.random.default_rng(7)
    for c in ("c0", "c1", "c2"):
        fresh[c] += 2.0 * rng.normal(size=len(fresh))
    fresh["date"] = pd.date_range("2021-01-01", periods=len(fresh), freq="h")
    path = tmp_path / "fresh.csv"
    fresh.to_csv(path, index=False)
    recal = ["calibrate", "--model", str(trained), "--data", str(path)]
    assert main([*recal, "--recent-windows", "200", "--holdout-windows", "100"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["calibration_split"] == "recent" and summary["calibration_windows"] == 200
    assert summary["holdout_windows"] == 100
    after = Forecaster.load(trained).intervals
    assert after is not None and (after.split, after.n) == ("recent", 200)
    assert after.half_width(80).mean() > 2 * before.half_width(80).mean()
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["coverage_split"] == "recent-holdout" and metrics["coverage_windows"] == 100
    assert metrics["coverage_80"] == summary["coverage_80"]
    assert 0.6 < metrics["coverage_80"] < 0.95  # calibrated on the drifted noise

    # Too few rows for the windows asked, or half the options: refused, artifact untouched.
    kept = {p.name: p.read_bytes() for p in trained.iterdir()}
    assert main([*recal, "--recent-windows", "300", "--holdout-windows", "100"]) == 2
    assert "has 400 rows" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--data needs --recent-windows"):
        main(recal)
    with pytest.raises(SystemExit, match="need --data"):
        main(["calibrate", "--model", str(trained), "--recent-windows", "10"])
    assert {p.name: p.read_bytes() for p in trained.iterdir()} == kept


def test_recalibrate_with_aci_moves_each_level_by_the_trials_miss_rate(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calibrate --data --aci-gamma`: the trial (scores fitted before the holdout, read at
    the artifact's effective levels) misses a share of the holdout; that share moves each
    level from where it was (nominal the first time), and the next recalibration starts
    from there."""
    from llata_core.intervals import aci_step

    fresh = sine_frame(n_rows=400, seed=8)
    rng = np.random.default_rng(8)
    noise = np.r_[np.full(250, 0.5), np.full(150, 3.0)]  # the holdout is the noisiest part
    for c in ("c0", "c1", "c2"):
        fresh[c] += noise * rng.normal(size=len(fresh))
    fresh["date"] = pd.date_range("2021-01-01", periods=len(fresh), freq="h")
    path = tmp_path / "fresh.csv"
    fresh.to_csv(path, index=False)
    recal = ["calibrate", "--model", str(trained), "--data", str(path)]
    windows = ["--recent-windows", "200", "--holdout-windows", "100", "--aci-gamma", "0.05"]
    previous = {80.0: 80.0, 95.0: 95.0}
    for _ in range(2):
        assert main([*recal, *windows]) == 0
        summary = json.loads(capsys.readouterr().out)
        after = Forecaster.load(trained).intervals
        assert after is not None
        expected = {
            lv: aci_step(previous[lv], lv, 1 - summary[f"coverage_{lv:g}"], 0.05)
            for lv in (80.0, 95.0)
        }
        assert after.effective_levels == pytest.approx(expected)
        metrics = json.loads((trained / "metrics.json").read_text())
        assert metrics["aci_gamma"] == 0.05
        assert metrics["effective_levels"] == pytest.approx(
            {"80": expected[80.0], "95": expected[95.0]}
        )
        previous = dict(after.effective_levels)
    assert previous[80.0] > 80.0  # the trial's bands, fitted on calmer windows, missed more

    # Without --aci-gamma a recalibration stores no state: every level read at itself.
    assert main([*recal, *windows[:4]]) == 0
    capsys.readouterr()
    plain = Forecaster.load(trained).intervals
    assert plain is not None and plain.effective_levels == {}
    with pytest.raises(SystemExit, match="need --data"):
        main(["calibrate", "--model", str(trained), "--aci-gamma", "0.05"])


def test_calibrate_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--help"])
    assert exc.value.code == 0 and "usage: llata calibrate" in capsys.readouterr().out


def test_a_combination_is_calibrated_on_its_own_residuals_and_recalibrates(
    sine_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from llata_core.combination import Combination, Member
    from llata_core.combination_job import combine_job
    from llata_core.jobs import train_job

    members = []
    for name, lookback in (("long", 48), ("short", 32)):
        cfg = config_from_dict(
            tiny_overrides(
                data__dataset=str(sine_csv),
                data__input_size=lookback,
                model__kind="dlinear",
                train__epochs=1,
            )
        )
        out = train_job(cfg, out_dir=tmp_path / name / "model", run_dir=tmp_path / name / "run")
        members.append((name, out.artifact))
    outcome = combine_job((members[0], members[1]), out_dir=tmp_path / "combo")
    assert outcome.artifact is not None and not outcome.choice.alone  # 0.2 / 0.8 here
    fc = Forecaster.load(outcome.artifact)
    assert fc.intervals is not None and fc.input_size == 48
    loaded = [Forecaster.load(path) for _, path in members]
    model = Combination(
        [Member(n, m.model, m.scaler) for (n, _), m in zip(members, loaded, strict=True)],
        outcome.choice.weights,
    )
    splits = make_splits(load_series(fc.config.data), fc.config.data, scaler=fc.scaler)
    own = calibrate(model, splits.val)
    np.testing.assert_allclose(fc.intervals.scores, own.scores, rtol=1e-6, atol=1e-7)
    for member in loaded:  # a member's scores are not the combination's
        assert member.intervals is not None
        assert not np.allclose(member.intervals.scores[-1], own.scores[-1])
    metrics = json.loads((outcome.artifact / "metrics.json").read_text())
    assert metrics["val_mse"] == pytest.approx(outcome.choice.score)
    assert metrics["val_mse"] <= min(outcome.choice.by_weight[0.0], outcome.choice.by_weight[1.0])
    assert metrics["train_seconds"] == pytest.approx(
        sum(m.metrics["train_seconds"] for m in loaded)
    )

    assert main(["calibrate", "--model", str(outcome.artifact)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["calibration_windows"] == own.n
    again = Forecaster.load(outcome.artifact)
    assert again.describe()["kind"] == "combination"
    np.testing.assert_allclose(again.intervals.scores, own.scores, rtol=1e-6, atol=1e-7)
