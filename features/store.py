"""Feature store operations the pipeline and the service call.

A pipeline run keeps its Feast repo in a directory of its own (e.g.
`artifacts/feature_repo/`): `feature_store.yaml` copied from this package, the registry,
the sqlite online store and the parquet offline files under `data/`. Nothing is written
into `features/` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

from features.definitions import build_definitions, check_channels
from features.entities import SERIES_JOIN_KEY
from features.frame import FrameSpec, parse_timestamps, resolve_channels
from features.services import SERVING_SERVICE, TRAINING_SERVICE
from features.sources import (
    CONTEXT_WINDOW_PATH,
    CONTEXT_WINDOW_PUSH,
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    OBSERVATIONS_PATH,
)
from features.views import CONTEXT_WINDOW_VIEW, INPUT_SIZE_TAG, OBSERVATIONS_VIEW, WINDOW_END
from llata_core.atomic import atomic_write

logger = logging.getLogger(__name__)

CONFIG_TEMPLATE: Final = Path(__file__).with_name("feature_store.yaml")


class UnknownSeriesError(KeyError):
    """The online store holds no context window for this series."""

    def __init__(self, series_id: str) -> None:
        super().__init__(series_id)
        self.series_id = series_id

    def __str__(self) -> str:
        # KeyError's own __str__ shows the repr of its argument, which reads badly in logs.
        return (
            f"no context window for series {self.series_id!r} in the online store: "
            "unknown series, or none pushed yet"
        )


@dataclass(frozen=True, eq=False)
class ContextWindow:
    """The model input for one series, as served.

    Attributes:
        series_id: The series.
        values: `[input_size, M]` float64, oldest row first, columns in `channels` order.
        channels: Channel names.
        window_end: Timestamp of the last row (UTC).
    """

    series_id: str
    values: np.ndarray
    channels: tuple[str, ...]
    window_end: pd.Timestamp


def prepare_feature_repo(
    repo_dir: Path, frame: pd.DataFrame, spec: FrameSpec, input_size: int
) -> FeatureStore:
    """Build the feature repo of a pipeline run from a validated frame.

    Writes `feature_store.yaml` and `data/observations.parquet`, applies the definitions
    (the Python equivalent of `feast apply`), materializes the observations into the
    online store, and pushes every series' latest context window to the online and
    offline stores. Rerunning it on the same directory replaces the data.

    Args:
        repo_dir: Directory of the run's feature repo; created if missing.
        frame: The frame, already validated by `features.validation.validate_frame`.
        spec: Its specification (timestamp/series columns, channels, default series id).
        input_size: Context window length L.

    Returns:
        The store, ready for `get_training_frame` and `read_context_window`.

    Raises:
        ValueError: A timestamp does not parse, a (series, timestamp) pair repeats, or a
            series is shorter than `input_size`; `validate_frame` reports these first.
    """
    repo_dir = Path(repo_dir).resolve()
    channels = check_channels(resolve_channels(frame, spec))
    observations = build_observations_frame(frame, spec, channels)
    windows = _latest_windows(observations, channels, input_size)

    template = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    atomic_write(repo_dir / "feature_store.yaml", lambda tmp: tmp.write_text(template, "utf-8"))
    atomic_write(
        repo_dir / OBSERVATIONS_PATH,
        lambda tmp: observations.to_parquet(tmp, index=False),
    )
    # Feast's file offline store appends pushes to an existing parquet file (it reads the
    # old table and rewrites it), so the window log must exist, empty, before any push.
    window_schema = _context_window_schema(channels)
    atomic_write(
        repo_dir / CONTEXT_WINDOW_PATH, lambda tmp: pq.write_table(window_schema.empty_table(), tmp)
    )

    store = FeatureStore(repo_path=str(repo_dir))
    store.apply(build_definitions(channels, input_size))
    # Only the observations come from a batch source; the context window view is fed by
    # pushes. Feast's end date is inclusive.
    start = observations[EVENT_TIMESTAMP].min().to_pydatetime()
    end = observations[EVENT_TIMESTAMP].max().to_pydatetime()
    store.materialize(start_date=start, end_date=end, feature_views=[OBSERVATIONS_VIEW])
    store.push(CONTEXT_WINDOW_PUSH, windows, to=PushMode.ONLINE_AND_OFFLINE)
    logger.info(
        "feature repo %s: %d observations, %d series, %d channels, input_size %d",
        repo_dir,
        len(observations),
        len(windows),
        len(channels),
        input_size,
    )
    return store


def open_feature_store(repo_dir: Path) -> FeatureStore:
    """Open a feature repo written by `prepare_feature_repo` (e.g. in the service).

    Raises:
        FileNotFoundError: `repo_dir` has no `feature_store.yaml`.
    """
    repo_dir = Path(repo_dir).resolve()
    if not (repo_dir / "feature_store.yaml").is_file():
        raise FileNotFoundError(f"no feature repo at {repo_dir} (feature_store.yaml missing)")
    return FeatureStore(repo_path=str(repo_dir))


def build_observations_frame(
    frame: pd.DataFrame, spec: FrameSpec, channels: Sequence[str]
) -> pd.DataFrame:
    """The frame in the observations source's long format.

    Timestamps become UTC: naive timestamps are taken to be UTC already, because Feast
    compares event timestamps as UTC instants. Series ids become strings, channels float64.

    Args:
        frame: The validated frame.
        spec: Its specification.
        channels: Channel columns to store.

    Returns:
        Columns `series_id, event_timestamp, <channels>, created`, sorted by series and time.
    """
    timestamps = parse_timestamps(frame[spec.timestamp_column])
    if timestamps.isna().any():
        raise ValueError(
            f"{int(timestamps.isna().sum())} value(s) of {spec.timestamp_column!r} do not "
            "parse as timestamps; validate the frame first"
        )
    if spec.series_column is None:
        series_ids = pd.Series(spec.default_series_id, index=range(len(frame)))
    else:
        series_ids = frame[spec.series_column].astype(str).reset_index(drop=True)
    observations = pd.DataFrame(
        {
            SERIES_JOIN_KEY: series_ids,
            EVENT_TIMESTAMP: _as_utc(timestamps).reset_index(drop=True),
            **{channel: frame[channel].to_numpy(dtype=np.float64) for channel in channels},
        }
    )
    observations[CREATED_TIMESTAMP] = pd.Timestamp.now(tz=UTC)
    duplicated = observations.duplicated([SERIES_JOIN_KEY, EVENT_TIMESTAMP])
    if duplicated.any():
        raise ValueError(
            f"{int(duplicated.sum())} (series, timestamp) pair(s) repeat; validate the frame first"
        )
    return observations.sort_values([SERIES_JOIN_KEY, EVENT_TIMESTAMP], ignore_index=True)


def get_training_frame(store: FeatureStore, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time training rows through the `training` feature service.

    Each entity row gets the channel values of the latest observation of its series
    stamped at or before the row's `event_timestamp`, never a later one.

    Feast 0.67's file (Dask) offline store drops an entity row outright when its series
    has observations but none at or before the row's timestamp, and keeps one row per
    (series, timestamp) pair. So Feast is asked about the distinct pairs and the answer is
    joined back: the result has one row per entity row, in order, with NaN channels
    where the series had no observation yet.

    Args:
        store: The feature store.
        entity_df: Columns `series_id` and `event_timestamp`, plus any others (labels,
            split markers) to carry through.

    Returns:
        `entity_df` (same index and order) with one float64 column per channel.
    """
    keys = _entity_keys(entity_df)
    channels = list(_view_channels(store.get_feature_view(OBSERVATIONS_VIEW)))
    pairs = keys.drop_duplicates(ignore_index=True)
    joined = store.get_historical_features(
        entity_df=pairs, features=store.get_feature_service(TRAINING_SERVICE)
    ).to_df()
    joined[EVENT_TIMESTAMP] = _as_utc(joined[EVENT_TIMESTAMP])
    if len(joined) < len(pairs):
        logger.debug(
            "%d entity row(s) precede their series' first observation", len(pairs) - len(joined)
        )
    features = keys.merge(
        joined[[SERIES_JOIN_KEY, EVENT_TIMESTAMP, *channels]],
        on=[SERIES_JOIN_KEY, EVENT_TIMESTAMP],
        how="left",
        validate="many_to_one",
    )
    result = entity_df.copy()
    for channel in channels:
        result[channel] = features[channel].to_numpy(dtype=np.float64)
    return result


