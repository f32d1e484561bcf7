"""Forecasting tasks: one contract (`ForecastTask`), a long-term and a short-term kind.

`load_task` reads the data a config names as the task it describes, and `task_for_model`
the data a trained model is scored on; they are the only places that tell the kinds apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llata_core.config import DataConfig
from llata_core.data import SeriesFrame, load_series, make_splits
from llata_core.shortterm import load_short_term_splits
from llata_core.tasks.contract import (
    Evaluation,
    ForecastTask,
    Headline,
    Lineage,
    TrainingBatch,
    Validate,
    as_task,
)
from llata_core.tasks.longterm import LongTermTask
from llata_core.tasks.shortterm import ShortTermTask

if TYPE_CHECKING:
    from llata_core.forecaster import Forecaster

__all__ = [
    "Evaluation",
    "ForecastTask",
    "Headline",
    "Lineage",
    "LongTermTask",
    "ShortTermTask",
    "TrainingBatch",
    "Validate",
    "as_task",
    "load_task",
    "task_for_model",
]


def load_task(
    data: DataConfig,
    *,
    seed: int = 0,
    series: SeriesFrame | None = None,
    allow_synthetic: bool = False,
) -> ForecastTask:
    """The task a data section describes: short-term series (`data.short_term`) or windows
    of one long-term series.

    Args:
        data: the validated data section.
        seed: base seed of the short-term training windows' cut points.
        series: use this series instead of loading `data.dataset` (e.g. the frame the
            feature store returned); long-term data only.
        allow_synthetic: generate long-term data when the benchmark is unreachable.

    Raises:
        ValueError: a series frame given for short-term data.
    """
    if data.short_term:
        if series is not None:
            raise ValueError("a wide series frame is long-term data; this config is short-term")
        return ShortTermTask(load_short_term_splits(data, seed=seed))
    series = series or load_series(data, allow_synthetic=allow_synthetic)
    return LongTermTask(make_splits(series, data))


def task_for_model(
    fc: Forecaster, data: DataConfig | None = None, *, allow_synthetic: bool = False
) -> ForecastTask:
    """The task that scores a trained model: on its own data, or on other data of its
    kind (zero-shot), cut with the model's input size and horizon.

    Raises:
        ValueError: long-term data for a short-term model.
    """
    if fc.config.data.short_term:
        return ShortTermTask.for_model(fc, data)
    return LongTermTask.for_model(fc, data, allow_synthetic=allow_synthetic)
