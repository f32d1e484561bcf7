"""The forecasting frame: its specification, loading, and the column rules both the
validation suite and the feature store rely on.

Kept free of Great Expectations and Feast so that every consumer (the serving process
included) can share one definition of "channel" and "timestamp" without importing either.
The reader and the data policy themselves live in `llata_core.tables` and
`llata_core.policy`, which training uses: this module applies them to the pipeline's
frames, so validation and training cannot drift.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

from llata_core.policy import MAX_NAN_FRACTION
from llata_core.tables import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    DataLoadError,
    is_numeric_channel,
    parse_timestamps,
    read_table,
)

__all__ = [
    "CSV_SUFFIXES",
    "HELPER_PREFIX",
    "PARQUET_SUFFIXES",
    "ConstantChannels",
    "DataLoadError",
    "FrameSpec",
    "channel_candidates",
    "is_numeric_channel",
    "load_frame",
    "parse_timestamps",
    "resolve_channels",
]

logger = logging.getLogger(__name__)

HELPER_PREFIX = "__llata_"
"""Prefix of the derived columns the validation adds; frames may not use it themselves."""

ConstantChannels = Literal["error", "warn"]


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
        max_nan_fraction: Largest share of NaN allowed in any channel; what passes is filled
            by `llata_core.policy.fill_gaps` (forward, then backward) before training.
        constant_channels: `error` refuses a constant or near-constant channel (a dead
            sensor; see `llata_core.policy.constant_threshold`), `warn` reports it as a
            warning and lets the frame pass.
        frequency: Expected pandas offset alias ("h", "15min", "D", "MS", ...). None infers
            it from the data, and the data must still be regular.
        default_series_id: Series id given to a frame without a series column.
    """

    timestamp_column: str = "date"
    channels: tuple[str, ...] | None = None
    series_column: str | None = None
    min_rows: int
    max_nan_fraction: float = MAX_NAN_FRACTION
    constant_channels: ConstantChannels = "error"
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
        if self.constant_channels not in ("error", "warn"):
            raise ValueError(
                f"constant_channels must be 'error' or 'warn', got {self.constant_channels!r}"
            )
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


def resolve_channels(frame: pd.DataFrame, spec: FrameSpec) -> tuple[str, ...]:
    """The channel columns of `frame`, in order.

    With `spec.channels` set those are the channels, whatever the frame holds (the
    validation reports the missing or non-numeric ones). Otherwise every numeric column
    other than the timestamp and series columns is a channel (`is_numeric_channel`: a
    column of numbers with a few bad cells counts, so that its cells are reported rather
    than the column dropped). The other columns are logged either way, and the validation
    report lists them.

    Args:
        frame: The forecasting frame.
        spec: Its specification.

    Returns:
        Channel column names in model order.
    """
    candidates = channel_candidates(frame, spec)
    if spec.channels is not None:
        channels = spec.channels
    else:
        channels = tuple(c for c in candidates if is_numeric_channel(frame[c]))
    ignored = [c for c in candidates if c not in channels]
    if ignored:
        logger.warning("ignoring columns that are not channels: %s", ignored)
    return channels


def load_frame(path: Path, timestamp_column: str) -> pd.DataFrame:
    """Read a forecasting frame with the project's one reader (`llata_core.tables.read_table`).

    A row with fewer or more fields than the header is refused here, with its line; a cell
    that is not a number keeps its text so that the validation names it. The timestamp
    column stays text: parsing is the validation's job, so an unparseable value shows up
    in its report with the line it came from, and so does a missing timestamp column.

    Args:
        path: The data file (`.csv`, `.csv.gz`, `.parquet` or `.pq`).
        timestamp_column: Name of the timestamp column.

    Returns:
        The frame as stored; a CSV's rows carry their file lines (`SourceRows`).

    Raises:
        FileNotFoundError: `path` does not exist.
        DataLoadError: The suffix is unsupported, or the file is not a table that fits its
            header (the message names the lines).
    """
    return read_table(Path(path), timestamp_column, require_timestamp=False)
