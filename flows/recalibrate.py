"""The `recalibrate` Prefect flow: production's intervals recalibrated on the newest data.

Split conformal scores fitted on the validation split drift away from nominal coverage as
the data moves on; recalibrating daily on the last 30 days of windows keeps every ETT test
split within three points of nominal (benchmarks/NOTES.md). This flow is that step in
production: production model -> the raw file (`pipeline.raw_data`, through the pipeline's
data source and validation suite) -> `llata_core.jobs.recalibrate_job` on a copy ->
register the copy as a new version (production's lineage, plus which version it
recalibrates and the holdout coverage) -> the registry's gate -> atomic promotion -> a
table artifact. A scheduled deployment (`pipeline.recalibration.schedule`) runs it daily.

Orchestration only: every task wraps one function of `flows.registry_stages`. Failure rules:

- No production version, data that breaks the suite (NaN beyond the allowed share, a
  missing channel), data too short for the configured windows, or data of another lineage
  end the run before anything is registered; production's stored version is never
  written (the recalibration works on a temporary copy).
- A registered recalibration that the gate refuses stays in the registry as history, and
  the run completes (as a retrained candidate that does not win).
- The gate (`serving.registry_gates.recalibration_verdict`): the point metrics are not
  compared, since the weights are production's; the holdout coverage must pass the
  coverage gate and be at least as close to nominal as production's own intervals on the
  same holdout windows; production must still be the recalibrated version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import State
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict

from flows import registry_stages
from flows.config import PipelineConfig, load_pipeline_config
from flows.params import DEFAULT_PARAMS_FILE
from flows.retrain import (
    compute_task,
    failure_message,
    io_task,
    promote_model,
    publish_validation_failure,
    pull_data,
    validate_data,
)

if TYPE_CHECKING:
    from llata_core.jobs import CalibrationOutcome
    from serving.registry import PromotionDecision, VersionInfo

RECALIBRATION_ARTIFACT = "llata-recalibration"
COVERAGE_LEVEL = 80.0  # the level the registry's coverage gate reads


class RecalibrateRequest(BaseModel):
    """The flow's one parameter: which params file and overrides to run with.

    Attributes:
        params_file: `params.yaml` to read; relative paths are taken from the working
            directory (the project root for `llata pipeline recalibrate` and deployments).
        root: Project root the pipeline's paths resolve against; default the params
            file's folder.
        overrides: `section.key=value` overrides applied last, e.g.
            `pipeline.recalibration.recent_windows=240`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    params_file: str = DEFAULT_PARAMS_FILE
    root: str | None = None
    overrides: tuple[str, ...] = ()


class RecalibrateResult(BaseModel):
    """What a completed run did.

    Attributes:
        candidate: Tag of the recalibrated version this run registered.
        parent: The production version it recalibrates.
        promoted: Whether it is now production.
        reason: The gate's explanation.
        production: Production's tag after the run.
        calibration_windows: Windows its stored scores come from.
        holdout_windows: Windows the scheme was checked on.
        holdout: Its interval metrics on the holdout (coverage, width, interval score).
        replaced: Production's interval metrics on the same holdout (None: it had none).
    """

    model_config = ConfigDict(frozen=True)

    candidate: str
    parent: str
    promoted: bool
    reason: str
    production: str | None
    calibration_windows: int
    holdout_windows: int
    holdout: dict[str, float]
    replaced: dict[str, float] | None


@io_task(retries=2, delay=5)
def production_model(cfg: PipelineConfig) -> VersionInfo:
    """Production's version in the registry (fails when there is none)."""
    return registry_stages.production_version(cfg)


@compute_task
def recalibrate_model(
    cfg: PipelineConfig, production: VersionInfo, work_dir: Path
) -> CalibrationOutcome:
    """Recalibrate a copy of production on the newest windows of the raw file."""
    outcome = registry_stages.recalibrate_stage(cfg, production, work_dir)
    get_run_logger().info(
        "recalibrated %s on %d windows; holdout %s",
        production.tag,
        outcome.scores.n,
        _coverages(outcome.checked, outcome.replaced),
    )
    return outcome


@io_task(retries=2, delay=5)
def register_recalibration(
    cfg: PipelineConfig, production: VersionInfo, outcome: CalibrationOutcome
) -> str:
    """Register the recalibrated copy as a new version with production's lineage."""
    return registry_stages.register_recalibration_stage(cfg, production, outcome)


@io_task(retries=2, delay=2)
def publish_recalibration(result: RecalibrateResult) -> None:
    """Publish the holdout interval metrics, recalibrated against production, as a table."""
    replaced = result.replaced or {}
    rows: list[dict[str, Any]] = [
        {"metric": key, "recalibrated": value, "production": replaced.get(key)}
        for key, value in result.holdout.items()
    ]
    rows.append({"metric": "holdout_windows", "recalibrated": result.holdout_windows})
    rows.append({"metric": "calibration_windows", "recalibrated": result.calibration_windows})
    verdict = "promoted to production" if result.promoted else "not promoted"
    create_table_artifact(
        table=rows,
        key=RECALIBRATION_ARTIFACT,
        description=(
            f"{result.candidate}, a recalibration of {result.parent}: {verdict} "
            f"({result.reason}). Metrics on the newest {result.holdout_windows} windows."
        ),
    )


def _coverages(checked: dict[str, Any], replaced: dict[str, Any] | None) -> str:
    key = f"coverage_{COVERAGE_LEVEL:g}"
    before = (replaced or {}).get(key)
    was = f" (production's scores: {before:.3f})" if before is not None else ""
    return f"{COVERAGE_LEVEL:g}% coverage {checked[key]:.3f}{was}"


@flow(name="recalibrate", persist_result=False, validate_parameters=True)
def recalibrate(request: RecalibrateRequest | None = None) -> RecalibrateResult | State:
    """Recalibrate production's intervals on the newest data; register, gate, promote.

    Args:
        request: Which params file and overrides to use (defaults: params.yaml in the
            working directory).

    Returns:
        What the run did; a Failed state (no traceback) when the data breaks the suite.
    """
    request = request or RecalibrateRequest()
    cfg = load_pipeline_config(request.params_file, overrides=request.overrides, root=request.root)
    production = production_model(cfg)
    pull_data(cfg, False)  # generated data never recalibrates a model
    report = validate_data(cfg)
    if not report.success:
        publish_validation_failure(report)
        return Failed(message=failure_message(report))
    with tempfile.TemporaryDirectory(prefix="llata-recalibrate-") as work:
        outcome = recalibrate_model(cfg, production, Path(work))
        tag = register_recalibration(cfg, production, outcome)
    decision: PromotionDecision = promote_model(cfg, tag, False)
    result = RecalibrateResult(
        candidate=tag,
        parent=production.tag,
        promoted=decision.promoted,
        reason=decision.reason,
        production=registry_stages.open_registry(cfg).production_tag(),
        calibration_windows=outcome.scores.n,
        holdout_windows=outcome.n_checked,
        holdout=outcome.checked,
        replaced=outcome.replaced,
    )
    publish_recalibration(result)
    return result
