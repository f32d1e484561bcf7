"""The retrain flow on many series: an M4 Hourly subset, the same flow as one wide series.

Real Prefect (the session's temporary server), Great Expectations, Feast and BentoML's
model store in temporary homes. The M4 files are a generated 24-series Hourly subset in a
temporary mirror (M4's format, `write_tiny_hourly`); the candidates are DLinear, DLinear
correcting seasonal naive at two lookbacks and the LLM-free LLaTA on a tiny backbone, one
short epoch each; the two best by validation SMAPE compete as their combination too.
"""

from __future__ import annotations

# First: tests.test_flows points Prefect at private homes before Prefect is imported, and
# its session server and BentoML home are this module's fixtures too.
from tests.test_flows import bentoml_home, prefect_api

FIXTURES = (bentoml_home, prefect_api)

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId  # noqa: E402

from features.store import UnknownSeriesError, open_feature_store, read_context_window  # noqa: E402
from flows.config import load_pipeline_config  # noqa: E402
from flows.registry_stages import open_registry, promote_stage, register_stage  # noqa: E402
from flows.retrain import CANDIDATES_ARTIFACT, METRICS_ARTIFACT, RetrainRequest, retrain  # noqa: E402
from flows.stages import validate_stage  # noqa: E402
from llata_core.config import (  # noqa: E402
    ConfigError,
    ShortTermIntervals,
    config_from_dict,
    load_params,
)
from llata_core.forecaster import Forecaster  # noqa: E402
from llata_core.shortterm import (  # noqa: E402
    load_short_term_splits,
    m4_long_frame,
    m4_mirror_paths,
    read_m4,
    select_series,
)
from tests.test_pipeline import REPO, write_params  # noqa: E402
from tests.test_shortterm_train import HOURLY_H, write_tiny_hourly  # noqa: E402

N_SERIES = 24  # one calibration window per series: 95 % intervals need 19
# The second seasonal-naive correction: another seed at a longer lookback, which no tiny
# series is too short for at validation (a zero-padded window misleads DLinear's norm).
LONG_INPUT = 100
COMBINATION = "dlinear-snaive+dlinear-snaive-long"  # the two best by validation, in order


def m4_params(root: Path, **pipeline: Any) -> Path:
    """The example params.m4-hourly.yaml with a tiny model and four quick candidates."""
    raw = yaml.safe_load((REPO / "params.m4-hourly.yaml").read_text())
    raw["model"].update(
        backbone="tiny-llama", n_layers=2, n_principal=16, encoder_heads=4, encoder_ffn=64
    )
    raw["train"].update(
        batch_size=32, eval_batch_size=256, epochs=1, precision="fp32", seed=0,
        max_steps_per_epoch=3,
    )  # fmt: skip
    snaive = [
        "model.kind=dlinear",
        "model.seasonal_base=true",
        "model.baseline.dlinear_norm=true",
        "train.lr=0.01",
    ]
    raw["pipeline"]["candidates"] = {
        "llata-no-llm": ["model.n_layers=0"],
        "dlinear": ["model.kind=dlinear", "train.lr=0.01"],
        "dlinear-snaive": snaive,
        "dlinear-snaive-long": [*snaive, f"data.input_size={LONG_INPUT}", "train.seed=1"],
    }
    raw["pipeline"]["series_selection"] = {"count": N_SERIES}
    raw["pipeline"]["selection"] = {"runner": {"kind": "thread"}}
    # A one-step model's intervals are what they are; the coverage gate has its own tests.
    raw["pipeline"]["registry"]["coverage_tolerance"] = None
    raw["pipeline"].update(pipeline)
    return write_params(root, raw)


def run(params: Path, *overrides: str) -> Any:
    return retrain(RetrainRequest(params_file=str(params), overrides=overrides), return_state=True)


