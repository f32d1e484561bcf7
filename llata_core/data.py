"""Data: benchmark sources, the one reader and data policy, the standard long-term splits,
scaling and sliding windows.

Every data file is read by `read_table`, which refuses a file whose rows do not fit its
header, and every frame that trains follows one policy (`_prepare_frame`): timestamps parse,
channel cells are finite numbers, and a small share of NaN is filled by `fill_gaps`, the
rule the validation suite measures against. Errors name the file line and column.

The split borders follow the long-term forecasting literature (Informer, Time-Series-Library):
ETT hourly is 12/4/4 months, ETT 15-minute the same times four, other files 70/10/20, and
the validation and test splits start `input_size` rows early so that their first window's
history lies before the split. The scaler is fitted on the training rows only.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import hashlib
import io
import itertools
import logging
import math
import os
import urllib.error
import urllib.request
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pandas.api import types as ptypes
from torch.utils.data import Dataset

from llata_core.atomic import atomic_write_bytes
from llata_core.config import DataConfig

log = logging.getLogger(__name__)

MIRROR_ENV = "LLATA_DATA_MIRROR"
CACHE_ENV = "LLATA_HOME"

Split = Literal["train", "val", "test"]
SourceKind = Literal["file", "mirror", "cache", "bundled", "url", "synthetic"]


class DataError(ValueError):
    """Input data that cannot be used: missing, malformed, too short or not finite."""


@dataclass(frozen=True)
class Benchmark:
    """A public benchmark file: where it lives and what its bytes must hash to."""

    filename: str
    url: str
    sha256: str  # of the uncompressed CSV
    split: Literal["ett_hour", "ett_minute", "ratio"]
    freq: str
    bundled: bool = False  # shipped gzipped in llata_core/datasets/


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
BENCHMARKS: dict[str, Benchmark] = {
    "ETTh1": Benchmark(
        "ETTh1.csv",
        _ETT + "ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        "ett_hour",
        "h",
        bundled=True,
    ),
    "ETTh2": Benchmark(
        "ETTh2.csv",
        _ETT + "ETTh2.csv",
        "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
        "ett_hour",
        "h",
    ),
    "ETTm1": Benchmark(
        "ETTm1.csv",
        _ETT + "ETTm1.csv",
        "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
        "ett_minute",
        "15min",
    ),
}


@dataclass(frozen=True)
class SeriesFrame:
    """A wide frame of one multivariate series and where it came from.

    Attributes:
        frame: timestamp column plus numeric channel columns, in time order.
        timestamp_column: name of the timestamp column.
        channels: the channel columns, in model order.
        source: how the data was obtained; `synthetic` means no real data was reachable.
        origin: the path or URL it was read from (or the generator's name).
        sha256: hash of the raw bytes read (uncompressed), for lineage.
        split: the split rule that applies to it.
        filled_values: NaN cells `fill_gaps` filled on loading, for lineage.
    """

    frame: pd.DataFrame
    timestamp_column: str
    channels: tuple[str, ...]
    source: SourceKind
    origin: str
    sha256: str
    split: Literal["ett_hour", "ett_minute", "ratio"]
    filled_values: int = 0

    @property
    def values(self) -> np.ndarray:
        """Channel values as float32 `[T, M]`."""
        return self.frame.loc[:, list(self.channels)].to_numpy(dtype=np.float32)

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.frame[self.timestamp_column])


def llata_home() -> Path:
    """Root of LLaTA's local caches (`$LLATA_HOME`, default `~/.cache/llata`)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "llata"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed (model weights and data files can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_maybe_gzip(path: Path) -> bytes:
    """A file's bytes, gunzipped when they start with the gzip magic bytes (the one sniff
    for every data file: benchmark copies, user files, M4 subsets).

    Raises:
        OSError, EOFError: unreadable, or a truncated or corrupt gzip stream.
    """
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


FetchSource = Literal["mirror", "cache", "bundled", "url"]
# Offline sources first; the network only when none of them holds verified bytes.
FETCH_ORDER: tuple[FetchSource, ...] = ("mirror", "cache", "bundled", "url")


def bundled_path(name: str) -> Path | None:
    """The copy of a benchmark shipped inside the package (ETTh1 only), if there is one.

    The embedded default (the scikit-learn bundled-dataset convention) lets the main job run
    on real data on a machine with no network and no mirror; its source and licence are in
    `llata_core/datasets/README.md`.
    """
    bench = BENCHMARKS.get(name)
    if bench is None or not bench.bundled:
        return None
    path = Path(__file__).resolve().parent / "datasets" / (bench.filename + ".gz")
    return path if path.is_file() else None


def fetch_benchmark_bytes(
    name: str,
    *,
    order: tuple[FetchSource, ...] = FETCH_ORDER,
    timeout: float = 20.0,
    tried: list[str] | None = None,
) -> tuple[bytes, FetchSource, str]:
    """Find a benchmark's verified bytes in the first source of `order` that has them.

    Sources: `mirror` (`$LLATA_DATA_MIRROR`, gzipped or not), `cache` (`$LLATA_HOME/data`),
    `bundled` (the package's embedded copy, ETTh1 only) and `url` (the public location; a
    download is kept in the cache). Every candidate is checked against the published
    SHA-256; a mismatch is skipped with a warning (a corrupt copy must not silently feed
    training).

    Args:
        name: a key of `BENCHMARKS`.
        order: which sources to try, in order (the pipeline tries the URL before the mirror).
        timeout: seconds to wait for the URL.
        tried: when given, one line per source that failed is appended to it.

    Returns:
        The uncompressed CSV bytes, the kind of source and its location.

    Raises:
        DataError: no source had bytes with the right checksum.
    """
    bench = BENCHMARKS[name]
    tried = [] if tried is None else tried
    cached = llata_home() / "data" / bench.filename

    def verified(data: bytes, where: str) -> bool:
        if sha256_bytes(data) == bench.sha256:
            return True
        log.warning("%s has the wrong SHA-256 for %s; ignoring it", where, name)
        tried.append(f"{where} (checksum mismatch)")
        return False

    def from_files(kind: FetchSource, paths: list[Path]) -> tuple[bytes, str] | None:
        for path in paths:
            if not path.is_file():
                continue
            try:
                data = read_maybe_gzip(path)
            except (OSError, EOFError) as err:
                tried.append(f"{path} (unreadable: {err})")
                continue
            if verified(data, str(path)):
                return data, str(path)
        return None

    for kind in order:
        found: tuple[bytes, str] | None = None
        if kind == "mirror":
            mirror = os.environ.get(MIRROR_ENV)
            if not mirror:
                tried.append(f"mirror (${MIRROR_ENV} not set)")
                continue
            found = from_files(
                kind, [Path(mirror) / (bench.filename + ".gz"), Path(mirror) / bench.filename]
            )
            if found is None:
                tried.append(f"mirror {mirror} (no verified {bench.filename})")
        elif kind == "cache":
            found = from_files(kind, [cached])
        elif kind == "bundled":
            bundled = bundled_path(name)
            found = from_files(kind, [bundled]) if bundled is not None else None
        else:
            try:
                with urllib.request.urlopen(bench.url, timeout=timeout) as resp:  # noqa: S310
                    data = resp.read()
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                tried.append(f"{bench.url} ({err})")
            else:
                if verified(data, bench.url):
                    atomic_write_bytes(cached, data)
                    found = data, bench.url
        if found is not None:
            return found[0], kind, found[1]
    raise DataError(f"benchmark {name} not available; tried: " + "; ".join(tried or ["nothing"]))


def synthetic_frame(
    n_rows: int = 17420, n_channels: int = 7, *, seed: int = 0, freq: str = "h"
) -> pd.DataFrame:
    """A deterministic multi-seasonal series shaped like ETTh1 (daily + weekly cycles, trend,
    AR(1) noise, cross-channel coupling). Used only when no real data can be reached, and
    always labelled `synthetic` so nobody mistakes its metrics for a benchmark's."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)
    steps_per_day = {"h": 24, "15min": 96}.get(freq, 24)
    base = np.stack(
        [
            np.sin(2 * np.pi * t / steps_per_day + rng.uniform(0, 2 * np.pi))
            + 0.5 * np.sin(2 * np.pi * t / (7 * steps_per_day) + rng.uniform(0, 2 * np.pi))
            + 0.3 * np.sin(2 * np.pi * t / (steps_per_day / 2) + rng.uniform(0, 2 * np.pi))
            for _ in range(n_channels)
        ],
        axis=1,
    )
    noise = np.zeros_like(base)
    eps = rng.normal(0, 0.2, size=base.shape)
    for i in range(1, n_rows):
        noise[i] = 0.7 * noise[i - 1] + eps[i]
    mix = np.eye(n_channels) + 0.2 * rng.normal(size=(n_channels, n_channels))
    trend = (t / n_rows)[:, None] * rng.uniform(-1, 1, size=n_channels)
    values = (base + noise) @ mix + trend + rng.uniform(0, 10, size=n_channels)
    frame = pd.DataFrame(values.astype(np.float32), columns=[f"ch{i}" for i in range(n_channels)])
    frame.insert(0, "date", pd.date_range("2016-07-01", periods=n_rows, freq=freq))
    return frame


# --------------------------------------------------------------------------- the one reader
#
# Every data file of the project is read here: the training path (`load_series`), the
# pipeline's raw frame (`features.frame.load_frame`) and `llata validate PATH`. What makes a
# file unreadable (structure) is refused at read time; what makes readable data unfit (NaN,
# text in a channel, infinite values, a dead channel) is measured by one policy below that
# validation and training share.

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
SOURCE_ATTR = "llata_source"
"""Key of `DataFrame.attrs` under which `read_table` leaves the rows' `SourceRows`."""
MAX_SHOWN = 5
"""Most cells or lines one error message names; the rest are counted."""


class DataLoadError(DataError):
    """A data file exists but is not a table: unsupported type, corrupt or non-UTF-8 bytes,
    a header naming a column twice, or rows with fewer or more fields than the header."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """The data file does not exist: a `DataError` to training, a `FileNotFoundError` to the
    pipeline's commands."""


@dataclass(frozen=True)
class SourceRows:
    """Where the rows of a frame `read_table` returned sit in their CSV file.

    The reader labels rows 0..n-1. Row `label` is on line `line + label - row` of the last
    break `(row, line)` at or before it: one break at the first row and one more wherever a
    blank line or a quoted field spanning lines shifts the rows after it. Kept in
    `DataFrame.attrs` because the frame travels through code that only passes DataFrames
    (the pipeline's stages), and consulted only while the frame still has the reader's
    index (`source_lines`): a filtered or re-sorted copy gets no line rather than a wrong
    one. Code that reorders rows and then renumbers them drops the attribute first, as
    `_prepare_frame` does.

    Attributes:
        path: The file.
        rows: Rows the reader returned.
        breaks: `(row label, line number)` pairs, sorted by row.
    """

    path: str
    rows: int
    breaks: tuple[tuple[int, int], ...]

    def line(self, label: object) -> int | None:
        """The file line of the row labelled `label`, or None if it is not such a row."""
        if not isinstance(label, int | np.integer) or not 0 <= int(label) < self.rows:
            return None
        row, line = self.breaks[bisect.bisect_right(self.breaks, (int(label), math.inf)) - 1]
        return line + int(label) - row


def source_lines(frame: pd.DataFrame) -> SourceRows | None:
    """The `SourceRows` of a frame exactly as `read_table` returned it from a CSV, else None."""
    source = frame.attrs.get(SOURCE_ATTR)
    if not isinstance(source, SourceRows):
        return None
    index = frame.index
    unchanged = isinstance(index, pd.RangeIndex) and index.equals(pd.RangeIndex(source.rows))
    return source if unchanged else None


def row_location(source: SourceRows | None, label: object) -> str:
    """Where a row is, for a person: `line N` of its CSV file when known, else `row <label>`."""
    line = source.line(label) if source is not None else None
    return f"line {line}" if line is not None else f"row {label!r}"


def read_table(
    path: Path,
    timestamp_column: str,
    *,
    text_columns: Collection[str] = (),
    require_timestamp: bool = True,
) -> pd.DataFrame:
    """Read a wide CSV (gzipped or not) or parquet file: the project's one reader.

    A CSV is checked record by record before pandas sees it: a row with fewer fields than
    the header (pandas would fill NaN) or more (pandas would fail, or shift the columns),
    and a header naming a column twice (pandas would rename one `a.1`), are refused with
    their line numbers. The timestamp column and `text_columns` stay text: parsing them is
    the validation's job, so a bad value is reported with its row. Any other column in
    which most cells are numbers is read as numbers, cell by cell, and a cell that is not
    one keeps its text (`"abc"`) instead of turning the whole column into text: the checks
    downstream then name exactly the bad cells (`non_numeric_cells`). A column with fewer
    numbers than text stays text; it is not a channel. A CSV frame carries its rows' line
    numbers in `frame.attrs[SOURCE_ATTR]`.

    Args:
        path: `.csv`, `.csv.gz`, `.parquet` or `.pq` (compression is recognised by content).
        timestamp_column: The timestamp column.
        text_columns: Further columns kept as text (a series-id column).
        require_timestamp: Refuse a file without the timestamp column. The validation
            passes False and reports the missing column in its suite instead.

    Returns:
        The frame, rows labelled 0..n-1 in file order.

    Raises:
        DataFileNotFoundError: `path` does not exist.
        DataLoadError: Unsupported type, unreadable bytes, or rows that do not fit the
            header (the message names the lines).
        DataError: The timestamp column is missing (with `require_timestamp`).
    """
    path = Path(path)
    frame, _ = _read_table(path, timestamp_column, text_columns)
    if require_timestamp and timestamp_column not in frame.columns:
        raise DataError(
            f"{path}: no timestamp column {timestamp_column!r} (columns: {list(frame.columns)})"
        )
    return frame


def _read_table(
    path: Path, timestamp_column: str, text_columns: Collection[str] = ()
) -> tuple[pd.DataFrame, bytes]:
    """`read_table`'s frame and the bytes it was read from (uncompressed), for lineage."""
    if not path.is_file():
        raise DataFileNotFoundError(f"data file not found: {path}")
    name = path.name.lower()
    if not name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise DataLoadError(
            f"cannot read {path}: unsupported file type (expected one of "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})"
        )
    try:
        if name.endswith(PARQUET_SUFFIXES):
            raw = path.read_bytes()
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            raw = read_maybe_gzip(path)
            frame = read_csv_bytes(raw, str(path), text_columns=(timestamp_column, *text_columns))
    except DataError:
        raise
    # pandas and pyarrow signal corrupt input as ValueError (ParserError, ArrowInvalid),
    # OSError (bad gzip, unreadable file) or EOFError (truncated gzip).
    except (ValueError, OSError, EOFError) as err:
        raise DataLoadError(f"cannot read {path}: {err}") from err
    log.info("loaded %s: %d rows x %d columns", path, len(frame), frame.shape[1])
    return frame, raw


