"""The model artifact: save -> load is exact; bad artifacts and bad inputs fail clearly."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llata_core.backbone import prepare_backbone
from llata_core.combination import Combination, Member
from llata_core.config import config_from_dict, resolve_precision
from llata_core.data import Scaler
from llata_core.forecaster import (
    INTERVALS_FILE,
    ArtifactError,
    Forecaster,
    ForecastInputError,
    IntervalsUnavailableError,
    add_intervals,
    artifact_kind,
    copy_artifact,
    read_artifact_record,
    save_artifact,
    save_combination,
    verify_manifest,
)
from llata_core.intervals import ConformalScores, IntervalForecast, window_scale
from llata_core.model import LlataModel
from tests.conftest import FAMILIES, tiny_overrides
from tests.test_model import train_steps

CHANNELS = ("a", "b", "c")


def _artifact(tmp_path: Path, backbone: str = "tiny-gpt2") -> tuple[Path, LlataModel, Scaler]:
    cfg = config_from_dict(tiny_overrides(backbone))
    torch.manual_seed(0)
    model = LlataModel(cfg, prepare_backbone(cfg.model))
    train_steps(model)
    model.eval()
    scaler = Scaler(CHANNELS, np.array([10.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0]))
    path = save_artifact(
        tmp_path / "model",
        model.to_inference(),
        scaler,
        {"mse": 0.5, "mae": 0.4},
        metadata={"data_sha256": "abc"},
    )
    return path, model, scaler


def _history(n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(loc=[10.0, -2.0, 0.5], scale=[2.0, 0.5, 3.0], size=(n, 3))


@pytest.mark.parametrize("backbone", FAMILIES)
def test_save_load_gives_identical_forecasts_in_data_units(tmp_path: Path, backbone: str) -> None:
    path, model, scaler = _artifact(tmp_path, backbone)
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "manifest.json",
        "metrics.json",
        "model.safetensors",
        "scaler.json",
    ]
    fc = Forecaster.load(path)
    history = _history()
    got = fc.predict(history)
    assert got.shape == (8, 3)
    x = torch.from_numpy(scaler.transform(history[-32:]))[None]
    with torch.no_grad():
        expected = scaler.inverse(model(x, distill=False).y_time.numpy())[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(Forecaster.load(path).predict(history), got)
    assert fc.metrics["mse"] == 0.5 and fc.metadata["data_sha256"] == "abc"
    assert fc.describe()["channels"] == list(CHANNELS)


def test_longer_horizon_is_rolled_out_and_batch_matches_single(tmp_path: Path) -> None:
    fc = Forecaster.load(_artifact(tmp_path)[0])
    history = _history()
    long = fc.predict(history, horizon=20)
    assert long.shape == (20, 3)
    np.testing.assert_allclose(long[:8], fc.predict(history), rtol=1e-5)
    batch = fc.predict_batch(np.stack([history, history[::-1]]), horizon=5)
    np.testing.assert_allclose(batch[0], fc.predict(history, horizon=5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_bf16_load_holds_bfloat16_weights_and_answers_close_to_fp32(
    tmp_path: Path, backbone: str
) -> None:
    path, _, _ = _artifact(tmp_path, backbone)
    fp32 = Forecaster.load(path)
    bf16 = Forecaster.load(path, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    assert bf16.describe()["precision"] == "bf16"
    history = _history()
    got, want = bf16.predict(history), fp32.predict(history)
    assert got.dtype == want.dtype and np.isfinite(got).all()
    # bf16 keeps 8 mantissa bits; the normalisation and its inverse stay fp32, so the error
    # is a small fraction of the series' scale, not of its level.
    scale = history.std(axis=0)
    assert (np.abs(got - want) / scale).max() < 0.05
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("fp16")


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    fc = Forecaster.load(_artifact(tmp_path)[0])
    with pytest.raises(ForecastInputError, match="needs at least 32"):
        fc.predict(_history(10))
    with pytest.raises(ForecastInputError, match="4 channels, the model expects 3"):
        fc.predict(np.zeros((40, 4)))
    bad = _history()
    bad[-1, 1] = np.nan
    with pytest.raises(ForecastInputError, match="NaN"):
        fc.predict(bad)
    with pytest.raises(ForecastInputError, match=r"\[steps, channels\]"):
        fc.predict(np.zeros(40))
    with pytest.raises(ForecastInputError, match="not a numeric"):
        fc.predict([[1.0, 2.0, 3.0], [1.0, 2.0]])
    with pytest.raises(ForecastInputError, match="horizon must be at least 1"):
        fc.predict(_history(), horizon=0)


def test_missing_truncated_and_tampered_artifacts_fail(tmp_path: Path) -> None:
    path, _, _ = _artifact(tmp_path)
    with pytest.raises(ArtifactError, match="not found"):
        Forecaster.load(tmp_path / "nope")

    truncated = tmp_path / "truncated"
    shutil.copytree(path, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="model.safetensors does not match its checksum"):
        Forecaster.load(truncated)

    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    scaler = json.loads((tampered / "scaler.json").read_text())
    scaler["mean"][0] = 99.0
    (tampered / "scaler.json").write_text(json.dumps(scaler))
    with pytest.raises(ArtifactError, match="scaler.json does not match"):
        Forecaster.load(tampered)

    incomplete = tmp_path / "incomplete"
    shutil.copytree(path, incomplete)
    (incomplete / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match="metrics.json is missing"):
        Forecaster.load(incomplete)
    (incomplete / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        Forecaster.load(incomplete)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = _artifact(tmp_path)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used while loading an artifact")

    monkeypatch.setattr("pickle.load", forbidden)
    monkeypatch.setattr("pickle.loads", forbidden)
    monkeypatch.setattr("torch.load", forbidden)
    Forecaster.load(path).predict(_history())


def test_overwrite_is_atomic_and_explicit(tmp_path: Path) -> None:
    path, model, scaler = _artifact(tmp_path)
    with pytest.raises(ArtifactError, match="exists"):
        save_artifact(path, model.to_inference(), scaler, {"mse": 1.0})
    save_artifact(path, model.to_inference(), scaler, {"mse": 0.25}, overwrite=True)
    assert Forecaster.load(path).metrics["mse"] == 0.25
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------ conformal intervals


def _scores(horizon: int = 8, n: int = 40, seed: int = 0) -> ConformalScores:
    rng = np.random.default_rng(seed)
    # Wider for later steps and for channel b, as real residuals are.
    scale = np.linspace(0.5, 1.5, horizon)[:, None] * np.array([1.0, 2.0, 0.5])
    return ConformalScores.from_residuals(
        rng.normal(size=(n, horizon, 3)) * scale, split="val", data_fingerprint="f00"
    )


def _calibrated(tmp_path: Path) -> tuple[Path, Scaler, ConformalScores]:
    path, model, scaler = _artifact(tmp_path)
    scores = _scores()
    save_artifact(
        path, model.to_inference(), scaler, {"mse": 0.5}, intervals=scores, overwrite=True
    )
    return path, scaler, scores


def test_stored_scores_survive_save_load_and_give_bounds_in_data_units(tmp_path: Path) -> None:
    path, scaler, scores = _calibrated(tmp_path)
    assert INTERVALS_FILE in json.loads((path / "manifest.json").read_text())["files"]
    fc = Forecaster.load(path)
    assert fc.intervals is not None
    np.testing.assert_array_equal(fc.intervals.scores, scores.scores)
    assert (fc.intervals.split, fc.intervals.data_fingerprint) == ("val", "f00")
    assert fc.describe()["intervals"]["n_windows"] == 40

    history = _history()
    point = fc.predict(history)
    bands = fc.predict(history, levels=(80, 95))
    assert isinstance(bands, IntervalForecast) and bands.levels == (80.0, 95.0)
    np.testing.assert_array_equal(bands.point, point)  # the no-levels call is unchanged
    for level in (80, 95):
        # Scores are on the scaled axis: a half-width q is q * std in data units.
        half = scores.half_width(level) * scaler.std
        np.testing.assert_allclose(bands.upper[level] - point, half, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(point - bands.lower[level], half, rtol=1e-6, atol=1e-9)
    assert (bands.upper[95] >= bands.upper[80]).all()

    frame = bands.to_frame()
    assert list(frame.columns[:3]) == list(CHANNELS)
    assert list(frame.columns[3:7]) == ["a_lo_80", "a_hi_80", "a_lo_95", "a_hi_95"]
    np.testing.assert_array_equal(frame["c_hi_95"], bands.upper[95][:, 2])

    short = fc.predict(history, horizon=5, levels=[80])
    np.testing.assert_allclose(short.upper[80], bands.upper[80][:5], rtol=1e-5, atol=1e-5)
    batch = fc.predict_batch(np.stack([history, history[::-1]]), levels=(80,))
    assert batch.point.shape == batch.lower[80].shape == (2, 8, 3)
    np.testing.assert_allclose(batch[0].upper[80], bands.upper[80], rtol=1e-5, atol=1e-5)


def test_normalised_scores_scale_each_forecast_by_its_own_window(tmp_path: Path) -> None:
    """`seasonal-mae` scores (panels of series on unrelated scales): each forecast's
    half-width is the score times its input window's seasonal-naive MAE."""
    path, model, scaler = _artifact(tmp_path)
    rng = np.random.default_rng(1)
    residuals = rng.normal(size=(40, 8, 3))
    scale = rng.uniform(0.5, 2.0, size=(40, 1, 3))
    scores = ConformalScores.from_residuals(residuals, scale=scale, seasonality=4)
    add_intervals(path, scores)
    fc = Forecaster.load(path)
    assert fc.intervals is not None and fc.intervals.normalizer == "seasonal-mae"
    calm, wild = _history(), _history() * 5.0
    bands = fc.predict_batch(np.stack([calm, wild]), levels=(80,))
    for i, history in enumerate((calm, wild)):
        window = scaler.transform(history[-fc.input_size :])[None]  # [1, L, M] scaled
        half = scores.half_width(80) * window_scale(window, 4)[0] * scaler.std  # data units
        np.testing.assert_allclose(bands.upper[80][i] - bands.point[i], half, rtol=1e-5)
        np.testing.assert_allclose(bands.point[i] - bands.lower[80][i], half, rtol=1e-5)


