"""Cutting many univariate series into short-term windows, left-padded with a mask.

`ShortTermWindows` holds out each series' last `horizon` training points for validation
and gives the random training windows (`ShortTermTrainDataset`), the validation inputs
and the test inputs; an input shorter than `input_size` is left-padded with zeros and
carries a mask that is 0 on the padding, the rule of N-BEATS and Time-Series-Library's M4
loader.

References:
    Oreshkin et al., N-BEATS (ICLR 2020), M4 experiments; Time-Series-Library (thuml)
    `data_loader.Dataset_M4`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from llata_core.errors import DataError
from llata_core.shortterm.metrics import evaluate_forecasts
from llata_core.shortterm.series import M4Dataset

log = logging.getLogger(__name__)


class ShortTermSample(NamedTuple):
    """One training window (default collate stacks these into a batch of the same type,
    which has the shape training takes from every task: `llata_core.tasks.TrainingBatch`).

    Attributes:
        insample: `[input_size, 1]` float32 history, left-padded with zeros.
        insample_mask: `[input_size, 1]` 1.0 on real points, 0.0 on padding.
        target: `[horizon, 1]` float32 values after the cut point, right-padded with zeros.
        target_mask: `[horizon, 1]` 1.0 on real points, 0.0 where the series ran out.
    """

    insample: torch.Tensor
    insample_mask: torch.Tensor
    target: torch.Tensor
    target_mask: torch.Tensor


class ShortTermInputs(NamedTuple):
    """Model inputs for every series at once (validation or test).

    Attributes:
        insample: `[N, input_size, 1]` float32 last points of each series, left-padded.
        insample_mask: `[N, input_size, 1]` 1.0 on real points, 0.0 on padding.
    """

    insample: torch.Tensor
    insample_mask: torch.Tensor


def _left_padded(history: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `input_size` points of `history`, left-padded with zeros, and their mask."""
    window = np.zeros(input_size, dtype=np.float32)
    mask = np.zeros(input_size, dtype=np.float32)
    tail = history[-input_size:]
    if tail.shape[0]:
        window[-tail.shape[0] :] = tail
        mask[-tail.shape[0] :] = 1.0
    return window, mask


def _stack_inputs(histories: Sequence[np.ndarray], input_size: int) -> ShortTermInputs:
    padded = [_left_padded(h, input_size) for h in histories]
    insample = np.stack([w for w, _ in padded])[:, :, None]  # [N, input_size, 1]
    mask = np.stack([m for _, m in padded])[:, :, None]  # [N, input_size, 1]
    return ShortTermInputs(torch.from_numpy(insample), torch.from_numpy(mask))


