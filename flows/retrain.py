"""The `retrain` Prefect flow: data -> validate -> features -> train candidates -> select ->
evaluate -> register -> promote, and its report as Prefect artifacts.

Orchestration only: every task is a typed wrapper around one function of `flows.stages`,
`flows.training_stages`, `flows.selection_stages`, `flows.evaluate` or
`flows.registry_stages` (the same functions the `llata` commands and the DVC stages call).
Retries are declared only on tasks that do I/O (fetching data, the Feast stores, the
backbone cache, the model store and registry lock, the Prefect API), and they retry only on
I/O errors; training and evaluation are deterministic, so retrying them would only repeat a
failure.

Failure rules, which the tests exercise:

- Invalid data ends the run (state Failed, no traceback) before the feature store, the
  model directory or the registry is touched; the validation report says why.
- A task that raises ends the run; the registry is only written by the last two tasks,
  so production stays as it was. Artifacts are written atomically by llata_core. A
  candidate whose training fails (or whose worker dies) fails the run before selection.
- The candidates (`pipeline.candidates`) train as parallel tasks on the task runner that
  `pipeline.selection.runner` names (a local process pool by default, or a Dask cluster);
  the winner is chosen on validation, never on test.
- Promotion never crosses data lineages (unless the request forces it, which the registry
  history records) and never puts a model trained on generated data over a real one.
- A candidate that does not beat production by the margin is registered (versions are
  immutable history) but not promoted; the run still completes.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.states import Failed
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict

from flows import evaluate, registry_stages, selection_stages, stages, training_stages
from flows.config import PipelineConfig, load_pipeline_config
from flows.datasource import PullResult, pull_raw_data
from flows.params import DEFAULT_PARAMS_FILE, RunnerParams
from flows.worker_lifetime import exit_with_parent
from llata_core.selection import CandidateReport, Selection

if TYPE_CHECKING:
    from features.validation import ValidationReport
    from serving.registry import PromotionDecision

METRICS_ARTIFACT = "llata-metrics"
CANDIDATES_ARTIFACT = "llata-candidates"
FORECAST_ARTIFACT = "llata-forecast"
VALIDATION_ARTIFACT = "llata-validation"


class RetrainRequest(BaseModel):
    """The flow's one parameter: which params file, profile and overrides to run with.

    Attributes:
        params_file: `params.yaml` to read; relative paths are taken from the working
            directory (the project root for `llata pipeline run` and served deployments).
        root: Project root the pipeline's paths resolve against; default the params
            file's folder.
        profile: `full` trains with params.yaml as written; `quick` adds `pipeline.quick`.
        overrides: `section.key=value` overrides applied last (e.g. `train.epochs=3`,
            `pipeline.registry.margin=0.05`).
        allow_synthetic: When no source of the raw data is reachable, train on the
            synthetic series (flagged in the model's metadata) instead of failing. Off by
            default: generated data only when asked.
        force: Promote the winner without the gate's comparison and across data lineages
            (an operator's decision, recorded in the registry history); a model trained on
            generated data still never replaces one trained on real data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    params_file: str = DEFAULT_PARAMS_FILE
    root: str | None = None
    profile: Literal["full", "quick"] = "full"
    overrides: tuple[str, ...] = ()
    allow_synthetic: bool = False
    force: bool = False


class RetrainResult(BaseModel):
    """What a completed run did.

    Attributes:
        candidate: Tag of the version this run registered.
        promoted: Whether it is now production.
        reason: The promotion gate's explanation.
        metric: The headline metric the gate compared (`mse`, or `owa` for many series).
        candidate_mse: The candidate's headline score (`metric`) as scored by the gate.
        production_mse: Production's headline score with the same scorer (None if there was
            none, or it was not scored).
        production: Production's tag after the run.
        metrics: `reports/metrics.json` of the candidate.
        data_source: Where the raw data came from (`present`, `remote`, `url`, `mirror`,
            `synthetic`).
        synthetic_data: Whether the model was trained on synthetic data.
        winner: The candidate the selection chose.
        selection_reason: Why it won.
        candidates: Every candidate's scores and costs (`CandidateReport.to_dict`).
    """

    model_config = ConfigDict(frozen=True)

    candidate: str
    promoted: bool
    reason: str
    metric: str
    candidate_mse: float | None
    production_mse: float | None
    production: str | None
    metrics: dict[str, Any]
    data_source: str
    synthetic_data: bool
    winner: str
    selection_reason: str
    candidates: tuple[dict[str, Any], ...]


def _retry_on(*errors: type[BaseException]) -> Callable[[Any, TaskRun, State], bool]:
    """A `retry_condition_fn` that retries only the given (I/O) exception types."""

    def condition(_task: Any, _run: TaskRun, state: State) -> bool:
        return isinstance(state.data, errors)

    return condition


# OSError covers network errors, timeouts and filelock.Timeout (a TimeoutError);
# sqlite3.OperationalError is a locked Feast online store.
_IO = _retry_on(OSError, sqlite3.OperationalError)
# Results are not persisted or cached: every step writes its own files, and a rerun of the
# flow must recompute, not replay a stored result.
compute_task = task(cache_policy=NO_CACHE, persist_result=False)


def io_task(retries: int, delay: int) -> Any:
    """A task that touches files, stores or the registry: retried on I/O errors only."""
    return task(
        retries=retries,
        retry_delay_seconds=delay,
        retry_condition_fn=_IO,
        cache_policy=NO_CACHE,
        persist_result=False,
    )


@io_task(retries=2, delay=5)
def pull_data(cfg: PipelineConfig, allow_synthetic: bool) -> PullResult:
    """Make sure `data/raw` holds the data (DVC remote, URL, mirror, then synthetic)."""
    return pull_raw_data(cfg, allow_synthetic=allow_synthetic)


@compute_task
def validate_data(cfg: PipelineConfig) -> ValidationReport:
    """Run the Great Expectations suite; the report is returned, failing or not."""
    return stages.validate_stage(cfg)


@io_task(retries=1, delay=5)
def build_features(cfg: PipelineConfig) -> stages.FeaturesResult:
    """Apply and fill the Feast repo; write the point-in-time training frame."""
    return stages.features_stage(cfg)


@io_task(retries=1, delay=5)
def prepare_backbone(cfg: PipelineConfig) -> Path:
    """Build or reuse the cached truncated backbone."""
    return training_stages.backbone_stage(cfg)


@compute_task
def train_candidate(cfg: PipelineConfig, name: str, threads: int | None) -> CandidateReport:
    """Train one candidate (on the GPU when the worker has one) and report its scores and
    costs; its artifact is saved atomically under `artifacts/candidates/<name>/`."""
    # One process per candidate: `threads` shares the cores, it does not oversubscribe them.
    report = training_stages.train_candidate_stage(cfg, name, threads)
    get_run_logger().info(
        "candidate %s: val %s %.4f, test %s, %.0fs, %d parameters, %.3g ms/window",
        name,
        report.val_metric.upper(),
        report.val_score,
        f"{report.test_score:.4f}" if report.test_score is not None else "-",
        report.train_seconds,
        report.parameters,
        report.serving_ms_per_window,
    )
    return report


def candidate_runner(params: RunnerParams, n_candidates: int) -> tuple[TaskRunner, int | None]:
    """The task runner `pipeline.selection.runner` names, and the torch threads per task.

    `process` runs each candidate in its own process (a seed set in one cannot move another
    candidate's initialisation, as it would in threads), which ends when the flow's process
    does (`flows.worker_lifetime`), `dask` on a Dask cluster through
    prefect-dask: the one at `address`, or a local cluster of worker processes.
    """
    workers, threads = params.shares(n_candidates, os.cpu_count() or 1)
    if params.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if params.address:
            return DaskTaskRunner(address=params.address), threads
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
        return DaskTaskRunner(cluster_kwargs=cluster), threads
    if params.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=workers), threads
    runner = ProcessPoolTaskRunner(
        max_workers=workers, initializer=exit_with_parent, initargs=(os.getpid(),)
    )
    return runner, threads


@flow(name="train-candidates", persist_result=False, validate_parameters=False)
def train_candidates(cfg: PipelineConfig, threads: int | None) -> list[CandidateReport]:
    """Every candidate as a parallel task on this flow's task runner; fails if any fails."""
    futures = [
        train_candidate.with_options(task_run_name=f"train-{name}").submit(cfg, name, threads)
        for name in cfg.candidates
    ]
    return [future.result() for future in futures]


@io_task(retries=1, delay=2)
def select_model(cfg: PipelineConfig, reports: list[CandidateReport]) -> Selection:
    """The winner by validation score (then serving cost) becomes `artifacts/model`."""
    selection = selection_stages.select_stage(cfg, reports)
    get_run_logger().info("selected %s", selection.reason)
    return selection


@compute_task
def evaluate_model(cfg: PipelineConfig) -> evaluate.EvaluationResult:
    """Score the artifact on the test split; write metrics.json and the plots."""
    return evaluate.evaluate_stage(cfg)


@io_task(retries=2, delay=5)
def register_model(cfg: PipelineConfig, artifact: Path) -> str:
    """Copy the artifact into the model store as a new immutable version."""
    return registry_stages.register_stage(cfg, artifact)


@io_task(retries=2, delay=5)
def promote_model(cfg: PipelineConfig, tag: str, force: bool) -> PromotionDecision:
    """Check lineage, score candidate and production with one scorer; switch the alias if
    it wins (or if forced)."""
    decision = registry_stages.promote_stage(cfg, tag, force=force)
    log = get_run_logger()
    (log.info if decision.promoted else log.warning)(
        "%s %s: %s", "promoted" if decision.promoted else "not promoted", tag, decision.reason
    )
    return decision


@io_task(retries=2, delay=2)
def publish_report(
    evaluation: evaluate.EvaluationResult, decision: PromotionDecision, selection: Selection
) -> None:
    """Publish the candidate and metrics tables and the forecast/loss plots as artifacts."""
    create_table_artifact(
        table=candidate_rows(selection),
        key=CANDIDATES_ARTIFACT,
        description=f"Candidates, chosen on validation: {selection.reason}",
    )
    verdict = "promoted to production" if decision.promoted else "not promoted"
    create_table_artifact(
        table=metric_rows(evaluation, decision),
        key=METRICS_ARTIFACT,
        description=f"{decision.candidate}: {verdict} ({decision.reason})",
    )
    create_markdown_artifact(
        markdown="\n\n".join(
            [
                f"## {decision.candidate}: {verdict}",
                decision.reason,
                "### Forecast vs actual (test split)",
                _embedded_png(evaluation.forecast_plot, "forecast vs actual"),
                "### Training history",
                _embedded_png(evaluation.loss_plot, "loss curve"),
            ]
        ),
        key=FORECAST_ARTIFACT,
        description="Forecast of the candidate on test windows and its loss curve",
    )


@io_task(retries=2, delay=2)
def publish_validation_failure(report: ValidationReport) -> None:
    """Publish the failed expectations as a markdown artifact."""
    create_markdown_artifact(
        markdown="## Data validation failed\n\n```\n" + failure_message(report) + "\n```",
        key=VALIDATION_ARTIFACT,
        description="The raw data broke the Great Expectations suite; nothing was trained",
    )


def metric_rows(
    evaluation: evaluate.EvaluationResult, decision: PromotionDecision
) -> list[dict[str, Any]]:
    """The metrics table, named by the task's own metrics: test scores (headline among
    them), the validation score, the gate's two headline scores, then the per-channel
    MSE of a wide series or the interval metrics of many series."""
    metrics = evaluation.metrics
    headline, val = evaluation.headline, evaluation.val_metric
    count = ("test_windows", "n_windows") if "n_windows" in metrics else ("test_series", "n_series")
    rows: list[dict[str, Any]] = [
        *({"metric": f"test_{k}", "value": metrics[k]} for k in evaluation.reported),
        {"metric": f"val_{val}", "value": metrics.get(f"val_{val}")},
        {"metric": count[0], "value": metrics[count[1]]},
        {"metric": f"gate_candidate_{headline}", "value": decision.candidate_mse},
        {"metric": f"gate_production_{headline}", "value": decision.production_mse},
    ]
    if "mse_by_channel" in metrics:
        rows += [
            {"metric": f"test_mse[{channel}]", "value": value}
            for channel, value in metrics["mse_by_channel"].items()
        ]
    else:
        rows += [
            {"metric": f"test_{k}", "value": v} for k, v in evaluation.interval_metrics.items()
        ]
    return rows


def candidate_rows(selection: Selection) -> list[dict[str, Any]]:
    """One row per candidate: scores (validation chose, test is reported) and costs."""
    return [
        {
            "candidate": c.name,
            "winner": c.name == selection.winner,
            "within_tolerance": c.name in selection.eligible,
            "model_kind": c.model_kind,
            "input_size": c.input_size,
            f"val_{c.val_metric}": c.val_score,
            f"test_{c.val_metric}": c.test_score,
            "train_seconds": round(c.train_seconds, 2),
            "parameters": c.parameters,
            "serving_ms_per_window": c.serving_ms_per_window,
        }
        for c in selection.candidates
    ]


def failure_message(report: ValidationReport) -> str:
    """The failed suite's report as the one-line error a flow raises."""
    from features.validation import DataValidationError

    return str(DataValidationError(report))


def _embedded_png(path: Path, alt: str) -> str:
    # Image artifacts need a URL the UI can fetch; a local PNG has none, so it travels
    # inside the markdown as a data URI, which the Prefect UI renders.
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


@flow(name="retrain", persist_result=False, validate_parameters=True)
def retrain(request: RetrainRequest | None = None) -> RetrainResult | State:
    """Retrain, evaluate, register and (if it wins) promote a forecaster.

    Args:
        request: Which params file, profile and overrides to use (defaults: params.yaml in
            the working directory, full profile).

    Returns:
        What the run did; a Failed state (no traceback) when the data breaks the suite.
    """
    request = request or RetrainRequest()
    cfg = load_pipeline_config(
        request.params_file,
        overrides=request.overrides,
        profile=request.profile,
        root=request.root,
    )
    pulled = pull_data(cfg, request.allow_synthetic)
    report = validate_data(cfg)
    if not report.success:
        publish_validation_failure(report)
        return Failed(message=failure_message(report))
    build_features(cfg)
    prepare_backbone(cfg)
    runner, threads = candidate_runner(cfg.params.selection.runner, len(cfg.candidates))
    # Prefect annotates `task_runner` as TaskRunner[PrefectFuture[Any]], but TaskRunner is
    # invariant in its future type, so no concrete runner (thread, process, Dask) matches.
    reports = train_candidates.with_options(task_runner=runner)(cfg, threads)  # type: ignore[arg-type]
    selection = select_model(cfg, reports)
    evaluation = evaluate_model(cfg)
    tag = register_model(cfg, cfg.layout.model_dir)
    decision = promote_model(cfg, tag, request.force)
    publish_report(evaluation, decision, selection)
    return RetrainResult(
        candidate=tag,
        promoted=decision.promoted,
        reason=decision.reason,
        metric=evaluation.headline,
        candidate_mse=decision.candidate_mse,
        production_mse=decision.production_mse,
        production=registry_stages.open_registry(cfg).production_tag(),
        metrics=evaluation.metrics,
        data_source=pulled.source,
        synthetic_data=pulled.synthetic,
        winner=selection.winner,
        selection_reason=selection.reason,
        candidates=tuple(row for row in candidate_rows(selection)),
    )