def read_csv_bytes(raw: bytes, origin: str, *, text_columns: Collection[str] = ()) -> pd.DataFrame:
    """Parse the bytes of a CSV file the way `read_table` does (see there).

    Args:
        raw: The uncompressed bytes.
        origin: The file or URL, for messages.
        text_columns: Columns kept as text (the timestamp column, a series id).

    Returns:
        The frame, rows labelled 0..n-1, `attrs[SOURCE_ATTR]` holding their lines.

    Raises:
        DataLoadError: The bytes are not UTF-8, the header repeats a name, or rows do not
            have the header's number of fields.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataLoadError(
            f"cannot read {origin}: line {line} is not UTF-8 text ({err.reason} at byte "
            f"{err.start})"
        ) from err
    header, source = _csv_structure(text, origin)
    keep = {column: str for column in text_columns if column in header}
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=keep)  # type: ignore[arg-type]
    except ValueError as err:  # the structure check passed, so this is unexpected
        raise DataLoadError(f"cannot read {origin}: {err}") from err
    if len(frame) != source.rows:
        raise DataLoadError(
            f"cannot read {origin}: {source.rows} records, but pandas read {len(frame)} rows"
        )
    for column in frame.columns:
        if column not in keep and frame[column].dtype == object:
            frame[column] = _numbers_where_possible(frame[column])
    frame.attrs[SOURCE_ATTR] = source
    return frame


def _csv_structure(text: str, origin: str) -> tuple[list[str], SourceRows]:
    """The header and the rows' lines of a CSV; refuses rows that do not fit the header.

    The `csv` module tokenises like pandas' default dialect (comma, double quotes) and skips
    the same blank lines, so its records are pandas' rows.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    header_line = 0
    breaks: list[tuple[int, int]] = []
    ragged: list[tuple[int, int]] = []
    rows, end, expected = 0, 0, -1
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if header is None:
                header, header_line = record, start
                continue
            if len(record) != len(header):
                ragged.append((start, len(record)))
            if start != expected:
                breaks.append((rows, start))
            rows, expected = rows + 1, end + 1
    except csv.Error as err:
        raise DataLoadError(f"cannot read {origin}: line {reader.line_num}: {err}") from err
    if header is None:
        raise DataLoadError(f"cannot read {origin}: the file is empty (no header line)")
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if name in seen:
            raise DataLoadError(
                f"{origin}: the header (line {header_line}) names column {name!r} twice "
                f"(fields {seen[name]} and {position})"
            )
        seen[name] = position
    if ragged:
        shown = ", ".join(f"line {line} has {fields}" for line, fields in ragged[:MAX_SHOWN]) + (
            f" and {len(ragged) - MAX_SHOWN} more" if len(ragged) > MAX_SHOWN else ""
        )
        raise DataLoadError(
            f"{origin}: {len(ragged)} row(s) do not have the header's {len(header)} fields "
            f"({shown}); a row with missing or extra fields cannot be put in its columns"
        )
    return header, SourceRows(origin, rows, tuple(breaks))


