"""Reading data files: the one reader, its byte-level helpers and its cell rules.

Every data file of the project is read by `read_table`: the training path
(`llata_core.data.load_series`), the pipeline's raw frame (`features.frame.load_frame`),
long-format short-term files and `llata validate PATH`. What makes a file unreadable
(structure: rows that do not fit the header, bad bytes) is refused here, at read time;
what makes readable data unfit (NaN, text in a channel, infinite values, a dead channel)
is measured by one policy (`llata_core.policy`) that validation and training share. The
cell rules both sides use (`is_numeric_channel`, `non_numeric_cells`, `parse_timestamps`)
live here, next to the reader whose output they judge. Errors name the file line and
column.
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
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from llata_core.errors import DataError

log = logging.getLogger(__name__)


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
    `llata_core.policy.prepare_frame` does.

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
    frame, _ = read_table_with_bytes(
        path, timestamp_column, text_columns=text_columns, require_timestamp=require_timestamp
    )
    return frame


def read_table_with_bytes(
    path: Path,
    timestamp_column: str,
    *,
    text_columns: Collection[str] = (),
    require_timestamp: bool = True,
) -> tuple[pd.DataFrame, bytes]:
    """`read_table`'s frame and the bytes it was read from (uncompressed), for lineage.

    The data's hash must be of the bytes the frame came from, so the loaders that record
    one read through here rather than opening the file a second time.
    """
    path = Path(path)
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
    if require_timestamp and timestamp_column not in frame.columns:
        raise DataError(
            f"{path}: no timestamp column {timestamp_column!r} (columns: {list(frame.columns)})"
        )
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
