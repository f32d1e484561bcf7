"""The forecasting frame: its specification, loading, and the column rules both the
validation suite and the feature store rely on.

Kept free of Great Expectations and Feast so that every consumer (the serving process
included) can share one definition of "channel" and "timestamp" without importing either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pandas.api import types as ptypes
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

logger = logging.getLogger(__name__)

HELPER_PREFIX = "__llata_"
"""Prefix of the derived columns the validation adds; frames may not use it themselves."""

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


class DataLoadError(ValueError):
    """A data file exists but cannot be read as a table."""


@dataclass(frozen=True, kw_only=True)
class FrameSpec:
    """What a forecasting frame must look like before anything trains on it.

    Attributes:
        timestamp_column: Column holding the timestamps (datetimes or date strings).
        channels: Channel columns, in model order. None means every numeric, non-boolean
            column other than the timestamp and series columns, in frame order.
        series_column: Column holding the series id when the frame holds several series.
            None means the whole frame is one series, called `default_series_id`.
        min_rows: Fewest rows a series may have; `input_size + horizon`, since a shorter
            series cannot yield a single training window.
        max_nan_fraction: Largest share of NaN allowed in any channel.
        frequency: Expected pandas offset alias ("h", "15min", "D", "MS", ...). None infers
            it from the data, and the data must still be regular.
        default_series_id: Series id given to a frame without a series column.
    """

    timestamp_column: str = "date"
    channels: tuple[str, ...] | None = None
    series_column: str | None = None
    min_rows: int
    max_nan_fraction: float = 0.01
    frequency: str | None = None
    default_series_id: str = "default"

    def __post_init__(self) -> None:
        if not self.timestamp_column:
            raise ValueError("timestamp_column must name a column")
        if self.series_column is not None and self.series_column == self.timestamp_column:
            raise ValueError("series_column and timestamp_column must differ")
        if self.channels is not None:
            channels = tuple(self.channels)
            object.__setattr__(self, "channels", channels)
            if not channels:
                raise ValueError("channels must name at least one column, or be None")
            if len(set(channels)) != len(channels):
                raise ValueError(f"channels repeat a name: {list(channels)}")
            clash = {self.timestamp_column, self.series_column} & set(channels)
            if clash:
                raise ValueError(f"channels may not include the timestamp/series column {clash}")
        named = [self.timestamp_column, self.series_column, *(self.channels or ())]
        reserved = [name for name in named if name and name.startswith(HELPER_PREFIX)]
        if reserved:
            raise ValueError(f"column names starting with {HELPER_PREFIX!r} are reserved")
        if self.min_rows < 2:
            raise ValueError(f"min_rows (input_size + horizon) must be >= 2, got {self.min_rows}")
        if not 0.0 <= self.max_nan_fraction < 1.0:
            raise ValueError(f"max_nan_fraction must be in [0, 1), got {self.max_nan_fraction}")
        if not self.default_series_id:
            raise ValueError("default_series_id must be a non-empty string")
        # Fail on a bad alias here, at the configuration boundary, not mid-validation.
        _ = self.offset

    @property
    def offset(self) -> BaseOffset | None:
        """The configured frequency as a pandas offset, or None to infer it."""
        if self.frequency is None:
            return None
        try:
            return to_offset(self.frequency)
        except ValueError as exc:
            raise ValueError(f"frequency {self.frequency!r} is not a pandas offset alias") from exc


def channel_candidates(frame: pd.DataFrame, spec: FrameSpec) -> list[str]:
    """Columns that could be channels: everything but the timestamp and series columns."""
    reserved = {spec.timestamp_column, spec.series_column}
    return [column for column in frame.columns if column not in reserved]


def is_numeric_channel(values: pd.Series) -> bool:
    """Whether a column's dtype is numeric; booleans are flags, not measurements."""
    return ptypes.is_numeric_dtype(values) and not ptypes.is_bool_dtype(values)


def resolve_channels(frame: pd.DataFrame, spec: FrameSpec) -> tuple[str, ...]:
    """The channel columns of `frame`, in order.

    With `spec.channels` set those are the channels, whatever the frame holds (the
    validation reports the missing or non-numeric ones). Otherwise every numeric column
    other than the timestamp and series columns is a channel; the others are logged,
    because a channel that pandas read as text (one stray token in a CSV) would
    otherwise vanish silently.

    Args:
        frame: The forecasting frame.
        spec: Its specification.

    Returns:
        Channel column names in model order.
    """
    if spec.channels is not None:
        return spec.channels
    candidates = channel_candidates(frame, spec)
    channels = tuple(c for c in candidates if is_numeric_channel(frame[c]))
    ignored = [c for c in candidates if c not in channels]
    if ignored:
        logger.warning("ignoring non-numeric columns (not channels): %s", ignored)
    return channels


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Parse a timestamp column the way the whole pipeline does; NaT marks failures.

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


def load_frame(path: Path, timestamp_column: str) -> pd.DataFrame:
    """Read a forecasting frame from CSV, gzipped CSV or parquet.

    The timestamp column of a CSV is kept as text: parsing is the validation's job, so an
    unparseable value shows up in its report with the row it came from instead of
    aborting the read.

    Args:
        path: The data file (`.csv`, `.csv.gz`, `.parquet` or `.pq`).
        timestamp_column: Name of the timestamp column.

    Returns:
        The frame as stored.

    Raises:
        FileNotFoundError: `path` does not exist.
        DataLoadError: The suffix is unsupported or the file cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    name = path.name.lower()
    if not name.endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
        raise DataLoadError(
            f"cannot read {path}: unsupported file type (expected one of "
            f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})"
        )
    try:
        if name.endswith(CSV_SUFFIXES):
            frame = pd.read_csv(path, dtype={timestamp_column: str})
        else:
            frame = pd.read_parquet(path)
    # pandas and pyarrow signal corrupt input as ValueError (ParserError, ArrowInvalid,
    # UnicodeDecodeError), OSError (bad gzip, unreadable file) or EOFError (truncated gzip).
    except (ValueError, OSError, EOFError) as exc:
        raise DataLoadError(f"cannot read {path}: {exc}") from exc
    logger.info("loaded %s: %d rows x %d columns", path, len(frame), frame.shape[1])
    return frame