def published(state: Any) -> dict[str, Any]:
    """The run's Prefect table artifacts by key."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    tables = {a.key: a.data for a in artifacts if a.type == "table"}
    return {k: json.loads(v) if isinstance(v, str) else v for k, v in tables.items()}


@pytest.fixture(scope="module")
def m4_run(
    prefect_api: str,
    bentoml_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("m4flow")
    mirror = write_tiny_hourly(root / "mirror", n_series=N_SERIES + 4)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLATA_DATA_MIRROR", str(mirror))
        params = m4_params(root / "project")
        state = run(params)
        yield {"params": params, "state": state, "mirror": mirror}


# --------------------------------------------------------------------------- the flow


def test_the_flow_registers_and_promotes_an_m4_model_judged_by_owa(m4_run: dict) -> None:
    state = m4_run["state"]
    assert state.is_completed(), state.message
    result = state.result()
    assert result.promoted and result.metric == "owa"
    assert result.metrics["metric"] == "owa" and result.metrics["n_series"] == N_SERIES
    assert {"smape", "mase", "owa", "coverage_80", "coverage_95", "msis_95"} <= set(result.metrics)

    production = open_registry(load_pipeline_config(m4_run["params"])).production()
    assert production is not None and production.tag == result.candidate
    assert production.headline == "owa"
    assert production.metrics["owa"] == pytest.approx(result.metrics["owa"])
    lineage = production.metadata["data_lineage"]
    assert lineage["dataset"] == "M4-Hourly" and lineage["channels"] == ["value"]
    assert lineage["frequency"] == "h" and lineage["synthetic"] is False
    assert lineage["series_id"].startswith(f"{N_SERIES} series (H1..")
    selection = production.metadata["selection"]
    assert {c["name"] for c in selection["candidates"]} == {
        "llata-no-llm",
        "dlinear",
        "dlinear-snaive",
        "dlinear-snaive-long",
        COMBINATION,
    }
    # The combination of the two best is a candidate like the others, chosen on validation
    # SMAPE by the one rule; its members were weighed on the same score.
    combination = next(c for c in selection["candidates"] if c["name"] == COMBINATION)
    assert combination["model_kind"] == "combination" and combination["val_metric"] == "smape"
    assert combination["input_size"] == LONG_INPUT
    singles = [c for c in selection["candidates"] if c["name"] != COMBINATION]
    assert combination["val_score"] < min(c["val_score"] for c in singles)
    assert result.winner == COMBINATION and production.metadata["candidate"] == COMBINATION
    served = Forecaster.load(production.path)
    assert served.describe()["kind"] == "combination" and served.input_size == LONG_INPUT

    # The report speaks the task's metrics: OWA, SMAPE, MASE, never MSE.
    by_key = published(state)
    rows = {row["metric"]: row["value"] for row in by_key[METRICS_ARTIFACT]}
    assert rows["test_owa"] == pytest.approx(result.metrics["owa"])
    assert rows["gate_candidate_owa"] == pytest.approx(result.metrics["owa"])
    assert {"test_smape", "test_mase", "val_smape", "test_series", "test_coverage_80"} <= set(rows)
    assert not [name for name in rows if "mse" in name]
    candidates = by_key[CANDIDATES_ARTIFACT]
    assert all("val_smape" in row and "val_mse" not in row for row in candidates)


def test_the_feature_store_holds_one_entity_per_series(m4_run: dict) -> None:
    cfg = load_pipeline_config(m4_run["params"])
    raw = pd.read_csv(cfg.layout.raw_data)
    ids = list(dict.fromkeys(raw["series_id"]))
    assert len(ids) == N_SERIES
    store = open_feature_store(cfg.layout.feature_repo)
    for sid in ids:
        window = read_context_window(store, sid)
        # The longest lookback of any candidate: the combination's longer member's.
        expected = raw.loc[raw["series_id"] == sid, "value"].to_numpy()[-LONG_INPUT:]
        np.testing.assert_allclose(window.values[:, 0], expected)
    with pytest.raises(UnknownSeriesError):
        read_context_window(store, f"H{N_SERIES + 1}")  # in the mirror, not selected
    # The training frame is the same long table, read back from Feast's offline store.
    training = pd.read_parquet(cfg.layout.training_frame)
    assert list(training.columns) == ["series_id", "date", "value"]
    assert (
        training.groupby("series_id").size().to_dict() == raw.groupby("series_id").size().to_dict()
    )


def test_a_run_on_other_series_is_another_lineage_and_is_refused(m4_run: dict) -> None:
    registry = open_registry(load_pipeline_config(m4_run["params"]))
    production = registry.production_tag()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLATA_DATA_MIRROR", str(m4_run["mirror"]))
        state = run(m4_run["params"], "pipeline.series_selection.count=20")
    assert state.is_completed(), state.message
    result = state.result()
    assert not result.promoted and result.production == production
    assert "data lineage differs" in result.reason and "series_id" in result.reason
    assert "20 series" in result.reason and f"{N_SERIES} series" in result.reason
    assert registry.history()[-1]["lineage_conflict"] == "lineage"


def test_a_wide_production_model_and_an_m4_candidate_are_refused(
    m4_run: dict, tmp_path: Path
) -> None:
    """A wide ETTh1 model in production: the M4 winner is registered, and refused by name."""
    from tests.test_serving import build_artifacts

    cfg = load_pipeline_config(
        m4_run["params"],
        overrides=["pipeline.registry.model_name=llata-mixed", "pipeline.registry.dir=mixed"],
    )
    registry = open_registry(cfg)
    wide = registry.register(
        build_artifacts(tmp_path)["a"],
        metadata={
            "eval_split_hash": "x",
            "data_lineage": {
                "dataset": "ETTh1",
                "series_id": "ETTh1",
                "channels": ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"],
                "frequency": "h",
                "synthetic": False,
            },
        },
    )
    registry.promote(wide, score=None, margin=0.0, force=True)
    decision = promote_stage(cfg, register_stage(cfg, cfg.layout.model_dir))
    assert not decision.promoted and registry.production_tag() == wide
    assert "dataset, series_id, channels" in decision.reason
    assert "'ETTh1'" in decision.reason and "'M4-Hourly'" in decision.reason


# --------------------------------------------------------------------------- data


def test_an_m4_subset_as_a_long_table_keeps_the_competition_split(tmp_path: Path) -> None:
    mirror = write_tiny_hourly(tmp_path / "mirror", n_series=6)
    m4 = select_series(read_m4(*m4_mirror_paths("Hourly", mirror)), ids=("H2", "H5"))
    frame = m4_long_frame(m4)
    frame.to_csv(tmp_path / "long.csv", index=False)
    data = config_from_dict(
        {"data": {"dataset": str(tmp_path / "long.csv"), "series_column": "series_id",
                  "horizon": HOURLY_H, "seasonality": 24}}
    ).data  # fmt: skip
    windows = load_short_term_splits(data).windows
    assert windows.ids == ("H2", "H5")
    np.testing.assert_array_equal(windows.test_targets(), np.stack(m4.test))
    for ours, theirs in zip(windows.train, m4.train, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(Exception, match="has no series"):
        select_series(m4, ids=("H9",))


def test_the_pipeline_config_of_many_series(tmp_path: Path) -> None:
    params = m4_params(tmp_path)
    cfg = load_pipeline_config(params, overrides=["pipeline.dataset=m4-hourly"])
    assert cfg.short_term and cfg.params.dataset == "M4-Hourly"
    assert (cfg.model.data.horizon, cfg.model.data.seasonality) == (HOURLY_H, 24)
    # The subset's interval scheme, for every candidate, as `llata train` on M4-Hourly gets it.
    hourly = load_params(None, ["data.dataset=M4-Hourly"]).data.intervals
    assert cfg.model.data.intervals == hourly and hourly is not None
    assert all(c.data.intervals == hourly for c in cfg.candidates.values())
    weekly = load_pipeline_config(
        params,
        overrides=["pipeline.dataset=M4-Weekly", "data.horizon=13", "data.input_size=26"],
    )
    assert weekly.model.data.intervals == ShortTermIntervals(
        normalizer="seasonal-mae", calibration_horizons=1
    )
    mae = load_pipeline_config(params, overrides=["data.intervals.normalizer=seasonal-mae"])
    assert mae.model.data.intervals == ShortTermIntervals(normalizer="seasonal-mae")
    with pytest.raises(ConfigError, match="horizon 48"):
        load_pipeline_config(params, overrides=["data.horizon=24"])
    with pytest.raises(ConfigError, match="not one"):
        load_pipeline_config(params, overrides=["pipeline.dataset=panel"])
    with pytest.raises(ConfigError, match="one value column"):
        load_pipeline_config(params, overrides=["pipeline.validation.channels=[OT]"])


def _panel(n_series: int = 3, length: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "series_id": f"s{i}",
                    "date": pd.date_range("2024-01-01", periods=length, freq="h"),
                    "value": 10.0 * (i + 1) + rng.normal(size=length),
                }
            )
            for i in range(n_series)
        ],
        ignore_index=True,
    )


@pytest.mark.parametrize(
    ("damage", "check", "detail"),
    [
        (lambda f: f.drop(columns="value"), "columns_present", "value"),
        (
            lambda f: f.astype({"value": object}).assign(
                value=lambda d: d["value"].where(d.index != 5, "abc")
            ),
            "numeric_channel",
            "abc",
        ),  # noqa: E501
        (lambda f: f.assign(value=f["value"].where(f.index != 7)), "nan_share", "NaN"),
        (lambda f: pd.concat([f, f.iloc[[3]]]).sort_index(kind="stable"), "timestamp_unique", "s0"),  # noqa: E501
        (lambda f: f.drop(index=range(45, 80)), "min_rows", "s1"),
    ],
    ids=["no-value-column", "text-value", "missing-value", "duplicate-step", "short-series"],
)
def test_a_bad_long_format_file_fails_validation_with_a_report(
    tmp_path: Path, damage: Any, check: str, detail: str
) -> None:
    # One candidate of the config's lookback: these series are 40 steps long.
    params = m4_params(tmp_path, dataset="panel", raw_data="data/raw/panel.csv",
                       series_selection={},
                       candidates={"dlinear": ["model.kind=dlinear"]})  # fmt: skip
    text = (
        params.read_text()
        .replace("horizon: 48", "horizon: 8")
        .replace("input_size: 96", "input_size: 16")
    )  # noqa: E501
    params.write_text(text)
    cfg = load_pipeline_config(params)
    assert cfg.short_term and cfg.model.data.horizon == 8
    cfg.layout.raw_data.parent.mkdir(parents=True)
    _panel().to_csv(cfg.layout.raw_data, index=False)
    assert validate_stage(cfg).success
    damage(_panel()).to_csv(cfg.layout.raw_data, index=False)
    report = validate_stage(cfg)
    assert not report.success
    failure = next(f for f in report.failures if f.check.value == check)
    assert detail in failure.describe()
    saved = json.loads((cfg.layout.validation_dir / "validation.json").read_text())
    assert check in {f["check"] for f in saved["failures"]}