def _numbers_where_possible(values: pd.Series) -> pd.Series:
    """A text column as numbers cell by cell, when most of its cells are numbers.

    The cells that are not numbers keep their text, so a channel with one bad cell stays a
    channel with one bad cell. A column of booleans or of mostly text is returned as it is.
    """
    present = values.notna()
    if not values[present].map(lambda v: isinstance(v, str)).all():
        return values  # booleans with gaps: flags, not measurements
    numbers = pd.to_numeric(values, errors="coerce")
    bad = present & numbers.isna()
    if int((present & numbers.notna()).sum()) <= int(bad.sum()):
        return values
    return numbers.astype(object).where(~bad, values)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)


def is_numeric_channel(values: pd.Series) -> bool:
    """Whether a column holds measurements: a numeric, non-boolean dtype, or an object column
    whose cells are mostly numbers (a channel with a few bad cells, which must be reported
    where they are, not dropped as a text column)."""
    if ptypes.is_bool_dtype(values):
        return False  # booleans are flags, not measurements
    if ptypes.is_numeric_dtype(values):
        return True
    if values.dtype != object:
        return False
    present = values.dropna()
    numbers = int(present.map(_is_number).sum())
    return numbers > len(present) - numbers


def non_numeric_cells(frame: pd.DataFrame, column: str) -> pd.Series:
    """The cells of `column` that are neither numbers nor missing, by row label."""
    values = frame[column]
    if ptypes.is_bool_dtype(values) or not (
        ptypes.is_numeric_dtype(values) or values.dtype == object
    ):
        return values[values.notna()]  # booleans, datetimes, text dtype: every present cell
    if values.dtype != object:
        return values.iloc[:0]
    return values[values.notna() & ~values.map(_is_number)]


