"""The pipeline's registry stages: register and promote a trained model, recalibrate production.

`register_stage` and `promote_stage` follow training in `flows.retrain`;
`production_version`, `recalibrate_stage` and `register_recalibration_stage` are the steps
of `flows.recalibrate`. The registry is `serving.registry` (BentoML), imported inside the
stages that need it, as in `flows.stages`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.config import PipelineConfig
from flows.dvc_state import dvc_revision
from flows.selection_stages import read_selection
from flows.stages import data_lineage, lineage_record

if TYPE_CHECKING:
    from llata_core.jobs import CalibrationOutcome
    from serving.registry import PromotionDecision, Registry, VersionInfo


def _without_none(value: Any) -> Any:
    """JSON-shaped copy without None values (BentoML metadata cannot hold None)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value if v is not None]
    return value


# --------------------------------------------------------------------------- registry


def open_registry(cfg: PipelineConfig) -> Registry:
    """The registry `pipeline.registry` names (BentoML home from `$BENTOML_HOME`)."""
    from serving.registry import Registry

    reg = cfg.params.registry
    registry_dir = cfg.root / reg.dir if reg.dir is not None else None
    return Registry(reg.model_name, registry_dir)


def register_stage(cfg: PipelineConfig, artifact: Path) -> str:
    """Register the artifact as a new immutable version with its lineage, params and the
    selection that chose it (every candidate's scores and costs, and why it won)."""
    from llata_core.forecaster import read_artifact_record

    record = read_artifact_record(artifact)
    metadata = {
        **_without_none(record.metadata),
        "params": _without_none(record.config),
        "pipeline": _without_none(cfg.params.model_dump(mode="json")),
        "eval_split_hash": record.metrics["eval_split_hash"],
        # Which DVC revision holds these bytes (`reproducible` when dvc.lock names them).
        "dvc": dvc_revision(cfg.root, artifact).as_metadata(),
    }
    selection = read_selection(cfg)
    if selection is not None and selection.winner == record.metadata.get("candidate"):
        metadata["selection"] = _without_none(selection.to_dict())
    return open_registry(cfg).register(artifact, metadata=metadata)


def headline_scorer(cfg: PipelineConfig) -> Callable[[Path], float]:
    """The promotion scorer: the headline metric of this run's task (test MSE of one wide
    series, OWA of many) on this run's data, the same for both sides.

    Candidate and production are each loaded from their stored copy and scored on the test
    split of the current training frame (the pipeline's split borders, or each series'
    last horizon). A model of another task is refused, not scored: OWA and MSE do not
    compare.
    """
    from llata_core.forecaster import Forecaster
    from llata_core.tasks import task_for_model

    def score(path: Path) -> float:
        fc = Forecaster.load(path)
        if fc.config.data.short_term != cfg.short_term:
            kinds = {True: "many-series (OWA)", False: "wide-series (MSE)"}
            raise ValueError(
                f"{path} is a {kinds[fc.config.data.short_term]} model and this run's data "
                f"is {kinds[cfg.short_term]}: models of different tasks are not compared"
            )
        task = task_for_model(fc, cfg.model.data)
        return float(task.score(fc.model, "test")[task.headline.name])

    return score


def promote_stage(cfg: PipelineConfig, tag: str, *, force: bool = False) -> PromotionDecision:
    """Promote the candidate if it has production's data lineage and beats it by the
    configured margin on this run's test split (in its task's headline metric), and its
    80 % intervals cover no less than nominal minus `pipeline.registry.coverage_tolerance`
    (and, when set, no more than nominal plus `coverage_over_tolerance`). `force` promotes
    across lineages without scoring (recorded in the history); generated data never
    replaces real data."""
    reg = cfg.params.registry
    return open_registry(cfg).promote(
        tag,
        score=headline_scorer(cfg),
        margin=reg.margin,
        force=force,
        coverage_tolerance=reg.coverage_tolerance,
        coverage_over_tolerance=reg.coverage_over_tolerance,
    )


# --------------------------------------------------------------------------- recalibrate


def production_version(cfg: PipelineConfig) -> VersionInfo:
    """Production of the configured registry.

    Raises:
        serving.registry.RegistryError: No version is production yet.
    """
    from serving.registry import RegistryError

    registry = open_registry(cfg)
    production = registry.production()
    if production is None:
        raise RegistryError(
            f"no production version of {registry.model_name} to recalibrate (registry "
            f"{registry.registry_dir}); train and promote one first (`llata pipeline run`)"
        )
    return production


def recalibrate_stage(
    cfg: PipelineConfig, production: VersionInfo, work_dir: Path
) -> CalibrationOutcome:
    """Recalibrate a copy of production's artifact on the newest windows of the raw file.

    The copy goes to `work_dir/model` (production's stored version is never written);
    `llata_core.jobs.recalibrate_job` checks the scheme on the newest
    `pipeline.recalibration.holdout_windows` windows, scores production's own intervals on
    the same windows, moves ACI's effective levels by their miss rate (`aci_gamma`), and
    stores scores from the newest `recent_windows`.

    Raises:
        ValueError: The raw file is not production's data (dataset, series, frequency, or
            generated data against a model of real data), or too short for the windows.
        llata_core.data.DataError: It lacks one of the model's channels or breaks the data
            policy.
    """
    import shutil

    from llata_core.jobs import recalibrate_job
    from serving.registry_gates import LINEAGE_KEY, lineage_conflict

    raw = cfg.layout.raw_data
    synthetic = data_lineage(cfg)["synthetic_data"]
    here = {LINEAGE_KEY: lineage_record(cfg, synthetic=synthetic)}
    conflict = lineage_conflict(here, production.metadata)
    if conflict is not None:
        raise ValueError(
            f"{raw} (the recalibration data: 'candidate' below) is not the data production "
            f"{production.tag} was trained on: {conflict[1]}"
        )
    recal = cfg.params.recalibration
    copy = work_dir / "model"
    shutil.copytree(production.path, copy)
    return recalibrate_job(
        copy,
        raw,
        recent_windows=recal.recent_windows,
        holdout_windows=recal.holdout_windows,
        aci_gamma=recal.aci_gamma,
    )


def register_recalibration_stage(
    cfg: PipelineConfig, production: VersionInfo, outcome: CalibrationOutcome
) -> str:
    """Register a recalibrated copy of production as a new version.

    It keeps production's metadata (data lineage, params, selection, DVC revision: the
    model is the same) and adds `recalibration`: the parent version, the data and windows
    it was recalibrated on, its holdout interval metrics and those of the scores it
    replaced on the same windows, which the registry's gate compares
    (`serving.registry_gates.recalibration_verdict`). The data's SHA-256 is in the
    version's metrics (`calibration_data_sha256`), from the bytes that were read.
    """
    from llata_core.jobs import git_revision
    from serving.registry_gates import RECALIBRATION_KEY

    # What describes the stored bytes is the registry's to write for the new version.
    inherited = {
        k: v
        for k, v in production.metadata.items()
        if k not in ("metrics", "manifest_sha256", "registered_at", RECALIBRATION_KEY)
    }
    record = {
        "parent": production.tag,
        "data": str(cfg.params.raw_data),
        "calibration_windows": outcome.scores.n,
        "holdout_windows": outcome.n_checked,
        "holdout": outcome.checked,
        "replaced": outcome.replaced,
        "recalibrated_at": datetime.now(UTC).isoformat(),
        "git_revision": git_revision(cfg.root),
    }
    metadata = {**inherited, RECALIBRATION_KEY: record}
    return open_registry(cfg).register(outcome.artifact, metadata=_without_none(metadata))
