"""Form a combination of two trained artifacts: weight on validation, scores, artifact.

The retrain flow and `llata pipeline train` (the DVC stage) call `combine_job` after the
candidates are trained (`flows.selection_stages`); it is the library's one way to make a
combination artifact, as `llata_core.jobs.train_job` is its one way to make a model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llata_core.combination import Combination, Member, WeightChoice, choose_weight, scalers_agree
from llata_core.data import SeriesFrame
from llata_core.forecaster import Forecaster, save_combination
from llata_core.tasks import ForecastTask, load_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CombineOutcome:
    """What `combine_job` found, and wrote when the mean beat both members.

    Attributes:
        choice: the weight chosen on validation and every weight's validation score.
        artifact: the combination artifact; None when validation chose a member alone.
        metrics: its metrics.json (None without an artifact).
        task: the data it was scored on (windows cut for the longest member).
    """

    choice: WeightChoice
    artifact: Path | None
    metrics: dict[str, Any] | None
    task: ForecastTask


def check_trained_on(task: ForecastTask, members: Sequence[tuple[str, Forecaster]]) -> None:
    """Refuse data that is not the data every member was trained on (the `data_sha256` its
    artifact records; an artifact without one is not checked).

    The scaler alone cannot tell: a short-term model's is the identity whatever its series
    (`llata_core.shortterm.identity_scaler`), so only the data's hash says that the
    validation split the weight is chosen on is the one each member was selected on.

    Raises:
        ValueError: naming the member and both hashes.
    """
    sha256 = task.lineage.sha256
    for name, fc in members:
        trained_on = fc.metadata.get("data_sha256")
        if trained_on and trained_on != sha256:
            raise ValueError(
                f"{fc.config.data.dataset}: member {name!r} was trained on data with SHA-256 "
                f"{str(trained_on)[:12]}..., the combination's data has {sha256[:12]}...: "
                "its validation split is not the one it was selected on"
            )


def combine_job(
    members: tuple[tuple[str, Path], tuple[str, Path]],
    *,
    out_dir: Path,
    series: SeriesFrame | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> CombineOutcome:
    """Weigh two trained models on validation and, unless one alone is best, save their
    combination with its own scores and conformal intervals.

    The first member's weight is chosen on the validation split (`choose_weight`, grid 0,
    0.1, ..., 1); weight 0 or 1 is a member alone, and then nothing is written. Otherwise
    the combination is scored like any trained model (`ForecastTask.evaluate`: validation
    and test, conformal scores from the combination's own validation residuals) and saved
    with both members inside (`save_combination`).

    Args:
        members: `(name, artifact directory)` of the two members.
        out_dir: the combination artifact to write (replaced atomically).
        series: the series the members were trained on, when it is in memory (the feature
            store's frame); default: load the longest member's `data.dataset`.
        extra_metadata: lineage to record beside the longest member's.

    Raises:
        ValueError: members that cannot be averaged (horizon, channels, scaler), or data
            that is not the data they were trained on (`check_trained_on`).
    """
    loaded = [(name, Forecaster.load(path)) for name, path in members]
    first, second = (Member(name, fc.model, fc.scaler) for name, fc in loaded)
    longest = max((fc for _, fc in loaded), key=lambda fc: fc.input_size)
    cfg = longest.config
    task = load_task(cfg.data, seed=cfg.train.seed, series=series)
    check_trained_on(task, loaded)
    if not scalers_agree(task.scaler, first.scaler):
        raise ValueError(
            f"{cfg.data.dataset}: its training rows do not give the scaler "
            f"{first.name!r} and {second.name!r} were trained with"
        )
    val_metric = task.val_metric
    choice = choose_weight(first, second, lambda m: task.score(m, "val")[val_metric])
    log.info(
        "combination %s+%s: weight %.1f, validation %s %.4f (alone: %.4f and %.4f)",
        first.name,
        second.name,
        choice.weight,
        val_metric,
        choice.score,
        choice.by_weight[1.0],
        choice.by_weight[0.0],
    )
    if choice.alone:
        return CombineOutcome(choice, None, None, task)
    model = Combination([first, second], choice.weights).eval()
    evaluation = task.evaluate(model, batch_size=cfg.train.eval_batch_size)
    metrics = {
        **evaluation.metrics,
        "weights": {m["name"]: m["weight"] for m in model.describe_members()},
        f"val_{val_metric}_by_weight": {f"{w:.1f}": v for w, v in choice.by_weight.items()},
        "train_seconds": sum(float(fc.metrics.get("train_seconds", 0.0)) for _, fc in loaded),
        "eval_split_hash": task.fingerprint(),
        "eval_targets_hash": task.targets_fingerprint(),
        **task.headline.record(evaluation.metrics),
    }
    metadata = {
        **longest.metadata,
        "model_kind": "combination",
        "members": model.describe_members(),
        **(extra_metadata or {}),
    }
    artifact = save_combination(
        out_dir,
        list(members),
        model.weights,
        cfg,
        first.scaler,
        metrics,
        metadata=metadata,
        intervals=evaluation.intervals,
        overwrite=True,
    )
    return CombineOutcome(choice, artifact, metrics, task)
