"""The forecasting task contract that training, the jobs and the command line work through.

Long-term forecasting (windows cut from one multivariate series, scored by MSE) and
short-term forecasting (many univariate series such as M4, scored by SMAPE, MASE and OWA)
are two implementations of one interface, `ForecastTask`. Whoever trains or scores a
model asks the task for its data, its validation score and its test scores, and never
which kind of task it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import singledispatch
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from llata_core.config import DataConfig, TrainConfig
from llata_core.data import Scaler
from llata_core.intervals import DEFAULT_LEVELS, ConformalScores

if TYPE_CHECKING:
    from accelerate import Accelerator

    from llata_core.forecaster import Forecaster

Validate = Callable[[nn.Module, bool], dict[str, float]]
"""`(training model, bf16) -> every validation metric by name`; see `ForecastTask.validator`."""


@dataclass(frozen=True)
class Headline:
    """The one test metric a model of a task is judged by (registry gates, promotion).

    Attributes:
        name: the metric's key in `metrics.json` (`mse`, `owa`).
        lower_is_better: its direction.
    """

    name: str
    lower_is_better: bool = True

    def record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The keys that make an artifact's metrics self-describing: which metric is the
        headline (`metric`), its value (`score`) and its direction (`lower_is_better`)."""
        return {
            "metric": self.name,
            "score": metrics[self.name],
            "lower_is_better": self.lower_is_better,
        }


@dataclass(frozen=True)
class Lineage:
    """Where a task's data came from, as artifacts record it.

    Attributes:
        source: how it was obtained (`file`, `mirror`, `synthetic`, ...).
        origin: the file(s) or benchmark read.
        sha256: hash of the bytes read.
    """

    source: str
    origin: str
    sha256: str


@dataclass(frozen=True)
class Evaluation:
    """A trained model's scores as its artifact records them.

    Attributes:
        metrics: test and validation scores for `metrics.json` (the headline among them).
        intervals: conformal scores calibrated on the validation split, when the task
            calibrates at training time.
    """

    metrics: dict[str, Any]
    intervals: ConformalScores | None = None


class TrainingBatch(Protocol):
    """A batch of a task's training samples as the loader stacks them: the one shape `fit`
    trains on, whatever the kind of task (`Window` long-term, `ShortTermSample` M4-style).

    Attributes:
        insample: the input windows `[B, L, M]`.
        target: what follows them `[B, H, M]`.
        insample_mask: 1 on real input points, 0 on left padding; None means all real.
        target_mask: 1 on real target points, 0 where a series ran out; None means all real.
    """

    @property
    def insample(self) -> torch.Tensor: ...

    @property
    def target(self) -> torch.Tensor: ...

    @property
    def insample_mask(self) -> torch.Tensor | None: ...

    @property
    def target_mask(self) -> torch.Tensor | None: ...


@runtime_checkable
class ForecastTask(Protocol):
    """A forecasting problem: its data, how it validates, how it is scored.

    Attributes:
        val_metric: the validation metric early stopping minimises (`mse`, `smape`).
        headline: the test metric models of this task are judged by.
        reported: the test metrics a run summary prints, headline included.
        seasonality: the seasonal period the losses take (1 where none applies).
        scaler: the scaler that travels with the model.
        lineage: where the data came from.
        train: the training samples; a loader stacks them into `TrainingBatch`es.
    """

    @property
    def val_metric(self) -> str: ...

    @property
    def headline(self) -> Headline: ...

    @property
    def reported(self) -> tuple[str, ...]: ...

    @property
    def seasonality(self) -> int: ...

    @property
    def scaler(self) -> Scaler: ...

    @property
    def lineage(self) -> Lineage: ...

    @property
    def train(self) -> Dataset: ...

    def fingerprint(self) -> str:
        """Identifies the evaluation windows: the data, its splits and the window shape."""
        ...

    def targets_fingerprint(self) -> str:
        """Identifies what the scores score (the data, its splits, the futures forecast), not
        the lookback: equal fingerprints mean comparable scores (`eval_targets_hash`)."""
        ...

    def describe(self) -> str:
        """One line on the data's size, for the training log."""
        ...

    def validator(self, train: TrainConfig, accelerator: Accelerator) -> Validate:
        """How `fit` validates after each epoch, on the accelerator's device.

        The returned function scores the training model's student (in eval mode, restoring
        train mode) and returns every validation metric it computes; `val_metric` names
        the one early stopping reads.
        """
        ...

    def evaluate(self, model: nn.Module, *, batch_size: int) -> Evaluation:
        """Score a trained inference model for its artifact, in fp32, validation included.

        The validation score is measured again on the inference model, not taken from
        training: training validates the training model's student, under bf16 autocast
        where the precision says so, and selection compares this score with those of
        models that never trained (a combination, `llata_core.combination_job`), which
        only the inference model in fp32 gives alike.

        Args:
            model: the inference model (`[B, L, M] -> [B, H, M]`).
            batch_size: windows per forward pass; does not change the result.
        """
        ...

    def score(
        self, model: nn.Module, split: str, *, levels: Sequence[float] = DEFAULT_LEVELS
    ) -> dict[str, Any]:
        """Every metric of an inference model on one split (`test`, `val`, ...).

        Raises:
            ValueError: the task does not score that split.
        """
        ...

    def plot(self, fc: Forecaster, path: Path) -> Path:
        """Forecast against actual on a few test windows, as PNG.

        Raises:
            ValueError: the task has no such plot.
        """
        ...

    def sample_inputs(self, n: int) -> np.ndarray:
        """Up to `n` validation input windows `[n, L, M]` in the model's units (e.g. to time
        the served model)."""
        ...


def data_for_model(fc: Forecaster, data: DataConfig | None) -> DataConfig:
    """The data a trained model is scored on (default its own), cut with the model's
    input size and horizon."""
    base = fc.config.data
    data = data or base
    return data.model_copy(update={"input_size": base.input_size, "horizon": base.horizon})


@singledispatch
def as_task(data: object) -> ForecastTask:
    """The task `data` describes: a task itself, or splits of a kind whose task
    implementation registered an adapter (`as_task.register(Splits, LongTermTask)`).

    Raises:
        TypeError: `data` is neither.
    """
    if isinstance(data, ForecastTask):
        return data
    raise TypeError(f"{type(data).__name__} is not a forecasting task or its splits")
