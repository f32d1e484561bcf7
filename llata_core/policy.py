"""The data policy: what a readable frame must satisfy before anything trains on it.

Timestamps parse, channel cells are finite numbers, no channel is dead, and a small share
of NaN is filled by `fill_gaps`. The validation suite (`features.validation`) measures a
frame against the same rules, so what it lets through, training accepts; `prepare_frame`
applies them on the training side. Every refusal names the rows (file lines when the
frame came from `read_table`) and columns.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from llata_core.errors import DataError
from llata_core.tables import (
    MAX_SHOWN,
    SOURCE_ATTR,
    describe_cells,
    is_numeric_channel,
    non_numeric_cells,
    parse_timestamps,
    row_location,
    source_lines,
)

log = logging.getLogger(__name__)


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


def prepare_frame(
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