def test_intervals_beyond_the_trained_horizon_and_bad_levels_are_refused(tmp_path: Path) -> None:
    fc = Forecaster.load(_calibrated(tmp_path)[0])
    history = _history()
    assert fc.predict(history, horizon=20).shape == (20, 3)  # the roll-out itself still works
    with pytest.raises(ForecastInputError, match="calibrated for the trained horizon of 8"):
        fc.predict(history, horizon=20, levels=(80,))
    for levels, message in [
        ((80, 80), "given twice"),
        ((0,), "outside"),
        ((100,), "outside"),
        ((0.9,), "looks like a fraction"),
        ((50, 60, 70, 80, 90, 95), "at most 5"),
        (
            (99,),
            "99% interval needs at least 99 calibration windows, the model was calibrated on 40",
        ),
    ]:
        with pytest.raises(ForecastInputError, match=re.escape(message)):
            fc.predict(history, levels=levels)
    assert issubclass(ForecastInputError, ValueError)


def test_old_artifacts_load_and_refuse_levels_naming_llata_calibrate(tmp_path: Path) -> None:
    path, _, _ = _artifact(tmp_path)  # saved without scores, as before intervals existed
    fc = Forecaster.load(path)
    assert fc.intervals is None and fc.describe()["intervals"] is None
    assert fc.predict(_history()).shape == (8, 3)
    with pytest.raises(IntervalsUnavailableError, match=r"llata calibrate --model .*model"):
        fc.predict(_history(), levels=(80,))
    with pytest.raises(IntervalsUnavailableError, match="no calibrated intervals"):
        fc.predict_batch(_history()[None], levels=(80,))