def describe_cells(
    cells: Iterable[tuple[object, str, object]], source: SourceRows | None, total: int
) -> str:
    """`line 12, column 'OT': 'abc'; ...` for the first `MAX_SHOWN` cells, then a count.

    Args:
        cells: `(row label, column, value)` triples, in order.
        source: The frame's rows in its file (`source_lines`), if known.
        total: How many cells there are in all.
    """
    parts = [
        f"{row_location(source, label)}, column {column!r}: "
        f"{(value.item() if isinstance(value, np.generic) else value)!r}"
        for label, column, value in itertools.islice(cells, MAX_SHOWN)
    ]
    more = f" and {total - MAX_SHOWN} more" if total > MAX_SHOWN else ""
    return "; ".join(parts) + more


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse a timestamp column the way the whole project does; NaT marks failures.

    Strings are parsed with the format pandas infers from the first value, so a column
    that mixes formats fails on the odd rows instead of being silently reinterpreted.
    Numbers are not accepted as timestamps: without a unit (s, ms, ns since the epoch)
    they are ambiguous, and guessing wrong shifts the data by decades.

    Args:
        values: The raw timestamp column.

    Returns:
        A datetime64 series aligned with `values`, NaT where a value is missing or
        cannot be parsed. Mixed UTC offsets are converted to UTC.
    """
    if ptypes.is_datetime64_any_dtype(values):
        return values
    if ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]", name=values.name)
    parsed = pd.to_datetime(values, errors="coerce")
    if not ptypes.is_datetime64_any_dtype(parsed):
        # Strings with different UTC offsets come back as objects; put them on one clock.
        parsed = pd.to_datetime(values, errors="coerce", utc=True)
    return parsed


# --------------------------------------------------------------------------- the data policy

MAX_NAN_FRACTION = 0.01
"""Default largest share of NaN a channel may hold (`pipeline.validation.max_nan_fraction`)."""
GAP_FILL = "forward fill, then backward fill"
"""How the NaN a channel may hold is filled, as recorded in lineage."""
CONSTANT_TOLERANCE = 1e-6
"""A channel is near-constant when its standard deviation is at most this times its mean
magnitude (and at least this, absolutely): below float32's resolution of the values."""


