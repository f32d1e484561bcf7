"""The forecasting task contract: both kinds train and score through it, artifacts name
their headline metric, and checkpoints and artifacts written before it still work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llata_core.config import LlataConfig, config_from_dict
from llata_core.data import make_splits, series_from_frame
from llata_core.forecaster import Forecaster
from llata_core.jobs import train_job
from llata_core.shortterm import load_short_term_splits
from llata_core.tasks import LongTermTask, ShortTermTask, as_task, load_task
from llata_core.train import Checkpoint, fit, read_history
from tests.conftest import sine_frame

OLD = Path(__file__).resolve().parent / "fixtures" / "old_format"
EXPECTED = json.loads((OLD / "expected_val_scores.json").read_text())


def _old_run(name: str, tmp_path: Path) -> tuple[Path, LlataConfig]:
    run_dir = shutil.copytree(OLD / name, tmp_path / name)
    return run_dir, config_from_dict(json.loads((run_dir / "params.json").read_text()))


def _sine_task(cfg: LlataConfig) -> LongTermTask:
    series = series_from_frame(sine_frame(), cfg.data, origin="sine.csv")
    return LongTermTask(make_splits(series, cfg.data))


def test_an_old_long_term_checkpoint_resumes_where_it_stopped(tmp_path: Path) -> None:
    run_dir, cfg = _old_run("longterm_run", tmp_path)
    old = read_history(run_dir / "history.jsonl")
    assert [(h.val_metric, h.val_score) for h in old] == [("mse", EXPECTED["longterm_run"][0])]
    assert old[0].val_extra.keys() == {"mae"}

    resumed = fit(cfg, _sine_task(cfg), None, run_dir=run_dir, resume=True, progress=False)
    assert [h.epoch for h in resumed.history] == [1, 2]
    assert resumed.val_metric == "mse"
    scores = [h.val_score for h in resumed.history]
    assert scores == pytest.approx(EXPECTED["longterm_run"], abs=1e-6)
    assert resumed.best_val_score == min(scores)
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["val_metric"] == "mse" and state["best_val_score"] == min(scores)
    assert "best_val_mse" not in state


def test_an_old_short_term_checkpoint_resumes_with_its_smape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, cfg = _old_run("shortterm_run", tmp_path)
    monkeypatch.chdir(run_dir)  # the config names `long.csv`
    state = Checkpoint(run_dir).state()  # its `best_val_mse` held the SMAPE
    assert (state.val_metric, state.best_val_score) == ("smape", EXPECTED["shortterm_run"][0])

    splits = load_short_term_splits(cfg.data, seed=cfg.train.seed)
    resumed = fit(cfg, splits, None, run_dir=run_dir, resume=True, progress=False)
    assert [(h.epoch, h.val_metric) for h in resumed.history] == [(1, "smape"), (2, "smape")]
    scores = [h.val_score for h in resumed.history]
    assert scores == pytest.approx(EXPECTED["shortterm_run"], abs=1e-5)
    assert resumed.best_val_score == min(scores)


def test_an_old_artifact_loads_and_forecasts_as_before() -> None:
    fc = Forecaster.load(OLD / "longterm_model")
    assert "metric" not in fc.metrics  # written before artifacts named their headline
    forecast = fc.predict(sine_frame().iloc[-fc.input_size :])
    np.testing.assert_allclose(forecast, np.load(OLD / "longterm_model_forecast.npy"), rtol=1e-6)


def test_artifacts_name_their_headline_metric(tmp_path: Path) -> None:
    long_raw = json.loads((OLD / "longterm_run" / "params.json").read_text())
    cfg = config_from_dict(long_raw)
    series = series_from_frame(sine_frame(), cfg.data, origin="sine.csv")
    outcome = train_job(cfg, out_dir=tmp_path / "long", run_dir=tmp_path / "lr", series=series)
    saved = json.loads((tmp_path / "long" / "metrics.json").read_text())
    assert (saved["metric"], saved["score"], saved["lower_is_better"]) == (
        "mse",
        saved["mse"],
        True,
    )
    assert outcome.summary().keys() >= {"test_mse", "test_mae"}

    short = config_from_dict(json.loads((OLD / "shortterm_run" / "params.json").read_text()))
    shutil.copy(OLD / "shortterm_run" / "long.csv", tmp_path / "long.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)  # the config names `long.csv`
        outcome = train_job(short, out_dir=tmp_path / "short", run_dir=tmp_path / "sr")
        task = load_task(short.data, seed=short.train.seed)
    saved = json.loads((tmp_path / "short" / "metrics.json").read_text())
    assert (saved["metric"], saved["score"]) == ("owa", saved["owa"])
    # Validation is scored again on the inference model in fp32 (what a combination of it is
    # weighed against); for an fp32 run that is the score training stopped on.
    inference = Forecaster.load(tmp_path / "short").model
    assert saved["val_smape"] == pytest.approx(task.score(inference, "val")["smape"], rel=1e-9)
    assert saved["val_smape"] == pytest.approx(outcome.fit.best_val_score, rel=1e-6)
    assert isinstance(task, ShortTermTask) and task.fingerprint() == saved["eval_split_hash"]


def test_splits_of_either_kind_adapt_to_a_task_and_nothing_else_does(tmp_path: Path) -> None:
    cfg = config_from_dict(json.loads((OLD / "longterm_run" / "params.json").read_text()))
    task = _sine_task(cfg)
    assert as_task(task) is task
    assert as_task(task.splits) == task
    with pytest.raises(TypeError, match="not a forecasting task"):
        as_task(task.splits.train)
