"""The pipeline's evaluate stage: the trained model's test metrics, forecast plot and loss curve.

`llata pipeline evaluate` (the DVC stage) and the Prefect task `evaluate_model` in
`flows.retrain` call `evaluate_stage`. Like every stage's (`flows.stages`), its files are
written atomically; torch and matplotlib are imported inside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig
from llata_core.atomic import atomic_write, write_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    """What the evaluation stage wrote: `reports/metrics.json` and two plots.

    Attributes:
        metrics: What metrics.json holds; `metric` names the headline (`mse`, `owa`).
        metrics_path: Where.
        forecast_plot: Forecast against actual on the test split.
        loss_plot: The training history.
        reported: The test metrics a summary shows, headline included (the task's).
        val_metric: The validation metric the candidates were chosen on.
    """

    metrics: dict[str, Any]
    metrics_path: Path
    forecast_plot: Path
    loss_plot: Path
    reported: tuple[str, ...] = ("mse", "mae")
    val_metric: str = "mse"

    @property
    def headline(self) -> str:
        return str(self.metrics["metric"])

    @property
    def interval_metrics(self) -> dict[str, float]:
        """Coverage, width and interval scores by level (with M4's MSIS and ACD)."""
        prefixes = ("coverage_", "width_", "winkler_", "msis_", "acd_")
        return {k: v for k, v in self.metrics.items() if k.startswith(prefixes)}


# --------------------------------------------------------------------------- evaluate


def evaluate_stage(cfg: PipelineConfig) -> EvaluationResult:
    """Score the trained model on the test split; write metrics.json and the two plots.

    metrics.json names its headline metric (`metric`, `score`): the test MSE of one wide
    series, or for many series the OWA of their held-out horizons, with SMAPE, MASE and
    the conformal intervals' coverage (M4's MSIS and ACD at 95 %).
    """
    if cfg.short_term:
        return _evaluate_short_term(cfg)
    from llata_core.jobs import evaluate_job
    from llata_core.tasks import LongTermTask
    from llata_core.tasks.longterm import plot_forecasts

    layout = cfg.layout
    metrics, fc, splits = evaluate_job(layout.model_dir, cfg.model.data, split="test")
    trained = fc.metrics  # what training recorded in the artifact
    document = {
        "dataset": cfg.params.dataset,
        "split": "test",
        "mse": metrics.mse,
        "mae": metrics.mae,
        "n_windows": metrics.n_windows,
        "val_mse": trained.get("val_mse"),
        "val_mae": trained.get("val_mae"),
        "epochs_run": trained.get("epochs_run"),
        "mse_by_channel": dict(zip(fc.channels, metrics.mse_by_channel, strict=True)),
        "eval_split_hash": splits.fingerprint(),
        "eval_targets_hash": splits.targets_fingerprint(),
    }
    for item in metrics.intervals:  # coverage, width and interval score per level
        document |= item.to_dict()
    document |= LongTermTask.headline.record(document)
    _write_evaluation(cfg, document, lambda tmp: plot_forecasts(fc, splits, tmp))
    logger.info(
        "test MSE %.4f MAE %.4f over %d windows", metrics.mse, metrics.mae, metrics.n_windows
    )
    return EvaluationResult(document, layout.metrics, layout.forecast_plot, layout.loss_plot)


def _evaluate_short_term(cfg: PipelineConfig) -> EvaluationResult:
    """`evaluate_stage` for many series: the task's own evaluation of the artifact (its
    test scores and conformal intervals, recalibrated on the same held-out horizons)."""
    from llata_core.forecaster import Forecaster
    from llata_core.tasks import ShortTermTask

    layout = cfg.layout
    fc = Forecaster.load(layout.model_dir)
    task = ShortTermTask.for_model(fc, cfg.model.data)
    trained = fc.metrics
    evaluation = task.evaluate(fc.model, batch_size=cfg.model.train.eval_batch_size)
    scores = evaluation.metrics
    document = {
        "dataset": cfg.params.dataset,
        "split": "test",
        **scores,
        "n_series": len(task.splits.windows.ids),
        "epochs_run": trained.get("epochs_run"),
        "eval_split_hash": task.fingerprint(),
        "eval_targets_hash": task.targets_fingerprint(),
        **task.headline.record(scores),
    }
    _write_evaluation(cfg, document, lambda tmp: task.plot(fc, tmp))
    logger.info(
        "test OWA %.4f SMAPE %.3f MASE %.3f over %d series",
        scores["owa"],
        scores["smape"],
        scores["mase"],
        document["n_series"],
    )
    return EvaluationResult(
        document,
        layout.metrics,
        layout.forecast_plot,
        layout.loss_plot,
        reported=task.reported,
        val_metric=task.val_metric,
    )


def _write_evaluation(
    cfg: PipelineConfig, document: dict[str, Any], forecast_plot: Callable[[Path], Any]
) -> None:
    """metrics.json, the forecast plot and the loss curve, each written atomically."""
    from llata_core.jobs import plot_loss_curve

    layout = cfg.layout
    write_json(layout.metrics, document, default=str)
    # matplotlib picks the image format from the file name, so the temporary name keeps it.
    atomic_write(layout.forecast_plot, forecast_plot, keep_suffix=True)
    atomic_write(
        layout.loss_plot,
        lambda tmp: plot_loss_curve(layout.run_dir / "history.jsonl", tmp),
        keep_suffix=True,
    )
