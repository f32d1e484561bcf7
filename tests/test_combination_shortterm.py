"""A combination of two short-term (M4) models: weighed on validation SMAPE, scored by OWA,
calibrated with normalised scores of its own residuals (M4 Hourly's `seasonal-rmse`), loaded,
forecast with levels, recalibrated and promoted over the member of its lookback.

Tiny data (24 generated Hourly series), DLinear members correcting seasonal naive at two
lookbacks (96 and 120 steps, so that the shorter member reads the last rows of the longer
window), fixed seeds, fp32 and bf16 training.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llata_core.combination_job import CombineOutcome, combine_job
from llata_core.config import config_from_dict
from llata_core.forecaster import Forecaster, artifact_kind
from llata_core.jobs import calibrate_job, train_job
from llata_core.shortterm import interval_bounds, model_forecasts
from llata_core.tasks import ShortTermTask, task_for_model
from serving.registry import Registry, stored_mse_scorer
from tests.conftest import tiny_overrides
from tests.test_shortterm_train import HOURLY_H, write_tiny_hourly

N_SERIES = 24  # one calibration window per series: 95 % intervals need 19


def train_member(
    out: Path, *, seed: int, epochs: int, input_size: int, precision: str = "fp32"
) -> Path:
    """DLinear correcting seasonal naive on M4-Hourly (the mirror the environment names)."""
    raw = tiny_overrides(
        train__epochs=epochs,
        train__seed=seed,
        train__max_steps_per_epoch=None,
        train__precision=precision,
    )
    raw["data"] = {"dataset": "M4-Hourly", "input_size": input_size}
    raw["model"] |= {"kind": "dlinear", "seasonal_base": True}
    raw["loss"] = {"task": "smape"}
    train_job(config_from_dict(raw), out_dir=out, run_dir=out.parent / f"run-{out.name}")
    return out


@pytest.fixture(scope="module")
def m4(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("m4combination")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLATA_DATA_MIRROR", str(write_tiny_hourly(root / "mirror", N_SERIES)))
        # bf16 training validates under autocast; its artifact's validation SMAPE must still
        # be the fp32 score of its inference model, the one the combination is weighed by.
        short = train_member(root / "snaive", seed=3, epochs=2, input_size=96, precision="bf16")
        long = train_member(root / "snaive-120", seed=2, epochs=3, input_size=120)
        outcome = combine_job(
            (("snaive", short), ("snaive-120", long)), out_dir=root / "combination"
        )
        yield {"root": root, "short": short, "long": long, "outcome": outcome}


def _metrics(path: Path) -> dict:
    return json.loads((path / "metrics.json").read_text())


def test_two_short_term_models_are_weighed_by_validation_smape(m4: dict) -> None:
    outcome: CombineOutcome = m4["outcome"]
    assert isinstance(outcome.task, ShortTermTask) and outcome.task.val_metric == "smape"
    assert outcome.artifact is not None and outcome.metrics is not None
    weight = outcome.choice.weight
    assert 0.0 < weight < 1.0
    short, long = _metrics(m4["short"]), _metrics(m4["long"])
    # Either member alone is on the grid, scored as its own artifact recorded it: the
    # selection compares the combination's validation SMAPE with the members' like for like.
    assert outcome.choice.by_weight[1.0] == pytest.approx(short["val_smape"], rel=1e-9)
    assert outcome.choice.by_weight[0.0] == pytest.approx(long["val_smape"], rel=1e-9)
    combined = outcome.metrics
    assert combined["val_smape"] == pytest.approx(outcome.choice.score, rel=1e-9)
    assert combined["val_smape"] < min(short["val_smape"], long["val_smape"])
    # Judged like any short-term model: OWA is its headline, M4's interval scores beside it.
    assert (combined["metric"], combined["score"]) == ("owa", combined["owa"])
    assert {"smape", "mase", "owa", "coverage_80", "coverage_95", "msis_95"} <= set(combined)
    assert combined["weights"] == {"snaive": weight, "snaive-120": pytest.approx(1 - weight)}
    assert combined["eval_split_hash"] == outcome.task.fingerprint()


def test_a_short_term_combination_forecasts_with_its_own_seasonal_rmse_intervals(
    m4: dict,
) -> None:
    outcome: CombineOutcome = m4["outcome"]
    assert outcome.artifact is not None and outcome.metrics is not None
    fc = Forecaster.load(outcome.artifact)
    info = fc.describe()
    assert info["kind"] == "combination" and fc.input_size == 120 and fc.channels == ("value",)
    assert fc.intervals is not None
    # M4 Hourly's scheme (`data.intervals`), the longest member's config's as the combination's.
    assert fc.config.data.intervals is not None
    assert fc.intervals.describe()["normalizer"] == fc.config.data.intervals.normalizer
    assert fc.config.data.intervals.normalizer == "seasonal-rmse"
    assert fc.intervals.data_fingerprint == outcome.metrics["eval_split_hash"]

    # Scored again from the artifact, it is what combine_job recorded.
    task = task_for_model(fc)
    assert isinstance(task, ShortTermTask)
    assert task.score(fc.model, "test")["owa"] == pytest.approx(outcome.metrics["owa"], rel=1e-9)

    # The point forecast is the weighted mean of the members' own forecasts, in data units.
    w = task.splits.windows
    members = Forecaster.load(m4["short"]), Forecaster.load(m4["long"])
    weight = outcome.choice.weight
    full = [i for i, s in enumerate(w.train) if len(s) >= fc.input_size]
    assert full, "some series must be longer than the longest lookback"
    for i in full:
        history = w.train[i][:, None]  # [T, 1]: the series' whole training part
        bands = fc.predict(history, levels=(80, 95))
        mean = weight * members[0].predict(history) + (1 - weight) * members[1].predict(history)
        np.testing.assert_allclose(bands.point, mean, rtol=1e-5)
        assert bands.point.shape == (HOURLY_H, 1)
        assert np.all(bands.lower[95] <= bands.lower[80]) and np.all(bands.lower[80] <= bands.point)
        assert np.all(bands.point <= bands.upper[80]) and np.all(bands.upper[80] <= bands.upper[95])

    # What a served history gets is what the test coverage in metrics.json was measured on:
    # each series' window scale, from the window the combination reads.
    test = model_forecasts(fc.model, task.splits, "test")
    lower, upper = interval_bounds(test, fc.intervals, task.splits, (80, 95))
    for i in full:
        bands = fc.predict(w.train[i][:, None], levels=(80, 95))
        for level in (80, 95):
            np.testing.assert_allclose(bands.lower[level][:, 0], lower[level][i], rtol=1e-5)
            np.testing.assert_allclose(bands.upper[level][:, 0], upper[level][i], rtol=1e-5)


def test_a_short_term_combination_recalibrates_and_is_promoted_by_owa(
    m4: dict, tmp_path: Path
) -> None:
    outcome: CombineOutcome = m4["outcome"]
    assert outcome.artifact is not None and outcome.metrics is not None
    copy = tmp_path / "combination"
    shutil.copytree(outcome.artifact, copy)
    calibrated = calibrate_job(copy)
    assert artifact_kind(copy) == "combination"
    assert calibrated.checked_on == "test_series" and calibrated.n_checked == N_SERIES
    assert calibrated.scores.n == outcome.metrics["calibration_windows"]
    after = Forecaster.load(copy)
    assert after.metrics["coverage_80"] == pytest.approx(outcome.metrics["coverage_80"])
    assert [m["name"] for m in after.describe()["members"]] == ["snaive", "snaive-120"]

    # Stored OWA compares across lookbacks: the shorter member read other windows of the same
    # series (another eval_split_hash) but scored the same test horizons (eval_targets_hash).
    registry = Registry(bentoml_home=tmp_path / "bentoml")
    short = _metrics(m4["short"])
    assert short["eval_split_hash"] != outcome.metrics["eval_split_hash"]
    assert short["eval_targets_hash"] == outcome.metrics["eval_targets_hash"]
    member = registry.register(m4["short"], metadata={"eval_split_hash": short["eval_split_hash"]})
    registry.promote(member, score=None, margin=0.0, force=True)
    tag = registry.register(copy, metadata={"eval_split_hash": outcome.metrics["eval_split_hash"]})
    assert registry.get(tag).headline == "owa"
    decision = registry.promote(
        tag, score=stored_mse_scorer(registry, registry.get(tag)), margin=0.0
    )
    assert decision.promoted == (after.metrics["owa"] < short["owa"])
    assert (decision.candidate_mse, decision.production_mse) == (
        pytest.approx(after.metrics["owa"]),
        pytest.approx(short["owa"]),
    )
    assert "candidate owa" in decision.reason and "production owa" in decision.reason


def test_members_trained_on_other_series_are_refused(m4: dict) -> None:
    root: Path = m4["root"]
    other = write_tiny_hourly(root / "other-mirror", N_SERIES - 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLATA_DATA_MIRROR", str(other))
        elsewhere = train_member(root / "elsewhere", seed=4, epochs=1, input_size=96)
    # The identity scaler of a short-term model cannot tell; the data's hash does.
    assert (
        Forecaster.load(elsewhere).scaler.channels == Forecaster.load(m4["short"]).scaler.channels
    )
    with pytest.raises(ValueError, match="'elsewhere' was trained on data with SHA-256"):
        combine_job(
            (("elsewhere", elsewhere), ("snaive-120", m4["long"])),
            out_dir=root / "refused",
        )
    assert not (root / "refused").exists()
