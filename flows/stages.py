"""The pipeline's data stages: validate the raw file, then build the features.

Each function is one step of DESIGN section 3 over a `PipelineConfig`: it reads the
previous step's files, calls the library (`features` for Great Expectations and Feast) and
writes its own files into the layout. The steps after these live beside them, one room per
job: `flows.training_stages` (backbone, one candidate's training),
`flows.selection_stages` (the candidates' combination and the choice among them),
`flows.evaluate` (test metrics and plots) and `flows.registry_stages` (register, promote,
recalibrate). `llata validate|features` (which `dvc.yaml` runs) and the Prefect tasks in
`flows.retrain` are thin wrappers around these functions, as around the other rooms', so
`dvc repro` and the flow produce the same files from the same params.

Every file is written atomically (temp file + rename; llata_core does the same for the
model), so a step that dies leaves the previous complete output or none, never half of one.

Great Expectations, Feast, BentoML and torch are imported inside the stages that need them:
each DVC stage is its own process, and importing all four costs about ten seconds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from flows.config import PipelineConfig, min_rows_for_split
from flows.datasource import read_provenance
from llata_core.atomic import atomic_write, write_json
from llata_core.data import GAP_FILL, file_sha256, fill_gaps

if TYPE_CHECKING:
    from feast import FeatureStore

    from features.frame import FrameSpec
    from features.validation import ValidationReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesResult:
    """What the features stage wrote.

    Attributes:
        training_frame: The point-in-time training frame (parquet).
        rows: Rows in it.
        channels: Its channel columns.
        retrieval: `point_in_time` (Feast's join over every row) or `offline_asof` (the
            offline store read with as-of semantics, cross-checked against Feast's join).
        filled: NaN values filled (forward, then backward) before training.
        lineage: What the training step records about the data.
    """

    training_frame: Path
    rows: int
    channels: tuple[str, ...]
    retrieval: str
    filled: int
    lineage: dict[str, Any]


# --------------------------------------------------------------------------- helpers


def frame_spec(cfg: PipelineConfig) -> FrameSpec:
    """The data contract of the raw frame: columns, frequency, NaN share, enough rows.

    `min_rows` is what the split rule needs for one window in every split, at least
    `input_size + horizon`, so a frame too short for training fails validation.
    """
    from features.frame import FrameSpec

    data = cfg.model.data
    if cfg.short_term:
        return _long_frame_spec(cfg)
    return FrameSpec(
        timestamp_column=data.timestamp_column,
        channels=data.channels or cfg.params.validation.channels,
        min_rows=min_rows_for_split(cfg.params.split, cfg.max_input_size, data.horizon),
        max_nan_fraction=cfg.params.validation.max_nan_fraction,
        frequency=cfg.params.validation.frequency,
        default_series_id=cfg.params.series_id,
        constant_channels=cfg.params.validation.constant_channels,
    )


def _long_frame_spec(cfg: PipelineConfig) -> FrameSpec:
    """The contract of a long-format raw file of many univariate series.

    One value column, no missing values (a gap inside a series would change what the
    model is scored on, so the short-term reader refuses it, and so does the suite), no
    (series, timestamp) twice, each series on the regular grid (an M4 subset's frequency,
    or `pipeline.validation.frequency`) and long enough: the longest candidate input plus
    the horizon, and at least `2 x horizon + 1` points (test target, validation target and
    one point to train on, `load_short_term_splits`'s rule).
    """
    from features.frame import FrameSpec

    data = cfg.model.data
    assert data.series_column is not None
    subset = cfg.params.m4_subset
    return FrameSpec(
        timestamp_column=data.timestamp_column,
        channels=(data.value_column,),
        series_column=data.series_column,
        min_rows=max(cfg.max_input_size + data.horizon, 2 * data.horizon + 1),
        max_nan_fraction=0.0,
        frequency=subset.freq if subset is not None else cfg.params.validation.frequency,
        constant_channels=cfg.params.validation.constant_channels,
    )


def load_raw_frame(cfg: PipelineConfig) -> pd.DataFrame:
    """The raw frame as stored (timestamps still text: parsing is the validation's job).

    Raises:
        FileNotFoundError: The raw file is missing (run `llata data pull`).
        features.frame.DataLoadError: It cannot be parsed as a table.
    """
    from features.frame import load_frame

    path = cfg.layout.raw_data
    if not path.is_file():
        raise FileNotFoundError(f"raw data not found: {path}; run `llata data pull` first")
    return load_frame(path, cfg.model.data.timestamp_column)


def data_lineage(cfg: PipelineConfig) -> dict[str, Any]:
    """Where the raw data came from, for the model's metadata.

    Synthetic data is recognised from the provenance record `llata data pull` wrote for
    exactly these bytes, so it is flagged however the later stages are run.
    """
    record = read_provenance(cfg) or {}
    source = str(record.get("source", "file"))
    return {
        "dataset": cfg.params.dataset,
        "raw_data": str(cfg.params.raw_data),
        "raw_data_sha256": file_sha256(cfg.layout.raw_data),
        "raw_data_source": source,
        "raw_data_origin": str(record.get("origin", cfg.params.raw_data)),
        "synthetic_data": source == "synthetic",
    }


# --------------------------------------------------------------------------- validate


def validate_stage(cfg: PipelineConfig) -> ValidationReport:
    """Run the Great Expectations suite on the raw frame.

    Writes `reports/validation/validation.json` and the GX Data Docs beside it, whether the
    frame passes or not; the caller decides to stop (`report.raise_for_failures()`).

    Raises:
        FileNotFoundError: The raw file is missing.
        features.frame.DataLoadError: It cannot be read as a table.
    """
    from features.validation import validate_frame

    frame = load_raw_frame(cfg)
    return validate_frame(frame, frame_spec(cfg), cfg.layout.validation_dir)


# --------------------------------------------------------------------------- features


def features_stage(cfg: PipelineConfig) -> FeaturesResult:
    """Build the Feast repo and write the point-in-time training frame.

    Applies the definitions, materializes the observations into the sqlite online store,
    pushes the latest context window, then reads the training frame back from the offline
    store (see `training_frame_from_store`) and writes it with its lineage.

    The frame is validated again first (without Data Docs, about a second): whoever calls
    this stage, nothing unvalidated reaches the feature store.

    Raises:
        features.validation.DataValidationError: The raw frame breaks the suite.
    """
    from features.store import prepare_feature_repo
    from features.validation import validate_frame

    layout = cfg.layout
    frame = load_raw_frame(cfg)
    spec = frame_spec(cfg)
    validate_frame(frame, spec).raise_for_failures()
    # The context window serves every candidate, so it is as long as the longest lookback.
    store = prepare_feature_repo(layout.feature_repo, frame, spec, cfg.max_input_size)
    training, retrieval = training_frame_from_store(cfg, store, frame)
    keys = {cfg.model.data.timestamp_column, cfg.model.data.series_column}
    channels = tuple(c for c in training.columns if c not in keys)
    if cfg.short_term:
        # Validation allowed no NaN; the store returning one means a lost observation.
        missing = int(training[list(channels)].isna().sum().sum())
        if missing:
            raise RuntimeError(
                f"the feature store returned {missing} missing value(s) for a frame "
                "validated without any"
            )
    else:
        # The one NaN rule (`llata_core.data.fill_gaps`): the share validation allowed is
        # filled.
        training, missing = fill_gaps(
            training,
            channels,
            origin=str(layout.training_frame),
            max_nan_fraction=cfg.params.validation.max_nan_fraction,
        )
    atomic_write(layout.training_frame, lambda tmp: training.to_parquet(tmp, index=False))
    source = data_lineage(cfg)
    lineage = {
        **source,
        "data_lineage": lineage_record(
            cfg, synthetic=source["synthetic_data"], frame=training, channels=channels
        ),
        "feature_repo": str(layout.feature_repo.relative_to(layout.root)),
        "training_frame": str(layout.training_frame.relative_to(layout.root)),
        "training_frame_sha256": file_sha256(layout.training_frame),
        "training_retrieval": retrieval,
        "filled_values": missing,
        "gap_fill": GAP_FILL,
        "built_at": datetime.now(UTC).isoformat(),
    }
    write_json(layout.lineage, lineage, default=str)
    logger.info(
        "training frame %s: %d rows x %d channels (%s)",
        layout.training_frame,
        len(training),
        len(channels),
        retrieval,
    )
    return FeaturesResult(
        layout.training_frame, len(training), channels, retrieval, missing, lineage
    )


def lineage_record(
    cfg: PipelineConfig,
    *,
    synthetic: bool,
    frame: pd.DataFrame | None = None,
    channels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The data lineage a version records and promotion compares (`serving.registry_gates`).

    With the training frame, the series and frequency are what it holds; without one (a
    recalibration's check of the raw file), the configured ones. Fields left None are not
    compared.
    """
    return {
        "dataset": cfg.params.dataset,
        "series_id": cfg.params.series_id if frame is None else _series_lineage(cfg, frame),
        "channels": None if channels is None else list(channels),
        "frequency": (cfg.params.validation.frequency if frame is None else _frequency(cfg, frame)),
        "synthetic": synthetic,
    }


def _series_lineage(cfg: PipelineConfig, frame: pd.DataFrame) -> str:
    """Which series a model learns from: the wide series' id, or for many series their
    count and a digest of their ids (a model of other series is another lineage)."""
    column = cfg.model.data.series_column
    if column is None:
        return cfg.params.series_id
    ids = sorted(frame[column].astype(str).unique())
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
    return f"{len(ids)} series ({ids[0]}..{ids[-1]}, ids sha256 {digest})"


def _frequency(cfg: PipelineConfig, frame: pd.DataFrame) -> str | None:
    """The frame's timestamp frequency: the configured one (an M4 subset's own), else
    what pandas infers (from the first series of a long-format frame)."""
    spec = frame_spec(cfg)
    if spec.frequency is not None:
        return spec.frequency
    from features.frame import parse_timestamps

    if cfg.model.data.series_column is not None:
        column = frame[cfg.model.data.series_column]
        frame = frame[column == column.iloc[0]]
    timestamps = pd.DatetimeIndex(parse_timestamps(frame[cfg.model.data.timestamp_column]))
    return pd.infer_freq(timestamps[: min(len(timestamps), 1000)]) if len(timestamps) > 2 else None


def training_frame_from_store(
    cfg: PipelineConfig, store: FeatureStore, frame: pd.DataFrame
) -> tuple[pd.DataFrame, str]:
    """The training frame, read back from the Feast offline store as of each row.

    One entity row per raw (series, timestamp) asks for the channel values known at that
    time: a wide frame is one series (`pipeline.series_id`), a long-format frame names its
    series in `data.series_column` and comes back in the same long format.
    `features.store.get_training_frame_asof` answers them: Feast's point-in-time join up to
    `pipeline.features.pit_max_rows` rows, beyond that an as-of read of the offline store
    with the same semantics, `pipeline.features.pit_check_rows` rows of it cross-checked
    against Feast's join.

    Returns:
        The frame (timestamp column plus channels, naive UTC timestamps, time order) and
        the retrieval used (`point_in_time` or `offline_asof`).
    """
    from features.entities import SERIES_JOIN_KEY
    from features.frame import parse_timestamps
    from features.sources import EVENT_TIMESTAMP
    from features.store import get_training_frame_asof

    ts_col = cfg.model.data.timestamp_column
    series_col = cfg.model.data.series_column
    timestamps = parse_timestamps(frame[ts_col])
    if timestamps.dt.tz is None:
        timestamps = timestamps.dt.tz_localize("UTC")
    ids = (
        frame[series_col].astype(str).reset_index(drop=True)
        if series_col is not None
        else cfg.params.series_id
    )
    entity_df = pd.DataFrame(
        {
            SERIES_JOIN_KEY: ids,
            EVENT_TIMESTAMP: timestamps.dt.tz_convert("UTC").reset_index(drop=True),
        }
    )
    order = [EVENT_TIMESTAMP] if series_col is None else [SERIES_JOIN_KEY, EVENT_TIMESTAMP]
    entity_df = entity_df.sort_values(order, kind="stable", ignore_index=True)
    joined, retrieval = get_training_frame_asof(
        store,
        entity_df,
        max_pit_rows=cfg.params.features.pit_max_rows,
        check_rows=cfg.params.features.pit_check_rows,
    )
    if series_col is None:
        joined = joined.drop(columns=[SERIES_JOIN_KEY])
    out = joined.rename(columns={EVENT_TIMESTAMP: ts_col, SERIES_JOIN_KEY: series_col})
    out[ts_col] = out[ts_col].dt.tz_convert("UTC").dt.tz_localize(None)
    return out.reset_index(drop=True), retrieval