def get_training_frame_asof(
    store: FeatureStore, entity_df: pd.DataFrame, *, max_pit_rows: int, check_rows: int
) -> tuple[pd.DataFrame, str]:
    """Point-in-time training rows for an entity frame of any length.

    Up to `max_pit_rows` rows, this is `get_training_frame`: Feast's point-in-time join
    answers every row. Beyond that, Feast 0.67's file (Dask) offline store would need
    rows^2 memory (it merges every entity row with every observation of its series before
    filtering), so the observations source is read through the offline store's
    `pull_all_from_table_or_query` (what Feast's materialization uses) and joined as of
    each row with `pandas.merge_asof`, with the same semantics: the latest observation of
    the series at or before the row (within the view's TTL, if it has one), the latest
    write (created timestamp) of a (series, timestamp) pair on ties, NaN channels where
    the series had no observation yet. `check_rows` evenly spaced rows (the first and the
    last included) are then answered by Feast's own join, and any difference is an error.

    Ties never arise from `prepare_feature_repo`, which writes each pair once; where a pair
    is written twice, Feast 0.67's file store may answer either write (it sorts by created
    timestamp, then by event timestamp with an unstable sort), so a sampled tie may fail
    the check.

    Args:
        store: The feature store.
        entity_df: Columns `series_id` and `event_timestamp`, plus any others to carry
            through, in any order.
        max_pit_rows: Longest entity frame answered entirely by Feast's join.
        check_rows: Rows of a longer frame cross-checked against Feast's join.

    Returns:
        `entity_df` (same index and order) with one float64 column per channel, as
        `get_training_frame` returns it, and the retrieval used: `point_in_time` (Feast's
        join over every row) or `offline_asof` (the as-of read, cross-checked).

    Raises:
        ValueError: `entity_df` lacks a key column, or `check_rows` is below 1.
        RuntimeError: The as-of read differs from Feast's join on a sampled row.
    """
    if check_rows < 1:
        raise ValueError(f"check_rows must be >= 1, got {check_rows}")
    if len(entity_df) <= max_pit_rows:
        return get_training_frame(store, entity_df), "point_in_time"
    joined = _offline_asof(store, entity_df)
    check_against_point_in_time(store, entity_df, joined, check_rows)
    return joined, "offline_asof"


