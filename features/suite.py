"""The expectation suite for forecasting frames: what is checked, and on which columns.

Everything downstream (windowing, the scaler, the Feast stores) assumes a frame whose
timestamps parse, increase, repeat nowhere and sit on a regular grid, and whose channels
are numeric, finite and mostly present. `build_expectations` states those properties as
Great Expectations expectations, each tagged with the `Check` it stands for.

GX 1.x has no per-group expectations and no notion of a time grid, so the frame is
extended with derived helper columns (parsed timestamp, previous timestamp of the same
series, the timestamp the grid predicts, rows per series) by `prepare_suite_frame`. They
are computed in plain pandas and GX evaluates real expectations on them, so every verdict
in the report is a GX result; nothing is decided outside the suite.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.expectations.metadata_types import FailureSeverity
from pandas.api import types as ptypes
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset, Tick

from features.frame import (
    HELPER_PREFIX,
    FrameSpec,
    channel_candidates,
    parse_timestamps,
    resolve_channels,
)
from llata_core.policy import constant_threshold
from llata_core.tables import SourceRows, source_lines

logger = logging.getLogger(__name__)

PARSED_TIMESTAMP: Final = f"{HELPER_PREFIX}timestamp"
PREVIOUS_TIMESTAMP: Final = f"{HELPER_PREFIX}previous_timestamp"
EXPECTED_TIMESTAMP: Final = f"{HELPER_PREFIX}expected_timestamp"
SERIES_ROWS: Final = f"{HELPER_PREFIX}series_rows"

# dtype names ExpectColumnValuesToBeInTypeList accepts for a numeric channel. Numpy names
# cover numpy dtypes, the *Dtype names pandas' nullable dtypes, and "int"/"float" the
# Python scalars GX checks one by one in an object column.
NUMERIC_TYPES: Final = (
    *(f"int{bits}" for bits in (8, 16, 32, 64)),
    *(f"uint{bits}" for bits in (8, 16, 32, 64)),
    "float16",
    "float32",
    "float64",
    *(f"Int{bits}Dtype" for bits in (8, 16, 32, 64)),
    *(f"UInt{bits}Dtype" for bits in (8, 16, 32, 64)),
    "Float32Dtype",
    "Float64Dtype",
    "int",
    "float",
)

CHECK_KEY: Final = "llata_check"
ORDER_KEY: Final = "llata_order"


class Check(StrEnum):
    """The property of the frame an expectation stands for."""

    COLUMNS_PRESENT = "columns_present"
    HAS_CHANNELS = "has_channels"
    NUMERIC_CHANNEL = "numeric_channel"
    NAN_SHARE = "nan_share"
    FINITE_VALUES = "finite_values"
    CONSTANT_CHANNEL = "constant_channel"
    TIMESTAMP_PARSEABLE = "timestamp_parseable"
    SERIES_ID_PRESENT = "series_id_present"
    TIMESTAMP_INCREASING = "timestamp_increasing"
    TIMESTAMP_UNIQUE = "timestamp_unique"
    REGULAR_FREQUENCY = "regular_frequency"
    MIN_ROWS = "min_rows"


@dataclass(frozen=True)
class PreparedFrame:
    """The frame as GX sees it: positional index, original columns plus helpers."""

    data: pd.DataFrame
    labels: pd.Index
    source: SourceRows | None
    channels: tuple[str, ...]
    ignored_columns: tuple[str, ...]
    offset: BaseOffset | None
    frequency_inferred: bool
    multi_series: bool
    series_count: int
    nan_cells: int

    def line(self, position: int) -> int | None:
        """The file line of the row at `position`, when the frame came from a CSV."""
        return self.source.line(self.labels[position]) if self.source is not None else None


def prepare_suite_frame(frame: pd.DataFrame, spec: FrameSpec) -> PreparedFrame:
    """Copy the frame onto a positional index and add the helper columns."""
    clash = [c for c in frame.columns if is_helper(c)]
    if clash:
        raise ValueError(f"columns {clash} use the reserved prefix {HELPER_PREFIX!r}")
    data = frame.reset_index(drop=True)
    channels = resolve_channels(frame, spec)
    if not channels:
        # Nothing numeric: validate every candidate so the report says which are not.
        channels = tuple(channel_candidates(frame, spec))
    ignored = tuple(str(c) for c in channel_candidates(frame, spec) if c not in channels)
    nan_cells = sum(
        int(data[c].isna().sum())
        for c in channels
        if c in data.columns and ptypes.is_numeric_dtype(data[c])
    )

    multi_series = spec.series_column is not None
    keys: pd.Series | None = None
    series_count = 1
    if multi_series and spec.series_column in data.columns:
        keys = data[spec.series_column]
        series_count = int(keys.nunique(dropna=False))
        data[SERIES_ROWS] = keys.groupby(keys, dropna=False, sort=False).transform("size")

    offset, inferred = spec.offset, False
    if spec.timestamp_column in data.columns:
        parsed = parse_timestamps(data[spec.timestamp_column])
        if multi_series and keys is None:
            # The series column is missing (reported): per-series checks cannot run.
            previous = pd.Series(pd.NaT, index=data.index, dtype=parsed.dtype)
        elif keys is None:
            previous = parsed.shift(1)
        else:
            previous = parsed.groupby(keys, dropna=False, sort=False).shift(1)
        if offset is None:
            offset, inferred = _infer_offset(parsed, keys), True
        data[PARSED_TIMESTAMP] = parsed
        data[PREVIOUS_TIMESTAMP] = previous
        if offset is not None:
            step = pd.Timedelta(offset) if isinstance(offset, Tick) else offset
            data[EXPECTED_TIMESTAMP] = previous + step
    return PreparedFrame(
        data=data,
        labels=frame.index,
        source=source_lines(frame),
        channels=channels,
        ignored_columns=ignored,
        offset=offset,
        frequency_inferred=inferred and offset is not None,
        multi_series=multi_series,
        series_count=series_count,
        nan_cells=nan_cells,
    )


def is_helper(column: object) -> bool:
    return str(column).startswith(HELPER_PREFIX)


def _infer_offset(parsed: pd.Series, keys: pd.Series | None) -> BaseOffset | None:
    """The frame's frequency, inferred from its distinct, sorted timestamps per series.

    `pd.infer_freq` on the longest series recognises calendar frequencies (month ends,
    business days) that no fixed step describes; when it finds none the series is
    irregular, and the most common step across all series is taken as the grid so that
    the rows off it are the ones reported.
    """
    table = pd.DataFrame({"key": 0 if keys is None else keys, "ts": parsed})
    table = table.dropna().drop_duplicates().sort_values(["key", "ts"])
    if table.empty:
        logger.warning("no parseable timestamps: cannot infer the frequency")
        return None
    longest = table["key"].value_counts().idxmax()
    timestamps = pd.DatetimeIndex(table.loc[table["key"] == longest, "ts"])
    if len(timestamps) >= 3:
        alias = pd.infer_freq(timestamps)
        if alias is not None:
            return to_offset(alias)
    steps = table.groupby("key", sort=False)["ts"].diff().dropna()
    if steps.empty:
        logger.warning("no series has two distinct timestamps: cannot infer the frequency")
        return None
    return to_offset(steps.mode().iloc[0])


# --------------------------------------------------------------------------- the suite


def build_expectations(spec: FrameSpec, prepared: PreparedFrame) -> list[gxe.Expectation]:
    """The suite for this spec. Column-level expectations are added only for columns the
    frame has: a missing column is already reported once by the column-set expectation,
    and GX would otherwise add one "column not found" error per check on it."""
    data = prepared.data
    ts, series = spec.timestamp_column, spec.series_column
    expectations: list[gxe.Expectation] = []

    def add(check: Check, expectation: type[gxe.Expectation], notes: str, **kwargs: Any) -> None:
        meta = {CHECK_KEY: check.value, ORDER_KEY: len(expectations)}
        expectations.append(expectation(meta=meta, notes=notes, **kwargs))

    constant_severity = (
        FailureSeverity.WARNING if spec.constant_channels == "warn" else FailureSeverity.CRITICAL
    )

    required = [ts, *([series] if series else []), *(spec.channels or ())]
    add(
        Check.COLUMNS_PRESENT,
        gxe.ExpectTableColumnsToMatchSet,
        "The timestamp column, the series column and configured channels must exist.",
        column_set=required,
        exact_match=False,
    )
    if spec.channels is None:
        non_channels = [c for c in data.columns if c in (ts, series) or is_helper(c)]
        add(
            Check.HAS_CHANNELS,
            gxe.ExpectTableColumnCountToBeBetween,
            "At least one channel column besides the timestamp/series columns "
            f"(the count includes the {HELPER_PREFIX}* helper columns the validation adds).",
            min_value=len(non_channels) + 1,
        )
    for channel in prepared.channels:
        if channel not in data.columns:
            continue
        add(
            Check.NUMERIC_CHANNEL,
            gxe.ExpectColumnValuesToBeInTypeList,
            "Channels are numeric.",
            column=channel,
            type_list=list(NUMERIC_TYPES),
        )
        add(
            Check.NAN_SHARE,
            gxe.ExpectColumnValuesToNotBeNull,
            f"At most {spec.max_nan_fraction:.2%} of a channel may be NaN.",
            column=channel,
            mostly=1.0 - spec.max_nan_fraction,
        )
        add(
            Check.FINITE_VALUES,
            gxe.ExpectColumnValuesToNotBeInSet,
            "Values are finite (NaN is governed by the NaN-share expectation).",
            column=channel,
            value_set=[math.inf, -math.inf],
        )
        values = data[channel]
        if (
            ptypes.is_numeric_dtype(values)
            and not ptypes.is_bool_dtype(values)
            and values.count() >= 2
            and not np.isinf(values.to_numpy(dtype=np.float64)).any()
        ):  # a spread needs two finite numbers; the checks above report anything else
            threshold = constant_threshold(values)
            add(
                Check.CONSTANT_CHANNEL,
                gxe.ExpectColumnStdevToBeBetween,
                "A channel varies: a constant or near-constant one (standard deviation at most "
                f"{threshold:.3g}, 1e-6 of its magnitude) is a dead sensor and carries no signal.",
                column=channel,
                min_value=threshold,
                strict_min=True,
                severity=constant_severity,
            )
    if series is not None and series in data.columns:
        add(
            Check.SERIES_ID_PRESENT,
            gxe.ExpectColumnValuesToNotBeNull,
            "Every row names its series.",
            column=series,
        )
    if ts in data.columns:
        add(
            Check.TIMESTAMP_PARSEABLE,
            gxe.ExpectColumnValuesToNotBeNull,
            f"{PARSED_TIMESTAMP} is {ts!r} parsed by pandas; null where missing or unparseable.",
            column=PARSED_TIMESTAMP,
        )
        if series is None:
            add(
                Check.TIMESTAMP_INCREASING,
                gxe.ExpectColumnValuesToBeIncreasing,
                "Timestamps are strictly increasing in row order.",
                column=PARSED_TIMESTAMP,
                strictly=True,
            )
            add(
                Check.TIMESTAMP_UNIQUE,
                gxe.ExpectColumnValuesToBeUnique,
                "No timestamp appears twice.",
                column=PARSED_TIMESTAMP,
            )
        elif series in data.columns:
            add(
                Check.TIMESTAMP_INCREASING,
                gxe.ExpectColumnPairValuesAToBeGreaterThanB,
                f"Per series: each timestamp is after {PREVIOUS_TIMESTAMP}, the timestamp of "
                "the previous row of the same series.",
                column_A=PARSED_TIMESTAMP,
                column_B=PREVIOUS_TIMESTAMP,
                or_equal=False,
                ignore_row_if="either_value_is_missing",
            )
            add(
                Check.TIMESTAMP_UNIQUE,
                gxe.ExpectCompoundColumnsToBeUnique,
                "Per series: no timestamp appears twice.",
                column_list=[series, PARSED_TIMESTAMP],
            )
        if prepared.offset is not None and (series is None or series in data.columns):
            how = "inferred from the data" if prepared.frequency_inferred else "configured"
            add(
                Check.REGULAR_FREQUENCY,
                gxe.ExpectColumnPairValuesToBeEqual,
                f"Regular grid, frequency {prepared.offset.freqstr!r} ({how}): "
                f"{EXPECTED_TIMESTAMP} is the previous timestamp of the series plus one step.",
                column_A=PARSED_TIMESTAMP,
                column_B=EXPECTED_TIMESTAMP,
                ignore_row_if="either_value_is_missing",
            )
    if series is None:
        add(
            Check.MIN_ROWS,
            gxe.ExpectTableRowCountToBeBetween,
            "At least input_size + horizon rows.",
            min_value=spec.min_rows,
        )
    elif series in data.columns:
        add(
            Check.MIN_ROWS,
            gxe.ExpectColumnValuesToBeBetween,
            f"Per series: at least input_size + horizon rows ({SERIES_ROWS} counts them).",
            column=SERIES_ROWS,
            min_value=spec.min_rows,
        )
    return expectations
