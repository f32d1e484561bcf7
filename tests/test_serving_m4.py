"""An M4 Hourly model end to end: registered, gated on its headline metric (OWA) against an
M4 production model, served by a real `bentoml serve` on 127.0.0.1, and answering
`/forecast` for one univariate history and `/forecast_series` from a Feast repo that holds
one entity per series; then a combination of two of them (`combine_job`), promoted in its
place and served the same way. Tiny data (24 generated Hourly series), DLinear, fp32."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from llata_core.combination_job import combine_job
from llata_core.config import config_from_dict
from llata_core.forecaster import Forecaster
from llata_core.jobs import train_job
from llata_core.shortterm import load_short_term_splits
from serving.registry import Registry, RegistryError, stored_mse_scorer
from tests.conftest import tiny_overrides
from tests.test_serving import serve, server_env, wait_serving
from tests.test_shortterm_train import HOURLY_H, write_tiny_hourly

INPUT = 2 * HOURLY_H
LONG_INPUT = 120  # the combination's longer member: the Feast window holds this many steps
N_SERIES = 24  # one calibration window per series: 95 % intervals need 19


def _train(
    out: Path, seed: int, epochs: int, seasonal_base: bool = False, input_size: int = INPUT
) -> Path:
    raw = tiny_overrides(train__epochs=epochs, train__seed=seed, train__max_steps_per_epoch=None)
    raw["data"] = {"dataset": "M4-Hourly", "input_size": input_size}
    raw["model"] |= {"kind": "dlinear", "seasonal_base": seasonal_base}
    raw["loss"] = {"task": "smape"}
    train_job(config_from_dict(raw), out_dir=out, run_dir=out.parent / f"run-{seed}")
    return out


def _series_frame(mirror: Path) -> pd.DataFrame:
    """The training series in long format; M4 gives no dates, so steps are stamped hourly."""
    cfg = config_from_dict({"data": {"dataset": "M4-Hourly"}})
    windows = load_short_term_splits(cfg.data).windows
    rows = []
    for sid, values in zip(windows.ids, windows.train, strict=True):
        stamps = pd.date_range("2020-01-01", periods=len(values), freq="h")
        rows.append(pd.DataFrame({"series_id": sid, "date": stamps, "value": values}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def m4(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("m4serving")
    mirror = write_tiny_hourly(root / "mirror", n_series=N_SERIES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLATA_DATA_MIRROR", str(mirror))
        patch.setenv("BENTOML_DO_NOT_TRACK", "True")
        patch.setattr(tempfile, "tempdir", str(root))
        weak = _train(root / "weak", seed=1, epochs=1)
        # A correction to seasonal naive: on these daily cycles it starts near the truth.
        strong = _train(root / "strong", seed=2, epochs=6, seasonal_base=True)
        # Another at a longer lookback, and the combination validation weighs them into.
        longer = _train(
            root / "longer", seed=3, epochs=3, seasonal_base=True, input_size=LONG_INPUT
        )
        combined = combine_job((("strong", strong), ("longer", longer)), out_dir=root / "combined")
        assert combined.artifact is not None, combined.choice
        frame = _series_frame(mirror)
        from features.store import prepare_feature_repo
        from features.validation import FrameSpec

        prepare_feature_repo(
            root / "feature_repo",
            frame,
            FrameSpec(min_rows=INPUT, series_column="series_id"),
            LONG_INPUT,
        )
        yield {"root": root, "weak": weak, "strong": strong, "combined": combined.artifact,
               "frame": frame}  # fmt: skip


def test_an_m4_model_is_gated_on_owa_and_served(m4: dict) -> None:
    root = m4["root"]
    metrics = {k: json.loads((m4[k] / "metrics.json").read_text()) for k in ("weak", "strong")}
    owa = {k: m["owa"] for k, m in metrics.items()}
    assert metrics["weak"]["metric"] == "owa" and metrics["weak"]["score"] == owa["weak"]
    home = root / "bentoml"
    registry = Registry(bentoml_home=home)
    tags = {
        k: registry.register(m4[k], metadata={"eval_split_hash": m["eval_split_hash"]})
        for k, m in metrics.items()
    }
    assert registry.get(tags["weak"]).headline == "owa"
    first = registry.promote(
        tags["weak"], score=stored_mse_scorer(registry, registry.get(tags["weak"])), margin=0.0
    )
    assert first.promoted
    second = registry.promote(
        tags["strong"], score=stored_mse_scorer(registry, registry.get(tags["strong"])), margin=0.0
    )
    assert (second.candidate_mse, second.production_mse) == (owa["strong"], owa["weak"])
    assert second.promoted and owa["strong"] < owa["weak"]
    assert "candidate owa" in second.reason and "production owa" in second.reason
    served_tag = tags["strong"]
    served = Forecaster.load(m4["strong"])
    assert served.config.model.seasonal_base  # what serving must reproduce

    env = server_env(
        home,
        LLATA_FEATURE_REPO=str(root / "feature_repo"),
        LLATA_MAX_STEPS="500",
        LLATA_MAX_HORIZON="96",
        LLATA_WORKERS="1",
    )
    frame = m4["frame"]
    with serve(env, root / "server.log") as (url, _proc):
        wait_serving(url, served_tag.split(":", 1)[1], workers=1, timeout=120)
        # One univariate history, longer than the model's input: the last 96 points count.
        history = frame[frame["series_id"] == "H3"]["value"].to_numpy()[-150:]
        r = requests.post(
            f"{url}/forecast",
            json={"history": history[:, None].tolist(), "levels": [80, 95]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["channels"] == ["value"] and len(body["forecast"]) == HOURLY_H
        bands = served.predict(history[:, None], levels=(80, 95))
        np.testing.assert_allclose(body["forecast"], bands.point, rtol=1e-5)
        for interval in body["intervals"]:
            level = interval["level"]
            np.testing.assert_allclose(interval["lower"], bands.lower[level], rtol=1e-5)
            np.testing.assert_allclose(interval["upper"], bands.upper[level], rtol=1e-5)
        short = requests.post(
            f"{url}/forecast", json={"history": history[:50, None].tolist()}, timeout=60
        )
        assert short.status_code == 422 and "96" in short.text

        # A series' window from Feast, by series id: the same answer as its history.
        r = requests.post(f"{url}/forecast_series", json={"series_id": "H3"}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["forecast"], bands.point, rtol=1e-5)
        unknown = requests.post(f"{url}/forecast_series", json={"series_id": "H99"}, timeout=60)
        assert unknown.status_code == 404

        # The combination takes over without a restart and answers like its Forecaster: the
        # weighted mean of its members, bands from its own `seasonal-rmse` scores.
        combo_metrics = json.loads((m4["combined"] / "metrics.json").read_text())
        combo_tag = registry.register(
            m4["combined"], metadata={"eval_split_hash": combo_metrics["eval_split_hash"]}
        )
        # Forced: the gate's comparison across lookbacks is tests/test_combination_shortterm's.
        registry.promote(combo_tag, score=None, margin=0.0, force=True)
        wait_serving(url, combo_tag.split(":", 1)[1], workers=1, timeout=120)
        combo = Forecaster.load(m4["combined"])
        info = requests.get(f"{url}/model", timeout=60).json()
        assert info["kind"] == "combination" and info["input_size"] == LONG_INPUT
        assert [m["name"] for m in info["members"]] == ["strong", "longer"]
        r = requests.post(
            f"{url}/forecast",
            json={"history": history[:, None].tolist(), "levels": [80, 95]},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        bands = combo.predict(history[:, None], levels=(80, 95))
        np.testing.assert_allclose(r.json()["forecast"], bands.point, rtol=1e-5)
        for interval in r.json()["intervals"]:
            level = interval["level"]
            np.testing.assert_allclose(interval["lower"], bands.lower[level], rtol=1e-5)
            np.testing.assert_allclose(interval["upper"], bands.upper[level], rtol=1e-5)
        short = requests.post(
            f"{url}/forecast", json={"history": history[:100, None].tolist()}, timeout=60
        )
        assert short.status_code == 422 and str(LONG_INPUT) in short.text
        r = requests.post(f"{url}/forecast_series", json={"series_id": "H3"}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["forecast"], bands.point, rtol=1e-5)


def test_models_of_different_tasks_are_not_compared(m4: dict, tmp_path: Path) -> None:
    """A stored-metrics gate never weighs OWA against MSE."""
    from tests.test_serving import build_artifacts

    long_term = build_artifacts(tmp_path / "artifacts")["a"]
    registry = Registry(bentoml_home=tmp_path / "bentoml")
    m4_tag = registry.register(m4["weak"], metadata={"eval_split_hash": "x"})
    lt_tag = registry.register(long_term, metadata={"eval_split_hash": "x"})
    registry.promote(m4_tag, score=None, margin=0.0, force=True)
    score = stored_mse_scorer(registry, registry.get(lt_tag))
    with pytest.raises(RegistryError, match="judged by mse .* by owa"):
        score(registry.get(m4_tag).path)