def _offline_asof(store: FeatureStore, entity_df: pd.DataFrame) -> pd.DataFrame:
    """As-of join of `entity_df` against the observations read from the offline store."""
    keys = _entity_keys(entity_df)
    view = store.get_feature_view(OBSERVATIONS_VIEW)
    if view.batch_source is None:
        raise RuntimeError(f"feature view {OBSERVATIONS_VIEW!r} has no batch source")
    channels = list(_view_channels(view))
    offline = get_offline_store_from_config(store.config.offline_store)
    job = offline.pull_all_from_table_or_query(
        config=store.config,
        data_source=view.batch_source,
        join_key_columns=[SERIES_JOIN_KEY],
        feature_name_columns=channels,
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        # No start date: a row may take a value stamped before the earliest row.
        end_date=keys[EVENT_TIMESTAMP].max().to_pydatetime(),
    )
    observations = job.to_df()
    observations[EVENT_TIMESTAMP] = pd.to_datetime(observations[EVENT_TIMESTAMP], utc=True)
    observations[SERIES_JOIN_KEY] = observations[SERIES_JOIN_KEY].astype(str)
    # The latest write (created timestamp) of a (series, timestamp) wins.
    observations = observations.sort_values([EVENT_TIMESTAMP, CREATED_TIMESTAMP], kind="stable")
    observations = observations.drop_duplicates([SERIES_JOIN_KEY, EVENT_TIMESTAMP], keep="last")
    # merge_asof needs the rows in time order; their positions put the answer back in order.
    ordered = keys.sort_values(EVENT_TIMESTAMP, kind="stable")
    ordered[EVENT_TIMESTAMP] = ordered[EVENT_TIMESTAMP].astype(observations[EVENT_TIMESTAMP].dtype)
    matched = pd.merge_asof(
        ordered,
        observations[[SERIES_JOIN_KEY, EVENT_TIMESTAMP, *channels]],
        on=EVENT_TIMESTAMP,
        by=SERIES_JOIN_KEY,
        direction="backward",
        allow_exact_matches=True,
        # Feast 0.67 reads a zero TTL as no limit.
        tolerance=pd.Timedelta(view.ttl) if view.ttl else None,
    )
    matched.index = ordered.index
    matched = matched.sort_index()
    result = entity_df.copy()
    for channel in channels:
        result[channel] = matched[channel].to_numpy(dtype=np.float64)
    return result


