"""The pipeline's training stages: the candidates' backbones, then one candidate's training.

`backbone_stage` prepares every LLaTA candidate's cached backbone once, before the
candidates train in parallel; `train_candidate_stage` trains one candidate on the features
stage's training frame (`flows.stages`) and reports its scores and costs. Choosing among
the trained candidates (and their combination) is `flows.selection_stages`. `llata pipeline
backbone|pipeline train` (which `dvc.yaml` runs) and the Prefect tasks in `flows.retrain`
call these functions, so both leave the same files; each file is written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from flows.config import PipelineConfig
from llata_core.atomic import write_json
from llata_core.data import file_sha256

if TYPE_CHECKING:
    from llata_core.config import DataConfig
    from llata_core.data import SeriesFrame
    from llata_core.selection import CandidateReport
    from llata_core.tasks import ForecastTask

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- backbone


def backbone_stage(cfg: PipelineConfig) -> Path:
    """Prepare (or find) the cached backbone of every LLaTA candidate, once, before the
    candidates train in parallel (so that no two processes build one cache), and write the
    stamp `llata backbone prepare --stamp` writes, so both entry points leave the same file."""
    from llata_core.backbone import prepare_backbone

    stamps = []
    seen: set[str] = set()
    for name, model_cfg in cfg.candidates.items():
        if model_cfg.model.kind != "llata":
            continue
        key = model_cfg.model.model_dump_json(
            include={"backbone", "revision", "n_layers", "init", "n_principal"}
        )
        if key in seen:
            continue
        seen.add(key)
        backbone = prepare_backbone(model_cfg.model)
        stamps.append(
            {
                "candidate": name,
                "backbone": backbone.name,
                "revision": backbone.revision,
                "n_layers": model_cfg.model.n_layers,
                "n_principal": int(backbone.principal.shape[0]),
            }
        )
    write_json(cfg.layout.backbone_stamp, {"backbones": stamps}, default=str)
    return cfg.layout.backbone_stamp


# --------------------------------------------------------------------------- train


def train_candidate_stage(
    cfg: PipelineConfig, name: str, threads: int | None = None
) -> CandidateReport:
    """Train one candidate on the features stage's training frame and report its scores
    and costs; its artifact goes to `artifacts/candidates/<name>/model` (atomically).

    The series keeps the raw data's lineage: a model trained on synthetic data says so in
    its metadata (`synthetic_data: true`), whichever entry point trained it.

    `threads` is the torch threads it trains and is measured with (None: the process's),
    restored after. The flow's task runner and the DVC stage pass the same number
    (`RunnerParams.shares`): bf16 reductions round differently with other thread counts.
    """
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_candidate(cfg, name)
    finally:
        torch.set_num_threads(before)


def _train_candidate(cfg: PipelineConfig, name: str) -> CandidateReport:
    from llata_core.jobs import train_job

    layout = cfg.layout
    model_cfg = cfg.candidate(name)
    series, lineage = training_series(cfg, model_cfg.data)
    extra = {
        **lineage,
        "candidate": name,
        "candidate_overrides": list(cfg.params.candidates[name]),
        "pipeline_profile": cfg.profile,
        "pipeline_overrides": list(cfg.overrides),
    }
    where = layout.candidate_dir(name)
    outcome = train_job(
        model_cfg,
        out_dir=where / "model",
        run_dir=where / "run",
        series=series,
        extra_metadata=extra,
    )
    assert outcome.metrics is not None  # one process
    report = candidate_report(
        cfg,
        name,
        tuple(cfg.params.candidates[name]),
        outcome.artifact,
        outcome.task,
        outcome.metrics,
        float(outcome.fit.seconds),
    )
    logger.info(
        "candidate %s: val %s %.4f, %d parameters, %.3g ms/window, trained in %.0fs",
        name,
        report.val_metric.upper(),
        report.val_score,
        report.parameters,
        report.serving_ms_per_window,
        report.train_seconds,
    )
    return report


def training_series(
    cfg: PipelineConfig, data: DataConfig
) -> tuple[SeriesFrame | None, dict[str, Any]]:
    """The features stage's training frame as a candidate's series, and its lineage (what
    the candidate records in its metadata).

    Many series are read by the short-term task itself (`data.dataset` is the training
    frame, `data.series_column` its series), the same way evaluation re-reads them: the
    series is then None. A series keeps the raw data's lineage: a model trained on synthetic
    data says so in its metadata (`synthetic_data: true`), whichever entry point trained it.

    Raises:
        FileNotFoundError: the features stage has not run.
    """
    from llata_core.data import series_from_frame

    layout = cfg.layout
    if not layout.training_frame.is_file():
        raise FileNotFoundError(
            f"training frame not found: {layout.training_frame}; run the features stage first"
        )
    lineage = json.loads(layout.lineage.read_text(encoding="utf-8"))
    series = None
    if not cfg.short_term:
        series = series_from_frame(
            pd.read_parquet(layout.training_frame),
            data,
            origin=str(layout.training_frame),
            source="synthetic" if lineage.get("synthetic_data") else "file",
            # The file's hash, which is what `load_series` computes when evaluate_job
            # reloads it: the evaluation split fingerprint then matches between training
            # and scoring.
            sha256=file_sha256(layout.training_frame),
        )
    return series, {k: v for k, v in lineage.items() if k != "built_at"}


def candidate_report(
    cfg: PipelineConfig,
    name: str,
    overrides: tuple[str, ...],
    artifact: Path,
    task: ForecastTask,
    metrics: dict[str, Any],
    train_seconds: float,
) -> CandidateReport:
    """A trained candidate's scores (validation chooses, test is reported) and costs
    (training seconds, parameters and serving ms per window, measured here on a batch of
    its validation windows)."""
    from llata_core.forecaster import Forecaster
    from llata_core.selection import CandidateReport, count_parameters, serving_ms_per_window

    fc = Forecaster.load(artifact)
    val_metric = task.val_metric
    return CandidateReport(
        name=name,
        overrides=overrides,
        model_kind=str(fc.describe()["kind"]),
        input_size=fc.input_size,
        val_score=float(metrics[f"val_{val_metric}"]),
        val_metric=val_metric,
        test_score=float(metrics[val_metric]),
        train_seconds=train_seconds,
        parameters=count_parameters(fc.model),
        serving_ms_per_window=serving_ms_per_window(fc.model, task.sample_inputs(256)),
        artifact=str(artifact.relative_to(cfg.layout.root)),
    )