def test_aci_levels_are_stored_served_and_covered_by_the_manifest(tmp_path: Path) -> None:
    """A recalibration's ACI state travels with the scores: serving answers 80% with the
    quantile at its effective level, and editing the state breaks the checksum."""
    path, model, scaler = _artifact(tmp_path)
    plain = _scores()
    save_artifact(
        path,
        model.to_inference(),
        scaler,
        {"mse": 0.5},
        intervals=plain.with_levels({80.0: 90.0}),
        overwrite=True,
    )
    fc = Forecaster.load(path)
    assert fc.intervals is not None and fc.intervals.effective_levels == {80.0: 90.0}
    # GET /model states it (the served answer's schema, as the watcher fills it).
    from serving.bodies import IntervalCalibration

    shown = IntervalCalibration.model_validate(fc.describe()["intervals"])
    assert shown.effective_levels == {"80": 90.0}
    history = _history()
    bands = fc.predict(history, levels=(80, 95))
    for level, read_at in ((80, 90), (95, 95)):
        half = plain.half_width(read_at) * scaler.std
        np.testing.assert_allclose(bands.upper[level] - bands.point, half, rtol=1e-6, atol=1e-9)

    file = path / INTERVALS_FILE
    ConformalScores.load(file).with_levels({80.0: 70.0}).save(file)  # narrower 80% bands
    with pytest.raises(ArtifactError, match=f"{INTERVALS_FILE} does not match its checksum"):
        Forecaster.load(path)