def constant_threshold(values: pd.Series) -> float:
    """The standard deviation at or below which a numeric channel counts as (near-)constant.

    A dead sensor repeats one value, or one value plus rounding noise; either way the
    channel carries no signal, and the scaler would divide its noise by ~0. The threshold
    scales with the values' magnitude so that a channel around 10,000 and one around 0.01
    are judged alike.
    """
    magnitude = float(np.nanmean(np.abs(values.to_numpy(dtype=np.float64)))) if len(values) else 0.0
    return CONSTANT_TOLERANCE * max(1.0, magnitude if math.isfinite(magnitude) else 1.0)


def fill_gaps(
    frame: pd.DataFrame,
    channels: Sequence[str],
    *,
    origin: str,
    max_nan_fraction: float = MAX_NAN_FRACTION,
) -> tuple[pd.DataFrame, int]:
    """The project's one NaN rule: a little is filled (forward, then backward), more refused.

    Validation and training apply the same rule. The validation suite lets a channel hold
    at most `max_nan_fraction` NaN (`pipeline.validation.max_nan_fraction`, default 1%);
    whatever passes is filled here, by the features stage before it writes the training
    frame and by training when it reads a file itself, and the count is recorded in
    lineage (`filled_values`). A channel over the share is refused with the lines of its
    first gaps, whoever reads it.

    Why impute rather than refuse all NaN: real sensor data has isolated dropouts, and
    refusing a year of data for one missing hour helps nobody; why a bounded share: beyond
    a few gaps the filled values are no longer data. Why forward fill: it is causal, the
    value a forecaster at that time had last seen, so no window's history borrows from its
    future (interpolation would); it is also what the feature store's as-of join answers
    for a missing observation. Backward fill only covers a gap at the very start, where no
    earlier value exists. The frame must be one series in time order (training data is).
    Structural damage never gets here: `read_table` refuses short rows instead of reading
    their missing fields as NaN.

    Args:
        frame: One series, in time order.
        channels: The channel columns (numeric).
        origin: The file or source, for messages.
        max_nan_fraction: Largest share of NaN allowed in any channel.

    Returns:
        A copy with the gaps filled, and how many cells were filled.

    Raises:
        DataError: A channel holds more than `max_nan_fraction` NaN.
    """
    columns = list(channels)
    gaps = frame[columns].isna()
    counts = gaps.sum()
    rows = len(frame)
    limit = max_nan_fraction * rows
    over = [c for c in columns if counts[c] > limit]
    if over:
        source = source_lines(frame)
        details = []
        for column in over:
            labels = frame.index[gaps[column].to_numpy()]
            where = ", ".join(row_location(source, label) for label in labels[:MAX_SHOWN])
            details.append(
                f"{column!r} {int(counts[column])} of {rows} ({counts[column] / rows:.2%}; "
                f"first at {where})"
            )
        raise DataError(
            f"{origin}: channel(s) with more NaN than the {max_nan_fraction:.2%} that may be "
            f"filled: {'; '.join(details)}"
        )
    filled = int(counts.sum())
    out = frame.copy()
    if filled:
        log.warning("%s: filling %d NaN value(s) (%s)", origin, filled, GAP_FILL)
        out[columns] = out[columns].ffill().bfill()
    return out, filled