def check_against_point_in_time(
    store: FeatureStore, entity_df: pd.DataFrame, joined: pd.DataFrame, n_rows: int
) -> None:
    """Check a training frame built outside Feast against Feast's own point-in-time join.

    `n_rows` evenly spaced rows of `joined` (the first and the last included) are answered
    again by Feast and compared; `get_training_frame_asof` runs this on its as-of read.

    Raises:
        RuntimeError: A sampled row differs, naming the first such row and its keys.
    """
    idx = np.unique(np.linspace(0, len(entity_df) - 1, min(n_rows, len(entity_df))).astype(int))
    reference = get_training_frame(store, entity_df.iloc[idx].reset_index(drop=True))
    channels = [c for c in reference.columns if c not in entity_df.columns]
    ours = joined.iloc[idx][channels].to_numpy(dtype=np.float64)
    theirs = reference[channels].to_numpy(dtype=np.float64)
    if not np.allclose(ours, theirs, equal_nan=True):
        bad = int(idx[np.nonzero(~np.isclose(ours, theirs, equal_nan=True).all(axis=1))[0][0]])
        raise RuntimeError(
            f"training frame differs from Feast's point-in-time join at row {bad} "
            f"({entity_df.iloc[bad].to_dict()})"
        )
    logger.info("training frame matches Feast's point-in-time join on %d sampled rows", len(idx))


def push_context_window(
    store: FeatureStore,
    series_id: str,
    window: np.ndarray,
    channels: Sequence[str],
    window_end: pd.Timestamp | datetime,
    *,
    offline: bool = True,
) -> None:
    """Push a series' latest context window through `context_window_push`.

    The online store keeps the last push per series, whatever its window end.

    Args:
        store: The feature store.
        series_id: The series.
        window: `[input_size, M]` values, oldest row first.
        channels: Names of the M columns of `window` (any order; stored in view order).
        window_end: Timestamp of the window's last row (naive means UTC).
        offline: Also append the window to the offline log (`data/context_window.parquet`).
            Feast rewrites that whole file on every append, so high-rate pushers may
            prefer online only.

    Raises:
        ValueError: `window` or `channels` do not match the registered context window view.
    """
    view = store.get_feature_view(CONTEXT_WINDOW_VIEW)
    view_channels, input_size = _view_channels(view), _view_input_size(view)
    channels = tuple(channels)
    window = np.asarray(window, dtype=np.float64)
    if sorted(channels) != sorted(view_channels):
        raise ValueError(f"channels {list(channels)} do not match the store's {view_channels}")
    if window.shape != (input_size, len(channels)):
        raise ValueError(
            f"window has shape {window.shape}; the store expects {(input_size, len(channels))}"
        )
    ordered = window[:, [channels.index(channel) for channel in view_channels]]
    end = _as_utc(pd.Series([pd.Timestamp(window_end)])).iloc[0]
    rows = pd.DataFrame([_window_row(str(series_id), ordered, view_channels, end)])
    mode = PushMode.ONLINE_AND_OFFLINE if offline else PushMode.ONLINE
    store.push(CONTEXT_WINDOW_PUSH, rows, to=mode)


