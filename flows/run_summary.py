"""What `llata pipeline run`, `train` and `recalibrate` print when they finish: the
candidates, the registry's verdict, the test scores and how to serve the production model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.config import PipelineConfig


def candidate_table(selection: Any) -> str:
    """The candidates as a text table, the one `llata registry show` prints."""
    from serving.registry_cli import selection_table

    return selection_table(selection.to_dict())


def print_run_summary(cfg: PipelineConfig, result: object, seconds: float) -> None:
    """Production model, metrics, a sample forecast and how to serve it."""
    from flows.registry_stages import open_registry
    from flows.retrain import RetrainResult
    from llata_core.forecaster import Forecaster
    from llata_core.jobs import forecast_frame

    assert isinstance(result, RetrainResult)
    production = open_registry(cfg).production()
    m = result.metrics
    layout = cfg.layout
    print()
    print(f"LLaTA pipeline finished in {seconds:.0f}s ({cfg.profile} profile)")
    if result.synthetic_data:
        print("  !!! trained on SYNTHETIC data (no real source was reachable) !!!")
    print(f"  data        {cfg.shown(layout.raw_data)} ({result.data_source})")
    from flows.selection_stages import read_selection

    selection = read_selection(cfg)
    if selection is not None:
        print("  candidates  (chosen on validation; * = winner)")
        for line in candidate_table(selection).splitlines():
            print(f"    {line}")
        print(f"  winner      {result.selection_reason}")
    verdict = "PROMOTED" if result.promoted else "not promoted"
    print(f"  registered  {result.candidate}: {verdict} ({result.reason})")
    print(f"  test        {score_line(m)}")
    reports = ", ".join(
        cfg.shown(p)
        for p in (
            layout.metrics,
            layout.forecast_plot,
            layout.loss_plot,
            layout.validation_dir / "data_docs" / "index.html",
        )
    )
    print(f"  reports     {reports}")
    if production is None:
        print("  production  none")
        return
    pm = production.metrics
    print(f"  production  {production.tag}: test {score_line(pm, counts=False)}")
    from features.frame import load_frame
    from serving.registry_gates import lineage_of

    if lineage_of(production.metadata)["dataset"] not in (None, cfg.params.dataset):
        print(
            f"\nThe production model was trained on {lineage_of(production.metadata)['dataset']},"
            f" not on {cfg.params.dataset}: no sample forecast of this run's data."
        )
    else:
        fc = Forecaster.load(production.path)
        data = cfg.model.data
        ts_col = data.timestamp_column
        history = load_frame(layout.raw_data, ts_col)
        which = ""
        if data.series_column is not None:  # many series: the first one, its value column
            first = history[data.series_column].iloc[0]
            history = history[history[data.series_column] == first]
            history = history[[ts_col, data.value_column]]
            which = f" of series {first}"
        history = history.tail(fc.input_size)
        forecast = forecast_frame(fc, history, ts_col)
        print(
            f"\nSample forecast of the production model{which}: the {len(forecast)} steps "
            f"after {history[ts_col].iloc[-1]} (first 5, data units):"
        )
        print(forecast.head(5).to_string(index=False, float_format=lambda v: f"{v:9.3f}"))
    print("\nServe it (picks up the production alias, reloads on promotion):")
    from flows.params import RegistryParams

    reg = cfg.params.registry
    default = RegistryParams.model_fields["model_name"].default  # what the service reads
    env = "" if reg.model_name == default else f"LLATA_MODEL_NAME={reg.model_name} "
    if reg.dir is not None:
        env += f"LLATA_REGISTRY_DIR={cfg.root / reg.dir} "
    print(f"  {env}bentoml serve serving.service:Forecaster")
    print("Registry:  llata registry list | show production | rollback")


def score_line(metrics: Mapping[str, Any], *, counts: bool = True) -> str:
    """A model's test scores as one line, in its task's metrics: OWA first for many
    series (with SMAPE, MASE and the 80 % coverage), MSE and MAE for one wide series."""

    def num(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    if metrics.get("metric") == "owa":
        line = f"OWA {num('owa')}  SMAPE {num('smape')}  MASE {num('mase')}"
        if "coverage_80" in metrics:
            line += f"  80% coverage {num('coverage_80')}"
        if counts and "n_series" in metrics:
            line += f" over {metrics['n_series']} series ({metrics.get('dataset')})"
        return line
    line = f"MSE {num('mse')}  MAE {num('mae')}"
    if counts and "n_windows" in metrics:
        line += f" over {metrics['n_windows']} windows ({metrics.get('dataset')}, scaled)"
    return line


def print_recalibration_summary(cfg: PipelineConfig, result: object, seconds: float) -> None:
    """The registered version, the gate's verdict and the holdout metrics, both sides."""
    from flows.recalibrate import RecalibrateResult

    assert isinstance(result, RecalibrateResult)
    verdict = "PROMOTED" if result.promoted else "not promoted"
    recal = cfg.params.recalibration
    print(f"\nLLaTA recalibration finished in {seconds:.0f}s")
    print(f"  data        {cfg.shown(cfg.layout.raw_data)}")
    print(
        f"  windows     scores from the newest {result.calibration_windows}, checked on the "
        f"newest {result.holdout_windows} (configured {recal.recent_windows} / "
        f"{recal.holdout_windows})"
    )
    print(f"  registered  {result.candidate}, a recalibration of {result.parent}: {verdict}")
    print(f"  reason      {result.reason}")
    for key, value in result.holdout.items():
        before = (result.replaced or {}).get(key)
        was = f"  (production {before:.4f})" if before is not None else ""
        print(f"  holdout     {key:<14} {value:.4f}{was}")
    print(f"  production  {result.production}")