def _prepare_frame(
    frame: pd.DataFrame,
    timestamp_column: str,
    channels: tuple[str, ...] | None,
    origin: str,
    *,
    sort: bool = False,
) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Apply the data policy to a wide frame for training: timestamp plus numeric channels.

    Timestamps must parse (`parse_timestamps`), channel cells must be numbers and finite,
    and NaN follows `fill_gaps`. Every refusal names the rows (file lines when the frame
    came from `read_table`) and columns. Columns that are not channels are dropped, and
    logged. `sort` orders the rows by time before gaps are filled.

    Returns:
        The frame (timestamp column and channels), the channels, the NaN cells filled.
    """
    source = source_lines(frame)
    if timestamp_column not in frame.columns:
        raise DataError(
            f"{origin}: no timestamp column {timestamp_column!r} (columns: {list(frame.columns)})"
        )
    timestamps = parse_timestamps(frame[timestamp_column])
    bad_times = frame[timestamp_column][timestamps.isna()]
    if len(bad_times):
        cells = ((label, timestamp_column, value) for label, value in bad_times.items())
        raise DataError(
            f"{origin}: {len(bad_times)} value(s) are missing or not timestamps: "
            + describe_cells(cells, source, len(bad_times))
        )
    if channels is None:
        channels = tuple(
            c for c in frame.columns if c != timestamp_column and is_numeric_channel(frame[c])
        )
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing channel columns {missing}")
    if not channels:
        raise DataError(f"{origin}: no numeric channel columns")
    ignored = [c for c in frame.columns if c != timestamp_column and c not in channels]
    if ignored:
        log.warning("%s: ignoring columns that are not channels: %s", origin, ignored)
    bad = {c: non_numeric_cells(frame, c) for c in channels}
    total = sum(len(cells) for cells in bad.values())
    if total:
        cells = ((label, c, v) for c in channels for label, v in bad[c].items())
        raise DataError(
            f"{origin}: {total} channel cell(s) are not numbers: "
            + describe_cells(cells, source, total)
        )
    out = frame.loc[:, [timestamp_column, *channels]].copy()
    out[timestamp_column] = timestamps
    for c in channels:
        if out[c].dtype == object:
            out[c] = out[c].astype(np.float64)
    infinite = np.isinf(out[list(channels)].to_numpy(dtype=np.float64))
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        cells = (
            (out.index[r], channels[c], out.iat[r, c + 1]) for r, c in zip(rows, cols, strict=True)
        )
        raise DataError(
            f"{origin}: {len(rows)} infinite value(s) in the channels: "
            + describe_cells(cells, source, len(rows))
        )
    if sort:
        out.attrs.pop(SOURCE_ATTR, None)  # the rows move: their file lines no longer apply
        out = out.sort_values(timestamp_column, kind="stable").reset_index(drop=True)
    out, filled = fill_gaps(out, channels, origin=origin)
    out.attrs.pop(SOURCE_ATTR, None)
    return out, tuple(channels), filled


def load_series(cfg: DataConfig, *, allow_synthetic: bool = False) -> SeriesFrame:
    """Load the series that `cfg.dataset` names.

    A path is read as a file (`read_table`). A benchmark name is looked up in the mirror directory
    (`$LLATA_DATA_MIRROR`), the local cache and its public URL, each checksum-verified.
    `synthetic` (or any benchmark when nothing is reachable and `allow_synthetic`) gives the
    generated series, with a loud warning. Every series follows the data policy
    (`_prepare_frame`); NaN within `MAX_NAN_FRACTION` of a channel is filled (`fill_gaps`).

    Raises:
        DataError: the file is missing or malformed, or breaks the data policy, or the
            benchmark is unreachable and synthetic data was not allowed.
    """
    name = cfg.dataset
    if name in BENCHMARKS:
        bench = BENCHMARKS[name]
        try:
            data, kind, origin = fetch_benchmark_bytes(name)
        except DataError:
            if not allow_synthetic:
                raise
            log.warning(
                "!!! %s is not reachable (no mirror, cache or network): training on SYNTHETIC "
                "data. Metrics will not be comparable to any benchmark. !!!",
                name,
            )
            return _synthetic(cfg, freq=bench.freq, split=bench.split)
        frame = read_csv_bytes(data, origin, text_columns=("date",))
        frame, channels, filled = _prepare_frame(frame, "date", cfg.channels, origin)
        split = bench.split if cfg.split == "auto" else cfg.split
        return SeriesFrame(frame, "date", channels, kind, origin, bench.sha256, split, filled)
    if name == "synthetic":
        return _synthetic(cfg, freq="h", split="ett_hour")
    path = Path(name)
    frame, raw = _read_table(path, cfg.timestamp_column)
    frame, channels, filled = _prepare_frame(frame, cfg.timestamp_column, cfg.channels, str(path))
    split = "ratio" if cfg.split == "auto" else cfg.split
    digest = sha256_bytes(raw)
    return SeriesFrame(
        frame, cfg.timestamp_column, channels, "file", str(path), digest, split, filled
    )


def series_from_frame(
    frame: pd.DataFrame,
    cfg: DataConfig,
    *,
    origin: str,
    source: SourceKind = "file",
    sha256: str | None = None,
) -> SeriesFrame:
    """Wrap an in-memory wide frame (e.g. what the feature store returned) as a series.

    The frame follows the same data policy as a file (`_prepare_frame`), sorted by time
    before gaps are filled; `cfg.split` picks the split rule (`auto` means 70/10/20 for a
    frame).
    """
    frame, channels, filled = _prepare_frame(
        frame, cfg.timestamp_column, cfg.channels, origin, sort=True
    )
    digest = sha256 or sha256_bytes(frame.to_csv(index=False).encode())
    split = "ratio" if cfg.split == "auto" else cfg.split
    return SeriesFrame(frame, cfg.timestamp_column, channels, source, origin, digest, split, filled)


def _synthetic(
    cfg: DataConfig, *, freq: str, split: Literal["ett_hour", "ett_minute", "ratio"]
) -> SeriesFrame:
    n_rows = 17420 if split != "ett_minute" else 69680
    frame = synthetic_frame(n_rows, freq=freq)
    frame, channels, _ = _prepare_frame(frame, "date", cfg.channels, "synthetic")
    digest = sha256_bytes(frame.to_csv(index=False).encode())
    return SeriesFrame(
        frame, "date", channels, "synthetic", "synthetic_frame(seed=0)", digest, split
    )


def split_borders(
    n_rows: int, input_size: int, rule: Literal["ett_hour", "ett_minute", "ratio"]
) -> dict[Split, tuple[int, int]]:
    """Row borders `[start, end)` of each split, validation and test starting `input_size` early.

    References:
        Zhou et al., Informer (AAAI 2021) data loaders; Time-Series-Library `data_loader.py`.
    """
    if rule in ("ett_hour", "ett_minute"):
        per_month = 30 * 24 * (4 if rule == "ett_minute" else 1)
        train_end, val_end, test_end = 12 * per_month, 16 * per_month, 20 * per_month
        if n_rows < test_end:
            raise DataError(f"{rule} split needs {test_end} rows, the data has {n_rows}")
    else:
        train_end = int(n_rows * 0.7)
        test_len = int(n_rows * 0.2)
        val_end = n_rows - test_len
        test_end = n_rows
    return {
        "train": (0, train_end),
        "val": (train_end - input_size, val_end),
        "test": (val_end - input_size, test_end),
    }


@dataclass(frozen=True)
class Scaler:
    """Per-channel standardisation fitted on the training rows; travels with the model."""

    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray, channels: tuple[str, ...]) -> Scaler:
        mean = values.mean(axis=0).astype(np.float64)
        std = values.std(axis=0).astype(np.float64)
        std = np.where(std < 1e-8, 1.0, std)  # a constant channel would divide by zero
        return cls(tuple(channels), mean, std)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return (values * self.std + self.mean).astype(np.float64)

    def to_dict(self) -> dict[str, list[float] | list[str]]:
        return {
            "channels": list(self.channels),
            "mean": [float(x) for x in self.mean],
            "std": [float(x) for x in self.std],
        }

    @classmethod
    def from_dict(cls, raw: dict) -> Scaler:
        try:
            channels = tuple(str(c) for c in raw["channels"])
            mean = np.asarray(raw["mean"], dtype=np.float64)
            std = np.asarray(raw["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"malformed scaler: {err}") from err
        if not (len(channels) == mean.shape[0] == std.shape[0]) or (std <= 0).any():
            raise DataError("malformed scaler: channels, mean and std disagree or std <= 0")
        return cls(channels, mean, std)


class WindowDataset(Dataset):
    """Sliding windows over one scaled series: item `i` is (`x [L, M]`, `y [H, M]`)."""

    def __init__(self, values: np.ndarray, input_size: int, horizon: int, limit: int | None = None):
        if values.ndim != 2:
            raise DataError(f"expected a [T, M] array, got shape {values.shape}")
        n = values.shape[0] - input_size - horizon + 1
        if n <= 0:
            raise DataError(
                f"{values.shape[0]} rows cannot hold one window of input_size {input_size} "
                f"+ horizon {horizon}"
            )
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.input_size = input_size
        self.horizon = horizon
        self.n = n if limit is None else max(1, min(n, limit))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = self.values[i : i + self.input_size + self.horizon]
        return s[: self.input_size], s[self.input_size :]


@dataclass(frozen=True)
class Splits:
    """The three window datasets of one series plus the scaler fitted on its training rows."""

    train: WindowDataset
    val: WindowDataset
    test: WindowDataset
    scaler: Scaler
    series: SeriesFrame
    borders: dict[Split, tuple[int, int]]

    def fingerprint(self) -> str:
        """Identifies the evaluation data: source bytes, split borders and window shape."""
        shape = f"{self.test.input_size}|{self.test.horizon}"
        key = f"{self.series.sha256}|{sorted(self.borders.items())}|{shape}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def make_splits(series: SeriesFrame, cfg: DataConfig, *, scaler: Scaler | None = None) -> Splits:
    """Cut a series into train/val/test windows on scaled values.

    Args:
        series: the loaded series.
        cfg: window sizes and the few-shot fraction.
        scaler: reuse a fitted scaler (zero-shot: a model's own scaler); default fits one on
            the training rows of `series`.

    Returns:
        The three window datasets; few-shot keeps the first p% of training windows.
    """
    values = series.values
    borders = split_borders(values.shape[0], cfg.input_size, series.split)
    if scaler is None:
        t0, t1 = borders["train"]
        scaler = Scaler.fit(values[t0:t1], series.channels)
    scaled = scaler.transform(values)

    def window(split: Split, limit: int | None = None) -> WindowDataset:
        a, b = borders[split]
        return WindowDataset(scaled[a:b], cfg.input_size, cfg.horizon, limit)

    train_full = window("train")
    limit = None
    if cfg.few_shot_percent < 100.0:
        limit = int(len(train_full) * cfg.few_shot_percent / 100.0)
        log.info("few-shot: %d of %d training windows", limit, len(train_full))
    return Splits(
        train=window("train", limit),
        val=window("val"),
        test=window("test"),
        scaler=scaler,
        series=series,
        borders=borders,
    )