def test_manifest_catches_tampered_scores_and_ignores_unlisted_ones(tmp_path: Path) -> None:
    path, _, _ = _calibrated(tmp_path)
    tampered = tmp_path / "tampered"
    shutil.copytree(path, tampered)
    file = tampered / INTERVALS_FILE
    scores = ConformalScores.load(file)
    ConformalScores(scores.scores * 0.5, split="val").save(file)  # narrower bands
    with pytest.raises(ArtifactError, match=f"{INTERVALS_FILE} does not match its checksum"):
        Forecaster.load(tampered)
    file.unlink()
    with pytest.raises(ArtifactError, match=f"{INTERVALS_FILE} is missing"):
        Forecaster.load(tampered)

    # A scores file the manifest does not list is not part of the artifact.
    stray = tmp_path / "stray"
    _, model, scaler = _artifact(tmp_path / "plain")
    shutil.copytree(tmp_path / "plain" / "model", stray)
    shutil.copy2(path / INTERVALS_FILE, stray / INTERVALS_FILE)
    assert Forecaster.load(stray).intervals is None


def test_add_intervals_rewrites_an_old_artifact_atomically(tmp_path: Path) -> None:
    path, _, _ = _artifact(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    add_intervals(path, _scores(), {"coverage_80": 0.81})
    fc = Forecaster.load(path)
    assert fc.intervals is not None and fc.intervals.n == 40
    assert fc.metrics == {"mse": 0.5, "mae": 0.4, "coverage_80": 0.81}
    for name in ("config.json", "model.safetensors", "scaler.json"):
        assert (path / name).read_bytes() == before[name]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    add_intervals(path, _scores(n=60, seed=1))  # calibrating again replaces the scores
    assert Forecaster.load(path).intervals.n == 60  # type: ignore[union-attr]
    with pytest.raises(ArtifactError, match="cover 4 steps x 3 channels; the model forecasts 8"):
        add_intervals(path, _scores(horizon=4))
    assert Forecaster.load(path).intervals.n == 60  # type: ignore[union-attr]
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        add_intervals(path, _scores())


def test_loading_scores_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = _calibrated(tmp_path)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used while loading an artifact")

    monkeypatch.setattr("pickle.load", forbidden)
    monkeypatch.setattr("pickle.loads", forbidden)
    monkeypatch.setattr("torch.load", forbidden)
    Forecaster.load(path).predict(_history(), levels=(80,))


# --------------------------------------------------------------------------- combinations


def _member(tmp_path: Path, name: str, input_size: int, seed: int, **data: object) -> Path:
    """A tiny DLinear artifact (random weights: members differ by their seed)."""
    from llata_core.baselines import build_baseline

    horizon = int(data.pop("horizon", 8))  # type: ignore[call-overload]
    scaler = data.pop("scaler", SCALER)
    cfg = config_from_dict(
        tiny_overrides(model__kind="dlinear", data__input_size=input_size, data__horizon=horizon)
    )
    torch.manual_seed(seed)
    model = build_baseline(cfg).to_inference()
    return save_artifact(
        tmp_path / name,
        model,
        scaler,  # type: ignore[arg-type]
        {"mse": 0.5, "train_seconds": 2.0},
        metadata={"data_sha256": "abc", "candidate": name},
    )


SCALER = Scaler(CHANNELS, np.array([10.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0]))


def _save_combination(
    tmp_path: Path,
    members: list[tuple[str, Path]],
    weights: tuple[float, float],
    intervals: ConformalScores | None = None,
) -> Path:
    """The combination artifact of saved `(name, path)` members at `weights`."""
    loaded = [(name, Forecaster.load(path)) for name, path in members]
    model = Combination([Member(name, fc.model, fc.scaler) for name, fc in loaded], weights)
    return save_combination(
        tmp_path / "combo",
        members,
        model.weights,
        model.cfg,
        SCALER,
        {"mse": 0.4, "mae": 0.3, "metric": "mse", "score": 0.4},
        metadata={"candidate": "+".join(name for name, _ in members), "data_sha256": "abc"},
        intervals=intervals,
    )


def _combination(tmp_path: Path, weight: float = 0.3) -> tuple[Path, Path, Path]:
    long, short = _member(tmp_path, "long", 40, 1), _member(tmp_path, "short", 32, 2)
    path = _save_combination(
        tmp_path, [("long", long), ("short", short)], (weight, 1.0 - weight), _scores()
    )
    return path, long, short


def test_a_combination_forecasts_the_weighted_mean_of_its_members_in_data_units(
    tmp_path: Path,
) -> None:
    path, long, short = _combination(tmp_path, weight=0.3)
    fc, fa, fb = Forecaster.load(path), Forecaster.load(long), Forecaster.load(short)
    assert fc.input_size == 40 and fc.horizon == 8 and fc.channels == CHANNELS
    history = _history(50)  # each member reads its own last rows of it
    expected = 0.3 * fa.predict(history) + 0.7 * fb.predict(history)
    np.testing.assert_allclose(fc.predict(history), expected, rtol=1e-6, atol=1e-9)
    batch = fc.predict_batch(np.stack([history, history[::-1]]))
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6, atol=1e-9)
    # Its intervals are its own scores' (the members were saved without any).
    assert fa.intervals is None and fb.intervals is None
    bands = fc.predict(history, levels=(80, 95))
    np.testing.assert_allclose(bands.point, expected, rtol=1e-6, atol=1e-9)
    for level in (80, 95):
        half = _scores().half_width(level) * SCALER.std
        np.testing.assert_allclose(bands.upper[level] - bands.point, half, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(bands.point - bands.lower[level], half, rtol=1e-6, atol=1e-9)
    described = fc.describe()
    assert described["kind"] == "combination" and described["input_size"] == 40
    assert described["members"] == [
        {"name": "long", "kind": "dlinear", "input_size": 40, "weight": 0.3, "precision": "fp32"},
        {"name": "short", "kind": "dlinear", "input_size": 32, "weight": 0.7, "precision": "fp32"},
    ]
    assert described["backbone"] is None and described["n_layers"] is None
    assert fc.precision == "fp32"
    with pytest.raises(ForecastInputError, match="at least 40"):
        fc.predict(history[-35:])


def test_a_combination_of_an_llm_model_and_a_baseline_in_bf16_says_mixed(tmp_path: Path) -> None:
    """`precision="bf16"` casts an LLM member's weights; a baseline member stays fp32, and
    the combination reports both rather than whichever member happens to come first."""
    llm, _, _ = _artifact(tmp_path)
    baseline = _member(tmp_path, "dlinear", 40, 1)
    path = _save_combination(tmp_path, [("dlinear", baseline), ("llata", llm)], (0.5, 0.5))
    bf16, fp32 = Forecaster.load(path, precision="bf16"), Forecaster.load(path)
    assert (bf16.precision, fp32.precision) == ("mixed", "fp32")
    assert [m["precision"] for m in bf16.describe()["members"]] == ["fp32", "bf16"]
    baseline, llm_member = bf16.describe()["members"]
    assert (llm_member["backbone"], llm_member["n_layers"]) == ("tiny-gpt2", 2)
    assert "backbone" not in baseline and bf16.describe()["backbone"] is None
    assert bf16.describe()["precision"] == "mixed"
    history = _history(50)
    np.testing.assert_allclose(bf16.predict(history), fp32.predict(history), rtol=0.05, atol=0.1)


def test_a_combination_round_trips_copies_and_catches_a_tampered_member(tmp_path: Path) -> None:
    path, _, _ = _combination(tmp_path)
    files = verify_manifest(path)
    assert {"members/long/model.safetensors", "members/short/manifest.json"} <= set(files)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == artifact_kind(path) == "combination"
    history = _history(50)
    copy = tmp_path / "copy"
    copy.mkdir()
    copy_artifact(path, copy, files)
    np.testing.assert_array_equal(
        Forecaster.load(copy).predict(history), Forecaster.load(path).predict(history)
    )
    record = read_artifact_record(copy)
    assert record.config["data"]["input_size"] == 40 and record.channels == CHANNELS
    assert record.metadata["candidate"] == "long+short"
    # Recalibrating rewrites the combination's own scores and keeps its kind and members.
    add_intervals(copy, _scores(seed=3), {"calibration_windows": 40})
    assert artifact_kind(copy) == "combination"
    np.testing.assert_array_equal(
        Forecaster.load(copy).predict(history), Forecaster.load(path).predict(history)
    )
    # A member's file changed after writing fails the whole, by name.
    weights = path / "members" / "short" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ArtifactError, match="members/short/model.safetensors does not match"):
        Forecaster.load(path)
    # A single model's manifest keeps its old form.
    assert "kind" not in json.loads((tmp_path / "long" / "manifest.json").read_text())


def test_members_that_cannot_be_averaged_are_refused_naming_both(tmp_path: Path) -> None:
    base = Forecaster.load(_member(tmp_path, "base", 32, 1))
    other_scale = Scaler(CHANNELS, np.array([11.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0]))
    other_channels = Scaler(("a", "b", "d"), SCALER.mean, SCALER.std)
    cases = {
        "scaled differently": _member(tmp_path, "rescaled", 32, 2, scaler=other_scale),
        "different horizons": _member(tmp_path, "longer", 32, 2, horizon=12),
        "different channels": _member(tmp_path, "renamed", 32, 2, scaler=other_channels),
    }
    for message, path in cases.items():
        fc = Forecaster.load(path)
        members = [Member("base", base.model, base.scaler), Member(path.name, fc.model, fc.scaler)]
        with pytest.raises(ValueError, match=f"'base' and '{path.name}' .*{message}"):
            Combination(members, (0.5, 0.5))
    with pytest.raises(ValueError, match="sum to 1"):
        Combination([Member("base", base.model, base.scaler)], (0.9,))
