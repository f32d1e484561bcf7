"""Reading many univariate series: an M4 subset's competition files, or a long table.

`read_m4` parses the M4 competition's ragged CSV files into an `M4Dataset` (each series'
history and its held-out test values); `read_long_format` splits a long table of
`(series, time, value)` rows into one array per series. Both refuse what would silently
change a benchmark (a gap inside a series, a value that is not a finite number, duplicate
ids or times) with a message that names the file, row, series and column.

References:
    Makridakis, Spiliotis, Assimakopoulos, "The M4 Competition: 100,000 time series and 61
    forecasting methods", International Journal of Forecasting 36(1), 2020.
    Time-Series-Library (thuml) `data_loader.Dataset_M4`.
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

import numpy as np
import pandas as pd

from llata_core.catalog import M4_SUBSETS, MIRROR_ENV, m4_subset
from llata_core.errors import DataError
from llata_core.tables import read_maybe_gzip

log = logging.getLogger(__name__)


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


M4_EPOCH = "2000-01-01"
"""Where `m4_long_frame` starts every series' timestamps: M4 gives no dates."""


def select_series(
    dataset: M4Dataset, *, ids: Sequence[str] | None = None, count: int | None = None
) -> M4Dataset:
    """Some series of an M4 subset: the named `ids` or the first `count`, in file order.

    Raises:
        DataError: both or neither given, an id the subset does not hold, or a count
            outside 1..len(dataset).
    """
    if (ids is None) == (count is None):
        raise DataError("select M4 series by ids or by count (exactly one of them)")
    if ids is not None:
        unknown = sorted(set(ids) - set(dataset.ids))
        if unknown:
            raise DataError(
                f"M4 {dataset.frequency_name} has no series {unknown[:5]}"
                f"{' ...' if len(unknown) > 5 else ''} ({len(dataset)} series, "
                f"{dataset.ids[0]}..{dataset.ids[-1]})"
            )
        wanted = set(ids)
        keep = [i for i, sid in enumerate(dataset.ids) if sid in wanted]
    else:
        assert count is not None
        if not 1 <= count <= len(dataset):
            raise DataError(
                f"cannot take {count} series of M4 {dataset.frequency_name}: it holds "
                f"{len(dataset)}"
            )
        keep = list(range(count))
    return M4Dataset(
        ids=tuple(dataset.ids[i] for i in keep),
        train=tuple(dataset.train[i] for i in keep),
        test=tuple(dataset.test[i] for i in keep),
        horizon=dataset.horizon,
        seasonality=dataset.seasonality,
        frequency_name=dataset.frequency_name,
    )


def m4_long_frame(
    dataset: M4Dataset,
    series_column: str = "series_id",
    time_column: str = "date",
    value_column: str = "value",
) -> pd.DataFrame:
    """An M4 subset as one long table: each series' history, then its test values.

    The inverse of `read_long_format`, and read back as a long-format dataset
    (`load_short_term_splits` with `series_column`, the same horizon) it gives the same
    series, the same validation horizon and the same test targets as the competition
    files. M4 publishes no dates, so every series is stamped from `M4_EPOCH` at the
    subset's frequency (`M4Subset.freq`); the stamps order the steps, nothing more.

    Returns:
        Columns `series_column, time_column, value_column`, series in file order.
    """
    freq = m4_subset(dataset.frequency_name).freq
    parts = []
    for sid, train, test in zip(dataset.ids, dataset.train, dataset.test, strict=True):
        values = np.concatenate([train, test])
        stamps = pd.date_range(M4_EPOCH, periods=len(values), freq=freq)
        parts.append(pd.DataFrame({series_column: sid, time_column: stamps, value_column: values}))
    return pd.concat(parts, ignore_index=True)
