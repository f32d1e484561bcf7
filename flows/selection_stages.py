"""The pipeline's choice among trained candidates: their combination, then the selection.

After the candidates are trained (`flows.training_stages.train_candidate_stage`, one per
Prefect task or one after another under DVC), `select_stage` forms the combination of the
two best by validation (`combination_stage`, when `pipeline.selection.combine` is on), adds
it as one more candidate and chooses among all of them by the one rule of
`llata_core.selection.select_candidate`. `llata pipeline train` (the DVC stage) and the
Prefect flow both go through `select_stage`, so a combination is formed, scored and chosen
the same way whichever entry point ran.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import TYPE_CHECKING

from flows.config import PipelineConfig
from flows.training_stages import train_candidate_stage, training_series
from llata_core.atomic import write_json

if TYPE_CHECKING:
    from llata_core.selection import CandidateReport, Selection

logger = logging.getLogger(__name__)


def combination_stage(
    cfg: PipelineConfig, reports: list[CandidateReport]
) -> CandidateReport | None:
    """The combination of the two best candidates by validation score, as a candidate.

    The first member's weight is chosen on the validation split (grid 0, 0.1, ..., 1;
    `llata_core.combination_job.combine_job`); when a member alone is best (weight 0 or 1)
    there is no combination and this returns None. Otherwise the artifact goes to
    `artifacts/candidates/<first>+<second>/model`, scored and calibrated on its own
    residuals; its cost is both members' (training seconds, parameters, serving ms per
    window: the sum of theirs). Its `run/` holds the first member's training history, the
    loss curve the evaluate stage draws.
    """
    from llata_core.combination_job import combine_job
    from llata_core.selection import CandidateReport

    if not cfg.params.selection.combine or len(reports) < 2:
        return None
    first, second = sorted(reports, key=lambda r: r.val_score)[:2]
    name = f"{first.name}+{second.name}"
    longest = max((first, second), key=lambda r: r.input_size)
    series, lineage = training_series(cfg, cfg.candidate(longest.name).data)
    where = cfg.layout.candidate_dir(name)
    outcome = combine_job(
        ((first.name, cfg.root / first.artifact), (second.name, cfg.root / second.artifact)),
        out_dir=where / "model",
        series=series,
        extra_metadata={
            **lineage,
            "candidate": name,
            "candidate_overrides": [],
            "pipeline_profile": cfg.profile,
            "pipeline_overrides": list(cfg.overrides),
        },
    )
    if outcome.artifact is None or outcome.metrics is None:
        logger.info(
            "no combination: validation puts weight %.1f on %s alone", outcome.choice.weight, name
        )
        return None
    run_dir = where / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cfg.layout.candidate_dir(first.name) / "run" / "history.jsonl", run_dir)
    val_metric = outcome.task.val_metric
    report = CandidateReport(
        name=name,
        overrides=(),
        model_kind="combination",
        input_size=longest.input_size,
        val_score=float(outcome.metrics[f"val_{val_metric}"]),
        val_metric=val_metric,
        test_score=float(outcome.metrics[val_metric]),
        train_seconds=first.train_seconds + second.train_seconds,
        parameters=first.parameters + second.parameters,  # the members' modules, no more
        serving_ms_per_window=first.serving_ms_per_window + second.serving_ms_per_window,
        artifact=str(outcome.artifact.relative_to(cfg.layout.root)),
    )
    logger.info(
        "candidate %s: weights %s, val %s %.4f, %d parameters",
        name,
        outcome.metrics["weights"],
        val_metric.upper(),
        report.val_score,
        report.parameters,
    )
    return report


def select_stage(cfg: PipelineConfig, reports: list[CandidateReport]) -> Selection:
    """Add the combination of the two best candidates (`combination_stage`), choose the
    winner by validation score (then cost), make it `artifacts/model` and its run
    `artifacts/run`, and write `reports/candidates.json`.

    The directories are replaced whole (a copy into a temp sibling, then a rename), so a
    failure leaves the previous model, never half of one.
    """
    from llata_core.atomic import replace_directory
    from llata_core.selection import select_candidate

    layout = cfg.layout
    combined = combination_stage(cfg, reports)
    candidates = [*reports, combined] if combined is not None else list(reports)
    selection = select_candidate(candidates, cfg.params.selection.tolerance)
    source = layout.candidate_dir(selection.winner)
    replace_directory(source / "model", layout.model_dir)
    replace_directory(source / "run", layout.run_dir)
    write_json(layout.selection, selection.to_dict())
    logger.info("selected %s: %s", selection.winner, selection.reason)
    return selection


def read_selection(cfg: PipelineConfig) -> Selection | None:
    """The last selection `select_stage` wrote, if any."""
    from llata_core.selection import Selection

    if not cfg.layout.selection.is_file():
        return None
    return Selection.from_dict(json.loads(cfg.layout.selection.read_text(encoding="utf-8")))


def train_stage(cfg: PipelineConfig) -> Selection:
    """Train every candidate one after another, then select (the DVC stage and
    `llata pipeline train`; the Prefect flow trains them in parallel tasks instead).

    Each trains with the torch threads the flow's task runner would give it
    (`RunnerParams.shares`), so that both paths give the same numbers on one machine.
    """
    cores = os.cpu_count() or 1
    _, threads = cfg.params.selection.runner.shares(len(cfg.candidates), cores)
    return select_stage(cfg, [train_candidate_stage(cfg, n, threads) for n in cfg.candidates])