def read_context_window(store: FeatureStore, series_id: str) -> ContextWindow:
    """Read a series' context window from the online store via the `serving` service.

    Raises:
        UnknownSeriesError: Nothing was pushed for `series_id`.
        ValueError: The stored window does not have the registered length.
    """
    view = store.get_feature_view(CONTEXT_WINDOW_VIEW)
    channels, input_size = _view_channels(view), _view_input_size(view)
    response = store.get_online_features(
        features=store.get_feature_service(SERVING_SERVICE),
        entity_rows=[{SERIES_JOIN_KEY: str(series_id)}],
    ).to_dict()
    window_end = response[WINDOW_END][0]
    if window_end is None:
        raise UnknownSeriesError(str(series_id))
    columns = [np.asarray(response[channel][0], dtype=np.float64) for channel in channels]
    lengths = {len(column) for column in columns}
    if lengths != {input_size}:
        raise ValueError(
            f"stored window of series {series_id!r} has length(s) {sorted(lengths)}, "
            f"expected {input_size}"
        )
    return ContextWindow(
        series_id=str(series_id),
        values=np.stack(columns, axis=1),  # [input_size, M]
        channels=channels,
        window_end=_as_utc(pd.Series([pd.Timestamp(window_end)])).iloc[0],
    )


def _entity_keys(entity_df: pd.DataFrame) -> pd.DataFrame:
    """The join keys of `entity_df`: string series ids, UTC timestamps, a range index."""
    missing = {SERIES_JOIN_KEY, EVENT_TIMESTAMP} - set(entity_df.columns)
    if missing:
        raise ValueError(f"entity_df lacks column(s) {sorted(missing)}")
    return pd.DataFrame(
        {
            SERIES_JOIN_KEY: entity_df[SERIES_JOIN_KEY].astype(str).reset_index(drop=True),
            EVENT_TIMESTAMP: _as_utc(entity_df[EVENT_TIMESTAMP]).reset_index(drop=True),
        }
    )


def _latest_windows(
    observations: pd.DataFrame, channels: Sequence[str], input_size: int
) -> pd.DataFrame:
    """One push row per series: its last `input_size` observations."""
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    rows = []
    for series_id, group in observations.groupby(SERIES_JOIN_KEY, sort=True):
        if len(group) < input_size:
            raise ValueError(
                f"series {series_id!r} has {len(group)} rows, fewer than input_size={input_size}"
            )
        tail = group.iloc[-input_size:]
        values = tail[list(channels)].to_numpy(dtype=np.float64)  # [input_size, M]
        rows.append(_window_row(str(series_id), values, channels, tail[EVENT_TIMESTAMP].iloc[-1]))
    return pd.DataFrame(rows)


def _window_row(
    series_id: str, values: np.ndarray, channels: Sequence[str], window_end: pd.Timestamp
) -> dict[str, object]:
    """A push row: one list per channel, stamped with the window end."""
    return {
        SERIES_JOIN_KEY: series_id,
        EVENT_TIMESTAMP: window_end,
        **{channel: values[:, j].tolist() for j, channel in enumerate(channels)},
        WINDOW_END: window_end,
    }


def _context_window_schema(channels: Sequence[str]) -> pa.Schema:
    """Arrow schema of the context window log, in the order pushes produce."""
    timestamp = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            (SERIES_JOIN_KEY, pa.string()),
            (EVENT_TIMESTAMP, timestamp),
            *((channel, pa.list_(pa.float64())) for channel in channels),
            (WINDOW_END, timestamp),
        ]
    )


def _view_channels(view: FeatureView) -> tuple[str, ...]:
    """Channel names of a view, in the order they were defined (the model's order)."""
    return tuple(f.name for f in view.features if f.name != WINDOW_END)


def _view_input_size(view: FeatureView) -> int:
    size = view.tags.get(INPUT_SIZE_TAG)
    if size is None or not size.isdigit() or int(size) < 1:
        raise ValueError(f"feature view {view.name!r} has no valid {INPUT_SIZE_TAG!r} tag")
    return int(size)


def _as_utc(timestamps: pd.Series) -> pd.Series:
    """Timestamps as UTC instants; naive ones are taken to be UTC."""
    timestamps = pd.to_datetime(timestamps)
    if timestamps.dt.tz is None:
        return timestamps.dt.tz_localize(UTC)
    return timestamps.dt.tz_convert(UTC)
