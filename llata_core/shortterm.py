"""Short-term forecasting as in the M4 competition: data, windows, metrics and losses.

This is the CALF paper's short-term setting: each M4 subset is many univariate series of
different lengths, forecast `horizon` steps ahead from an input of `2 * horizon` points, and
scored with SMAPE, MASE and OWA (relative to the Naive2 benchmark on the same series).

The module has four parts, in dependency order:

1. Parsing: `read_m4` for the M4 competition's ragged CSV files and `read_long_format` for
   many univariate series in a long table.
2. Windows: `ShortTermWindows` cuts training windows (held-out last `horizon` of each series
   for validation), validation inputs and test inputs, left-padded with an input mask.
3. Metrics (numpy): `smape`, `mase`, `owa`, the benchmarks `naive1`, `seasonal_naive` and
   `naive2`, and `evaluate_m4` / `evaluate_forecasts` that average them the way M4 does.
4. Losses (torch): `SMAPELoss` and `MASELoss`, differentiable training objectives with the
   masking of Time-Series-Library's M4 losses.

References:
    Makridakis, Spiliotis, Assimakopoulos, "The M4 Competition: 100,000 time series and 61
    forecasting methods", International Journal of Forecasting 36(1), 2020; the competition's
    benchmark code, Mcompetitions/M4-methods `Benchmarks and Evaluation.R`.
    Liu et al., "CALF: Aligning LLMs for Time Series Forecasting via Cross-modal Fine-Tuning"
    (short-term forecasting setting). Time-Series-Library (thuml) `data_loader.Dataset_M4`
    and `utils/losses.py`, which follow N-BEATS (Oreshkin et al., ICLR 2020).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from llata_core.data import MIRROR_ENV, DataError, read_maybe_gzip

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# The M4 subsets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class M4Subset:
    """One M4 frequency subset and the competition's settings for it.

    Attributes:
        frequency_name: `Yearly`, `Quarterly`, `Monthly`, `Weekly`, `Daily` or `Hourly`.
        horizon: the competition's forecast horizon for the subset.
        seasonality: the period `m` used by MASE and by Naive2's seasonality test.
        history_size: training cut points are drawn from the last `history_size * horizon`
            points of a series (N-BEATS / Time-Series-Library's `M4Meta.history_size`).
        id_prefix: first letter of the subset's series ids (`H1`, `W17`, ...).
    """

    frequency_name: str
    horizon: int
    seasonality: int
    history_size: float
    id_prefix: str


M4_SUBSETS: dict[str, M4Subset] = {
    s.frequency_name: s
    for s in (
        M4Subset("Yearly", 6, 1, 1.5, "Y"),
        M4Subset("Quarterly", 8, 4, 1.5, "Q"),
        M4Subset("Monthly", 18, 12, 1.5, "M"),
        M4Subset("Weekly", 13, 1, 10.0, "W"),
        M4Subset("Daily", 14, 1, 10.0, "D"),
        M4Subset("Hourly", 48, 24, 10.0, "H"),
    )
}
"""M4 subsets by name. Horizons and seasonalities from the M4 competition guide
(Makridakis et al. 2020, table 1); history sizes from N-BEATS' M4 experiments."""


def m4_subset(frequency_name: str) -> M4Subset:
    """Look up an M4 subset by name, case-insensitively.

    Raises:
        DataError: the name is not one of the six M4 subsets.
    """
    subset = M4_SUBSETS.get(frequency_name.strip().capitalize())
    if subset is None:
        raise DataError(
            f"unknown M4 frequency {frequency_name!r}; expected one of {sorted(M4_SUBSETS)}"
        )
    return subset


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class M4Dataset:
    """One M4 subset: each series' training history and its held-out test values.

    The arrays are copied to float64 and made read-only, so the frozen dataclass really is
    immutable (and the caller's arrays are left alone).

    Attributes:
        ids: series ids, in file order (`H1`, `H2`, ...).
        train: each series' history (ragged lengths).
        test: each series' `horizon` test values, aligned with `ids`.
        horizon: the forecast horizon.
        seasonality: the period `m` used by MASE and Naive2.
        frequency_name: the M4 subset (`Hourly`, `Weekly`, ...).
    """

    ids: tuple[str, ...]
    train: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    horizon: int
    seasonality: int
    frequency_name: str

    def __post_init__(self) -> None:
        if not (len(self.ids) == len(self.train) == len(self.test)):
            raise DataError(
                f"M4Dataset: {len(self.ids)} ids, {len(self.train)} training and "
                f"{len(self.test)} test series must agree"
            )
        for name in ("train", "test"):
            arrays = tuple(np.array(a, dtype=np.float64) for a in getattr(self, name))
            for array in arrays:
                array.setflags(write=False)
            object.__setattr__(self, name, arrays)  # frozen: the dataclass escape hatch

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def history_size(self) -> float:
        """The subset's training-window history size (see `M4Subset`)."""
        return m4_subset(self.frequency_name).history_size


def _read_text(path: Path) -> str:
    """A file's text, gunzipped when it starts with the gzip magic bytes."""
    if not path.is_file():
        raise DataError(f"M4 file not found: {path}")
    try:
        raw = read_maybe_gzip(path)
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: unreadable ({err})") from err
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text: {err}") from err


def _read_m4_file(path: Path) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Parse one M4 CSV file: a header row, then `id, v1, v2, ...` with trailing empties."""
    reader = csv.reader(io.StringIO(_read_text(path)))
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: empty file, expected a header row")
    ids: list[str] = []
    series: list[np.ndarray] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line, e.g. after the last row
        series_id = row[0].strip()
        where = f"{path}: row {line} (series {series_id!r})"
        if not series_id:
            raise DataError(f"{path}: row {line}: empty series id in column 1")
        if series_id in seen:
            raise DataError(f"{where}: duplicate series id (first at row {seen[series_id]})")
        seen[series_id] = line
        if len(row) > len(header):
            raise DataError(f"{where}: {len(row)} cells but the header has {len(header)}")
        cells = row[1:]
        end = len(cells)
        while end and not cells[end - 1].strip():
            end -= 1
        if end == 0:
            raise DataError(f"{where}: the series has no values")
        values = _parse_cells(cells[:end], header, where)
        ids.append(series_id)
        series.append(values)
    if not ids:
        raise DataError(f"{path}: no series after the header")
    return tuple(ids), tuple(series)


def _parse_cells(cells: list[str], header: list[str], where: str) -> np.ndarray:
    """Convert one row's value cells to float64, naming the column of the first bad cell."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for j, cell in enumerate(cells):
        column = f"column {j + 2} ({header[j + 1]})"
        if not cell.strip():
            raise DataError(f"{where}, {column}: empty cell inside the series")
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{where}, {column}: non-numeric value {cell!r}") from None
        if not math.isfinite(value):
            raise DataError(f"{where}, {column}: non-finite value {cell!r}")
    raise AssertionError("unreachable: a bad cell was detected but not located")


def _infer_frequency(ids: Sequence[str], origin: Path) -> str:
    """The M4 subset whose id prefix every id carries (`H` for Hourly, ...)."""
    by_prefix = {s.id_prefix: s.frequency_name for s in M4_SUBSETS.values()}
    prefixes = {sid[:1].upper() for sid in ids}
    if len(prefixes) == 1 and (prefix := prefixes.pop()) in by_prefix:
        return by_prefix[prefix]
    raise DataError(
        f"{origin}: cannot infer the M4 frequency from the series ids (first: {ids[0]!r}); "
        "pass frequency_name"
    )


def read_m4(
    train_path: str | os.PathLike[str],
    test_path: str | os.PathLike[str],
    frequency_name: str | None = None,
) -> M4Dataset:
    """Read one M4 subset from its competition files (`Hourly-train.csv[.gz]`, ...).

    Each file has a header row (`"V1","V2",...`) and one row per series: the id, then its
    values, ragged, so shorter series end in empty cells. Trailing empties are dropped; an
    empty cell before the last value, or a value that is not a finite number, is an error
    that names the file, row, series id and column, because silently shortening or
    imputing a series would change the benchmark. Rows are counted as file lines with the
    header as row 1; columns from 1 with the id as column 1 (so `V3` is column 3).

    Args:
        train_path: the subset's training file (gzip or plain CSV).
        test_path: the subset's test file; every series must have exactly `horizon` values.
        frequency_name: the M4 subset; default inferred from the id prefix (`H1` is Hourly).

    Returns:
        The subset with its horizon and seasonality from `M4_SUBSETS`.

    Raises:
        DataError: a file is missing or malformed, ids differ between the files, or a test
            row does not have `horizon` values.
    """
    train_path, test_path = Path(train_path), Path(test_path)
    train_ids, train = _read_m4_file(train_path)
    test_ids, test = _read_m4_file(test_path)
    if train_ids != test_ids:
        only_train = sorted(set(train_ids) - set(test_ids))[:5]
        only_test = sorted(set(test_ids) - set(train_ids))[:5]
        detail = (
            f"only in train: {only_train}, only in test: {only_test}"
            if only_train or only_test
            else "same ids in a different order"
        )
        raise DataError(f"{train_path} and {test_path} have different series ids ({detail})")
    subset = m4_subset(frequency_name or _infer_frequency(train_ids, train_path))
    for series_id, values in zip(test_ids, test, strict=True):
        if values.shape[0] != subset.horizon:
            raise DataError(
                f"{test_path}: series {series_id!r} has {values.shape[0]} test values, "
                f"the {subset.frequency_name} horizon is {subset.horizon}"
            )
    log.info("read M4 %s: %d series from %s", subset.frequency_name, len(train_ids), train_path)
    return M4Dataset(
        ids=train_ids,
        train=train,
        test=test,
        horizon=subset.horizon,
        seasonality=subset.seasonality,
        frequency_name=subset.frequency_name,
    )


def m4_mirror_paths(
    frequency_name: str, mirror: str | os.PathLike[str] | None = None
) -> tuple[Path, Path]:
    """Paths of one subset's train and test files in the benchmark mirror's `m4/` folder.

    Args:
        frequency_name: the M4 subset, e.g. `Hourly`.
        mirror: the mirror directory; default `$LLATA_DATA_MIRROR`.

    Raises:
        DataError: no mirror is configured or the files are not in it.
    """
    root = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if not root:
        raise DataError(f"no benchmark mirror: set {MIRROR_ENV} or pass mirror")
    name = m4_subset(frequency_name).frequency_name
    folder = Path(root) / "m4"
    found: list[Path] = []
    for split in ("train", "test"):
        candidates = [folder / f"{name}-{split}.csv.gz", folder / f"{name}-{split}.csv"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"M4 {name} {split} file not found in {folder}")
        found.append(path)
    return found[0], found[1]


def read_long_format(
    frame: pd.DataFrame,
    series_column: str = "series_id",
    time_column: str = "timestamp",
    value_column: str = "value",
) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    """Split a long table of many univariate series into one array per series.

    Rows are sorted by `time_column` within each series (a stable sort, so an already
    sorted table is unchanged); series keep the order of their first appearance.

    Args:
        frame: one row per (series, time) observation.
        series_column: the series id column.
        time_column: the time column (anything sortable: timestamps, integers).
        value_column: the numeric value column.

    Returns:
        `(ids, series)`: the ids as strings and each series as a float64 array in time order.

    Raises:
        DataError: a column is missing, the table is empty, a value is missing or not a
            finite number, or a series has two rows at the same time.
    """
    missing = [c for c in (series_column, time_column, value_column) if c not in frame.columns]
    if missing:
        raise DataError(f"long-format frame lacks columns {missing} (has {list(frame.columns)})")
    if frame.empty:
        raise DataError("long-format frame has no rows")
    values = pd.to_numeric(frame[value_column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = frame.loc[bad].iloc[0]
        raise DataError(
            f"{bad.sum()} missing or non-numeric values in {value_column!r}, e.g. series "
            f"{str(row[series_column])!r} at {row[time_column]}: {row[value_column]}"
        )
    table = pd.DataFrame(
        {"sid": frame[series_column].astype(str).to_numpy(), "t": frame[time_column].to_numpy()}
    )
    table["v"] = values
    duplicated = table.duplicated(["sid", "t"])
    if duplicated.any():
        row = table.loc[duplicated].iloc[0]
        raise DataError(f"series {row['sid']!r} has more than one row at {row['t']}")
    ids: list[str] = []
    series: list[np.ndarray] = []
    for sid, group in table.groupby("sid", sort=False):
        ordered = group.sort_values("t", kind="mergesort")
        ids.append(str(sid))
        series.append(ordered["v"].to_numpy(dtype=np.float64, copy=True))
    return tuple(ids), tuple(series)


# --------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------


class ShortTermSample(NamedTuple):
    """One training window (default collate stacks these into a batch of the same type).

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


# --------------------------------------------------------------------------------------
# Metrics and benchmarks (numpy)
# --------------------------------------------------------------------------------------


def _as_1d(values: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    return array


def smape(forecast: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float]) -> float:
    """Symmetric mean absolute percentage error of one series, in percent (0 to 200).

    `mean_t 200 * |F_t - A_t| / (|F_t| + |A_t|)`; a point where both are zero counts as 0
    (a perfect forecast), where the formula itself would give 0/0.

    References:
        Makridakis et al. (2020), M4 competition, eq. (1); M4-methods `smape_cal`.
    """
    f, a = _as_1d(forecast, "forecast"), _as_1d(actual, "actual")
    if f.shape != a.shape:
        raise ValueError(f"forecast {f.shape} and actual {a.shape} differ in length")
    denominator = np.abs(f) + np.abs(a)
    ratio = np.divide(np.abs(f - a), denominator, out=np.zeros_like(f), where=denominator != 0)
    return float(200.0 * ratio.mean())


def _mase_scale(insample: np.ndarray, seasonality: int) -> float:
    """Mean absolute in-sample error of the seasonal naive forecast (MASE's denominator)."""
    m = seasonality if insample.shape[0] > seasonality else 1
    if insample.shape[0] < 2:
        raise ValueError("MASE needs at least 2 in-sample points")
    return float(np.mean(np.abs(insample[m:] - insample[:-m])))


def mase(
    forecast: np.ndarray | Sequence[float],
    actual: np.ndarray | Sequence[float],
    insample: np.ndarray | Sequence[float],
    seasonality: int,
) -> float:
    """Mean absolute scaled error of one series.

    `mean_t |F_t - A_t| / mean_{t>m} |Y_t - Y_{t-m}|`, the forecast's mean absolute error
    scaled by the in-sample error of the seasonal naive forecast. When the in-sample
    series has no more than `m` points the scale uses `m = 1`.

    References:
        Hyndman & Koehler (2006), "Another look at measures of forecast accuracy";
        Makridakis et al. (2020), M4 competition, eq. (2); M4-methods `mase_cal`.

    Raises:
        ValueError: lengths differ, the in-sample series has fewer than 2 points, or its
            seasonal differences are all zero (the scale, hence MASE, is undefined).
    """
    f, a = _as_1d(forecast, "forecast"), _as_1d(actual, "actual")
    x = _as_1d(insample, "insample")
    if f.shape != a.shape:
        raise ValueError(f"forecast {f.shape} and actual {a.shape} differ in length")
    if seasonality < 1:
        raise ValueError(f"seasonality must be >= 1, got {seasonality}")
    scale = _mase_scale(x, seasonality)
    if scale == 0.0:
        raise ValueError("MASE is undefined: the in-sample seasonal differences are all zero")
    return float(np.mean(np.abs(f - a)) / scale)


def owa(smape_value: float, mase_value: float, naive2_smape: float, naive2_mase: float) -> float:
    """Overall weighted average: the mean of SMAPE and MASE relative to Naive2's.

    References:
        Makridakis et al. (2020), M4 competition, section 2.3.
    """
    if naive2_smape <= 0 or naive2_mase <= 0:
        raise ValueError(f"Naive2 SMAPE ({naive2_smape}) and MASE ({naive2_mase}) must be > 0")
    return ((smape_value / naive2_smape) + (mase_value / naive2_mase)) / 2.0


def naive1(insample: np.ndarray | Sequence[float], horizon: int) -> np.ndarray:
    """Naive forecast: the last observed value, repeated `horizon` times."""
    x = _as_1d(insample, "insample")
    return np.full(horizon, x[-1], dtype=np.float64)


def seasonal_naive(
    insample: np.ndarray | Sequence[float], horizon: int, seasonality: int
) -> np.ndarray:
    """Seasonal naive forecast: the last full season, repeated.

    Falls back to `naive1` when `seasonality` is 1 or the series is shorter than one season.

    References:
        M4-methods `naive_seasonal`.
    """
    x = _as_1d(insample, "insample")
    if seasonality <= 1 or x.shape[0] < seasonality:
        return naive1(x, horizon)
    return np.resize(x[-seasonality:], horizon).astype(np.float64)


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelations at lags `1..max_lag` (mean-removed, denominator n)."""
    d = x - x.mean()
    denominator = float(d @ d)
    return np.array([float(d[k:] @ d[:-k]) / denominator for k in range(1, max_lag + 1)])


def seasonality_test(insample: np.ndarray | Sequence[float], seasonality: int) -> bool:
    """M4's 90% autocorrelation test: is the series seasonal with period `m`?

    Seasonal when `|acf_m| > 1.645 * sqrt((1 + 2 * sum_{k=1}^{m-1} acf_k^2) / n)`. As in
    the competition's R code a series with `m <= 1`, fewer than `3 m` points, or no
    variance is not seasonal. (R's `acf` also stops at lag `10 log10(n)`, which makes series
    with `n < 10^(m/10)` non-seasonal; that quirk is not reproduced. It cannot bite on the
    M4 data, whose Hourly series have at least 700 points.)

    References:
        Makridakis et al. (2020), M4 competition, section 2.4 (Naive2); M4-methods
        `SeasonalityTest` in `Benchmarks and Evaluation.R`.
    """
    x = _as_1d(insample, "insample")
    n = x.shape[0]
    if seasonality <= 1 or n < 3 * seasonality or float(np.ptp(x)) == 0.0:
        return False
    acf = _acf(x, seasonality)
    limit = 1.645 * math.sqrt((1.0 + 2.0 * float(np.sum(acf[:-1] ** 2))) / n)
    return bool(abs(acf[-1]) > limit)


def seasonal_indices(insample: np.ndarray | Sequence[float], seasonality: int) -> np.ndarray:
    """Multiplicative seasonal indices of classical decomposition.

    The trend is a centred moving average (a 2 x m MA for even `m`, an m-point MA for odd
    `m`); each index is the mean ratio of the series to its trend at that position in the
    season, normalised so the indices average to 1. Index `i` applies to the points at
    positions `t` with `t % m == i`, counted from the series' first point.

    References:
        R `stats::decompose(type = "multiplicative")`, used by M4-methods for Naive2.

    Raises:
        ValueError: fewer than two full seasons, or a non-positive trend value.
    """
    x = _as_1d(insample, "insample")
    m, n = seasonality, x.shape[0]
    if m < 2 or n < 2 * m:
        raise ValueError(f"decomposition needs seasonality >= 2 and 2 seasons; got m={m}, n={n}")
    half = m // 2
    weights = np.full(2 * half + 1, 1.0 / m)  # m taps for odd m, m + 1 for even m
    if m % 2 == 0:
        weights[[0, -1]] = 0.5 / m  # the 2 x m MA: half weight on the two end points
    trend = np.full(n, np.nan)
    trend[half : n - half] = np.convolve(x, weights, mode="valid")  # symmetric weights
    valid = trend[half : n - half]
    if (valid <= 0).any():
        raise ValueError("multiplicative decomposition needs a positive trend")
    ratio = x / trend
    figure = np.array([np.nanmean(ratio[i::m]) for i in range(m)])
    return figure / figure.mean()


def naive2(insample: np.ndarray | Sequence[float], horizon: int, seasonality: int) -> np.ndarray:
    """Naive2: the naive forecast of the seasonally adjusted series, reseasonalised.

    When `seasonality_test` finds the series seasonal, the series is divided by its
    multiplicative seasonal indices, the last adjusted value is repeated, and the forecast
    for position `t` is multiplied back by the index of `t % m`. Otherwise Naive2 is
    `naive1`. A multiplicative decomposition of a series with zero or negative values is
    meaningless, so such series also fall back to `naive1` (logged); M4 has none.

    References:
        Makridakis et al. (2020), M4 competition, section 2.4; M4-methods
        `Benchmarks and Evaluation.R` (`f3 <- naive(des_input, h=fh)$mean*SIout`).
    """
    x = _as_1d(insample, "insample")
    if not seasonality_test(x, seasonality):
        return naive1(x, horizon)
    if (x <= 0).any():
        log.warning("naive2: series is seasonal but has non-positive values; using naive1")
        return naive1(x, horizon)
    indices = seasonal_indices(x, seasonality)
    n = x.shape[0]
    last_adjusted = x[-1] / indices[(n - 1) % seasonality]
    return last_adjusted * indices[(n + np.arange(horizon)) % seasonality]


def evaluate_forecasts(
    forecasts: Sequence[np.ndarray] | np.ndarray,
    actuals: Sequence[np.ndarray] | np.ndarray,
    insamples: Sequence[np.ndarray],
    seasonality: int,
    *,
    ids: Sequence[str] | None = None,
) -> dict[str, float]:
    """SMAPE, MASE and OWA of many series' forecasts, averaged the way M4 does.

    SMAPE and MASE are computed per series and averaged over series with equal weight;
    OWA compares these averages with Naive2's averages on the same series.

    Args:
        forecasts: one `[horizon]` (or `[horizon, 1]`) forecast per series, or `[N, horizon]`.
        actuals: the true values, same shapes.
        insamples: each series' history before the forecast (MASE scale, Naive2 input).
        seasonality: the period `m`.
        ids: series ids for error messages.

    Returns:
        `smape`, `mase`, `owa`, `naive2_smape`, `naive2_mase`.

    Raises:
        ValueError: counts or lengths disagree, a forecast is not finite, or a series'
            MASE is undefined; the message names the series.
    """
    n = len(actuals)
    if len(forecasts) != n or len(insamples) != n:
        raise ValueError(
            f"{len(forecasts)} forecasts, {n} actuals and {len(insamples)} in-samples must agree"
        )
    names = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
    scores = np.zeros((n, 4))  # smape, mase, naive2 smape, naive2 mase
    for i in range(n):
        try:
            actual = _as_1d(actuals[i], "actual")
            forecast = _as_1d(forecasts[i], "forecast")
            if not np.isfinite(forecast).all():
                raise ValueError("forecast has NaN or infinite values")
            insample = _as_1d(insamples[i], "insample")
            benchmark = naive2(insample, actual.shape[0], seasonality)
            scores[i] = (
                smape(forecast, actual),
                mase(forecast, actual, insample, seasonality),
                smape(benchmark, actual),
                mase(benchmark, actual, insample, seasonality),
            )
        except ValueError as err:
            raise ValueError(f"series {names[i]!r}: {err}") from err
    s, m, n2s, n2m = scores.mean(axis=0)
    return {
        "smape": float(s),
        "mase": float(m),
        "owa": owa(float(s), float(m), float(n2s), float(n2m)),
        "naive2_smape": float(n2s),
        "naive2_mase": float(n2m),
    }


def evaluate_m4(
    forecasts: Sequence[np.ndarray] | np.ndarray, dataset: M4Dataset
) -> dict[str, float]:
    """Score test forecasts for an M4 subset: SMAPE, MASE and OWA against Naive2.

    Args:
        forecasts: one `[horizon]` forecast per series, in `dataset.ids` order.
        dataset: the subset; its training series are the in-sample data.

    Returns:
        See `evaluate_forecasts`.
    """
    return evaluate_forecasts(
        forecasts, dataset.test, dataset.train, dataset.seasonality, ids=dataset.ids
    )


# --------------------------------------------------------------------------------------
# Training losses (torch)
# --------------------------------------------------------------------------------------


def divide_no_nan(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """`numerator / denominator` with 0 wherever the quotient would be NaN or infinite.

    Written with `torch.where` on a safe denominator rather than by overwriting NaNs in
    place: the in-place version breaks autograd and a plain `where` over `a / 0` still
    back-propagates `0 * inf = NaN`.

    References:
        N-BEATS `common/torch/ops.py` and Time-Series-Library `utils/losses.py`
        (`divide_no_nan`).
    """
    zero = denominator == 0
    safe = torch.where(zero, torch.ones_like(denominator), denominator)
    result = numerator / safe
    return torch.where(zero | ~torch.isfinite(result), torch.zeros_like(result), result)


def smape_loss(forecast: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Differentiable SMAPE: `200 * mean(mask * |F - A| / (|F| + |A|))`.

    The denominator is detached, so the gradient pushes only on the absolute error. The
    mean is over every element, masked ones included (as N-BEATS/TSL do).

    References:
        Time-Series-Library `utils/losses.py::smape_loss`; Oreshkin et al., N-BEATS.
    """
    denominator = forecast.detach().abs() + target.abs()
    return 200.0 * torch.mean(divide_no_nan((forecast - target).abs(), denominator) * mask)


def mase_loss(
    insample: torch.Tensor,
    seasonality: int,
    forecast: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    insample_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable MASE: `mean(mask * |A - F| / scale)`, scale per series.

    `scale` is the mean `|x_t - x_{t-m}|` over each series' input window (dimension 1);
    a series whose scale is 0 contributes 0. Without `insample_mask` zero padding enters
    the scale as in TSL; with it only pairs of real points count. When the window has no
    more than `m` points the scale uses `m = 1`.

    Args:
        insample: `[B, input_size]` or `[B, input_size, C]` input windows.
        seasonality: the period `m` (TSL calls it `freq`).
        forecast: `[B, horizon]` or `[B, horizon, C]`.
        target: same shape as `forecast`.
        mask: 0/1 weights of the target points, same shape as `forecast`.
        insample_mask: optional 0/1 mask of real input points, same shape as `insample`.

    References:
        Time-Series-Library `utils/losses.py::mase_loss`; Oreshkin et al., N-BEATS.
    """
    if insample.shape[1] < 2:
        raise ValueError("mase_loss needs input windows of at least 2 points")
    m = seasonality if insample.shape[1] > seasonality else 1
    differences = (insample[:, m:] - insample[:, :-m]).abs()  # [B, input_size - m, ...]
    if insample_mask is None:
        scale = differences.mean(dim=1, keepdim=True)  # [B, 1, ...]
    else:
        pairs = insample_mask[:, m:] * insample_mask[:, :-m]
        scale = divide_no_nan(
            (differences * pairs).sum(dim=1, keepdim=True), pairs.sum(dim=1, keepdim=True)
        )
    weights = divide_no_nan(mask, scale)  # scale broadcasts over the horizon
    return torch.mean((target - forecast).abs() * weights)


class SMAPELoss(nn.Module):
    """`smape_loss` as a module: `forward(forecast, target, mask)`."""

    def forward(
        self, forecast: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return smape_loss(forecast, target, mask)


class MASELoss(nn.Module):
    """`mase_loss` as a module: `forward(insample, seasonality, forecast, target, mask)`."""

    def forward(
        self,
        insample: torch.Tensor,
        seasonality: int,
        forecast: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor,
        insample_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return mase_loss(insample, seasonality, forecast, target, mask, insample_mask)