class ShortTermTrainDataset(Dataset[ShortTermSample]):
    """Randomly cut training windows, reproducible from `(seed, epoch, index)`.

    Item `i` belongs to series `i // samples_per_series`, so `len(dataset)` is
    `number of series * samples_per_series`; with the default of 1 an epoch sees one window
    per series, as in Time-Series-Library's `Dataset_M4`. Each item draws its cut point `c`
    uniformly from the last `int(history_size * horizon)` points of its series' training
    part (but `c >= 1`, so there is always history, and `c <= len - 1`, so there is always
    a target). The input is the `input_size` points before `c`, left-padded with zeros
    when the history is shorter (mask 0 on the padding); the target is the `horizon` points
    from `c`, right-padded with zeros where the training part ends (mask 0 there).

    The cut point comes from a generator seeded with `(seed, epoch, index)`, not from global
    state, so an item is the same whatever the DataLoader's shuffling or worker count.
    Call `set_epoch` before each epoch to draw new cut points; without it every epoch sees
    the same windows. With `persistent_workers=True` the workers keep their own copy of
    the dataset and would not see `set_epoch`.

    Args:
        series: each series' training part (the held-out validation points removed).
        ids: the series ids, for messages.
        input_size: input window length.
        horizon: target window length.
        history_size: cut points come from the last `history_size * horizon` points.
        samples_per_series: windows per series per epoch.
        seed: base seed of the cut points.

    Raises:
        DataError: the sizes are not positive, or no series has the two points a window
            needs. A series with a one-point training part is left out with a warning.
    """

    def __init__(
        self,
        series: Sequence[np.ndarray],
        ids: Sequence[str],
        *,
        input_size: int,
        horizon: int,
        history_size: float,
        samples_per_series: int = 1,
        seed: int = 0,
    ) -> None:
        if min(input_size, horizon, samples_per_series) < 1:
            raise DataError(
                f"input_size ({input_size}), horizon ({horizon}) and samples_per_series "
                f"({samples_per_series}) must be positive"
            )
        self.sampling_limit = int(history_size * horizon)
        if self.sampling_limit < 1:
            raise DataError(f"history_size {history_size} * horizon {horizon} is below one point")
        too_short = [sid for sid, s in zip(ids, series, strict=True) if s.shape[0] < 2]
        if too_short:
            log.warning(
                "%d series have fewer than 2 training points after holding out the validation "
                "horizon and give no training windows: %s",
                len(too_short),
                ", ".join(too_short[:10]),
            )
        kept = [(sid, s) for sid, s in zip(ids, series, strict=True) if s.shape[0] >= 2]
        if not kept:
            raise DataError("no series is long enough to cut a training window from")
        self.ids = tuple(sid for sid, _ in kept)
        self.series = tuple(np.asarray(s, dtype=np.float32) for _, s in kept)
        self.input_size = input_size
        self.horizon = horizon
        self.samples_per_series = samples_per_series
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's cut points the items draw."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.series) * self.samples_per_series

    def cut_point(self, index: int) -> int:
        """Where item `index` splits its series into input and target (see the class)."""
        values = self.series[index // self.samples_per_series]
        length = values.shape[0]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return int(rng.integers(max(1, length - self.sampling_limit), length))

    def __getitem__(self, index: int) -> ShortTermSample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        values = self.series[index // self.samples_per_series]
        cut = self.cut_point(index)
        insample, insample_mask = _left_padded(values[:cut], self.input_size)
        target = np.zeros(self.horizon, dtype=np.float32)
        target_mask = np.zeros(self.horizon, dtype=np.float32)
        future = values[cut : cut + self.horizon]
        target[: future.shape[0]] = future
        target_mask[: future.shape[0]] = 1.0
        return ShortTermSample(
            torch.from_numpy(insample)[:, None],  # [input_size, 1]
            torch.from_numpy(insample_mask)[:, None],  # [input_size, 1]
            torch.from_numpy(target)[:, None],  # [horizon, 1]
            torch.from_numpy(target_mask)[:, None],  # [horizon, 1]
        )


class ShortTermWindows:
    """Training, validation and test windows of many univariate series.

    The last `horizon` points of each training series are held out for validation: training
    windows are cut only from the points before them, the validation input is the
    `input_size` points just before them, and the test input is the last `input_size`
    points of the full series (its target is the separate test data, e.g. M4's test file).
    Inputs shorter than `input_size` are left-padded with zeros and carry a mask that is
    0 on the padding, the rule of N-BEATS and Time-Series-Library's M4 loader.

    Args:
        train: each series' full history.
        horizon: forecast length.
        seasonality: the period `m` used by MASE/Naive2 when evaluating.
        ids: series ids; default `"0"`, `"1"`, ...
        test: each series' test values (`horizon` each), when known.
        input_size: input length; default `2 * horizon` (the CALF/TSL M4 setting).
        history_size: training cut points come from the last `history_size * horizon`
            points of each training part.

    Raises:
        DataError: a series has fewer than `horizon + 1` points (nothing would be left
            before the validation target), lengths disagree, or a value is not finite.
    """

    def __init__(
        self,
        train: Sequence[np.ndarray],
        horizon: int,
        *,
        seasonality: int = 1,
        ids: Sequence[str] | None = None,
        test: Sequence[np.ndarray] | None = None,
        input_size: int | None = None,
        history_size: float = 10.0,
    ) -> None:
        if horizon < 1 or seasonality < 1:
            raise DataError(f"horizon ({horizon}) and seasonality ({seasonality}) must be >= 1")
        self.horizon = horizon
        self.seasonality = seasonality
        self.input_size = 2 * horizon if input_size is None else input_size
        if self.input_size < 1:
            raise DataError(f"input_size must be >= 1, got {self.input_size}")
        self.history_size = history_size
        self.ids = tuple(str(i) for i in range(len(train))) if ids is None else tuple(ids)
        if len(self.ids) != len(train):
            raise DataError(f"{len(self.ids)} ids for {len(train)} series")
        series = []
        for sid, values in zip(self.ids, train, strict=True):
            array = np.asarray(values, dtype=np.float64)
            if array.ndim != 1:
                raise DataError(f"series {sid!r}: expected a 1-D array, got {array.shape}")
            if array.shape[0] < horizon + 1:
                raise DataError(
                    f"series {sid!r} has {array.shape[0]} points; short-term windows need at "
                    f"least horizon + 1 = {horizon + 1} (the last {horizon} are held out)"
                )
            if not np.isfinite(array).all():
                raise DataError(f"series {sid!r} has NaN or infinite values")
            series.append(array)
        self.train = tuple(series)
        self.test: tuple[np.ndarray, ...] | None = None
        if test is not None:
            if len(test) != len(self.train):
                raise DataError(f"{len(test)} test series for {len(self.train)} training series")
            self.test = tuple(np.asarray(t, dtype=np.float64) for t in test)
            for sid, t in zip(self.ids, self.test, strict=True):
                if t.shape != (horizon,):
                    raise DataError(f"series {sid!r}: test shape {t.shape}, expected ({horizon},)")
        short = sum(s.shape[0] - horizon < self.input_size for s in self.train)
        if short:
            log.info(
                "%d of %d series are shorter than horizon + input_size; their validation "
                "inputs are zero-padded on the left",
                short,
                len(self.train),
            )

    @classmethod
    def from_m4(
        cls,
        dataset: M4Dataset,
        *,
        input_size: int | None = None,
        history_size: float | None = None,
    ) -> ShortTermWindows:
        """Windows over an M4 subset, with the subset's horizon, seasonality, history size."""
        return cls(
            dataset.train,
            dataset.horizon,
            seasonality=dataset.seasonality,
            ids=dataset.ids,
            test=dataset.test,
            input_size=input_size,
            history_size=dataset.history_size if history_size is None else history_size,
        )

    @property
    def training_parts(self) -> tuple[np.ndarray, ...]:
        """Each series without its held-out last `horizon` points."""
        return tuple(s[: -self.horizon] for s in self.train)

    def training_dataset(
        self, *, seed: int = 0, samples_per_series: int = 1
    ) -> ShortTermTrainDataset:
        """A torch Dataset of random training windows (see `ShortTermTrainDataset`)."""
        return ShortTermTrainDataset(
            self.training_parts,
            self.ids,
            input_size=self.input_size,
            horizon=self.horizon,
            history_size=self.history_size,
            samples_per_series=samples_per_series,
            seed=seed,
        )

    def validation_inputs(self) -> ShortTermInputs:
        """The `input_size` points before each series' held-out last `horizon` points."""
        return _stack_inputs(self.training_parts, self.input_size)

    def validation_targets(self) -> np.ndarray:
        """`[N, horizon]` float64: each series' held-out last `horizon` training points."""
        return np.stack([s[-self.horizon :] for s in self.train])

    def calibration_histories(self, back: int) -> tuple[np.ndarray, ...]:
        """Each series before its `back`-th last training horizon: `back=1` gives the
        training parts (the validation input's history), `back=2` the horizon before, and
        so on. Only series with at least one point before that horizon are included, in
        order; `calibration_targets(back)` gives their targets."""
        if back < 1:
            raise ValueError(f"back must be >= 1, got {back}")
        cut = back * self.horizon
        return tuple(s[: s.shape[0] - cut] for s in self.train if s.shape[0] > cut)

    def calibration_targets(self, back: int) -> np.ndarray:
        """`[n, horizon]` float64: the `back`-th last training horizon of each series that
        `calibration_histories(back)` includes (`back=1`: `validation_targets()`)."""
        if back < 1:
            raise ValueError(f"back must be >= 1, got {back}")
        cut, h = back * self.horizon, self.horizon
        return np.stack([s[len(s) - cut : len(s) - cut + h] for s in self.train if len(s) > cut])

    def calibration_inputs(self, back: int) -> ShortTermInputs:
        """The `input_size` points before each `calibration_targets(back)` window."""
        return _stack_inputs(self.calibration_histories(back), self.input_size)

    def test_inputs(self) -> ShortTermInputs:
        """The last `input_size` points of each full training series."""
        return _stack_inputs(self.train, self.input_size)

    def test_targets(self) -> np.ndarray:
        """`[N, horizon]` float64 test values.

        Raises:
            DataError: the windows were built without test data.
        """
        if self.test is None:
            raise DataError("these windows have no test data")
        return np.stack(self.test)

    def evaluate_validation(self, forecasts: Sequence[np.ndarray] | np.ndarray) -> dict[str, float]:
        """SMAPE, MASE and OWA of validation forecasts (in-sample = each training part)."""
        return evaluate_forecasts(
            forecasts,
            list(self.validation_targets()),
            self.training_parts,
            self.seasonality,
            ids=self.ids,
        )
