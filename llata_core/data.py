"""A series and its standard splits: loading, scaling and sliding windows.

`load_series` turns what a configuration names (a benchmark, a file, or `synthetic`) into
a `SeriesFrame` that follows the data policy (`llata_core.policy`); `make_splits` cuts it
into train, validation and test windows on scaled values. Reading files, the benchmark
catalog and the verified fetch live in their own modules (`tables`, `catalog`, `fetch`,
`policy`); their public names are re-exported here, the one import most callers need.

The split borders follow the long-term forecasting literature (Informer, Time-Series-Library):
ETT hourly is 12/4/4 months, ETT 15-minute the same times four, other files 70/10/20, and
the validation and test splits start `input_size` rows early so that their first window's
history lies before the split. The scaler is fitted on the training rows only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from llata_core.catalog import BENCHMARKS, MIRROR_ENV, Benchmark
from llata_core.config import DataConfig
from llata_core.errors import DataError
from llata_core.fetch import (
    CACHE_ENV,
    FETCH_ORDER,
    FetchSource,
    bundled_path,
    fetch_benchmark_bytes,
    llata_home,
)
from llata_core.policy import (
    CONSTANT_TOLERANCE,
    GAP_FILL,
    MAX_NAN_FRACTION,
    constant_threshold,
    fill_gaps,
    prepare_frame,
)
from llata_core.tables import (
    CSV_SUFFIXES,
    MAX_SHOWN,
    PARQUET_SUFFIXES,
    SOURCE_ATTR,
    DataFileNotFoundError,
    DataLoadError,
    SourceRows,
    describe_cells,
    file_sha256,
    is_numeric_channel,
    non_numeric_cells,
    parse_timestamps,
    read_csv_bytes,
    read_maybe_gzip,
    read_table,
    read_table_with_bytes,
    row_location,
    sha256_bytes,
    source_lines,
)

__all__ = [
    "BENCHMARKS",
    "CACHE_ENV",
    "CONSTANT_TOLERANCE",
    "CSV_SUFFIXES",
    "FETCH_ORDER",
    "GAP_FILL",
    "MAX_NAN_FRACTION",
    "MAX_SHOWN",
    "MIRROR_ENV",
    "PARQUET_SUFFIXES",
    "SOURCE_ATTR",
    "Benchmark",
    "DataError",
    "DataFileNotFoundError",
    "DataLoadError",
    "FetchSource",
    "Scaler",
    "SeriesFrame",
    "SourceKind",
    "SourceRows",
    "Split",
    "Splits",
    "Window",
    "WindowDataset",
    "bundled_path",
    "constant_threshold",
    "describe_cells",
    "fetch_benchmark_bytes",
    "file_sha256",
    "fill_gaps",
    "is_numeric_channel",
    "llata_home",
    "load_series",
    "make_splits",
    "non_numeric_cells",
    "parse_timestamps",
    "prepare_frame",
    "read_csv_bytes",
    "read_maybe_gzip",
    "read_table",
    "read_table_with_bytes",
    "row_location",
    "series_from_frame",
    "sha256_bytes",
    "source_lines",
    "split_borders",
    "synthetic_frame",
]

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SourceKind = Literal["file", "mirror", "cache", "bundled", "url", "synthetic"]


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


def load_series(cfg: DataConfig, *, allow_synthetic: bool = False) -> SeriesFrame:
    """Load the series that `cfg.dataset` names.

    A path is read as a file (`read_table`). A benchmark name is looked up in the mirror directory
    (`$LLATA_DATA_MIRROR`), the local cache and its public URL, each checksum-verified.
    `synthetic` (or any benchmark when nothing is reachable and `allow_synthetic`) gives the
    generated series, with a loud warning. Every series follows the data policy
    (`prepare_frame`); NaN within `MAX_NAN_FRACTION` of a channel is filled (`fill_gaps`).

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
        frame, channels, filled = prepare_frame(frame, "date", cfg.channels, origin)
        split = bench.split if cfg.split == "auto" else cfg.split
        return SeriesFrame(frame, "date", channels, kind, origin, bench.sha256, split, filled)
    if name == "synthetic":
        return _synthetic(cfg, freq="h", split="ett_hour")
    path = Path(name)
    frame, raw = read_table_with_bytes(path, cfg.timestamp_column)
    frame, channels, filled = prepare_frame(frame, cfg.timestamp_column, cfg.channels, str(path))
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

    The frame follows the same data policy as a file (`prepare_frame`), sorted by time
    before gaps are filled; `cfg.split` picks the split rule (`auto` means 70/10/20 for a
    frame).
    """
    frame, channels, filled = prepare_frame(
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
    frame, channels, _ = prepare_frame(frame, "date", cfg.channels, "synthetic")
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


class Window(NamedTuple):
    """One long-term window (a loader stacks them into a batch of the same type); a pair,
    so `x, y = window` reads it.

    Its masks are None: every point of a window cut from one series is real. They give it
    the shape of the short-term samples (`ShortTermSample`), which have padded points, so
    that training treats both kinds alike (`llata_core.tasks.TrainingBatch`).

    Attributes:
        insample: `[L, M]` the input steps.
        target: `[H, M]` the steps that follow.
    """

    insample: torch.Tensor
    target: torch.Tensor

    @property
    def insample_mask(self) -> None:
        return None

    @property
    def target_mask(self) -> None:
        return None


class WindowDataset(Dataset):
    """Sliding windows over one scaled series: item `i` is a `Window` (`x [L, M]`,
    `y [H, M]`)."""

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

    def __getitem__(self, i: int) -> Window:
        if not 0 <= i < self.n:
            raise IndexError(i)
        s = self.values[i : i + self.input_size + self.horizon]
        return Window(s[: self.input_size], s[self.input_size :])


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

    def targets_fingerprint(self) -> str:
        """Identifies what a score is a score of: the source bytes, the training rows (the
        scaler's), the validation and test windows' futures and the horizon, but not the
        lookback. `split_borders` starts validation and test `input_size` rows early, so
        models of different lookbacks score the same futures and share this fingerprint."""
        size = self.test.input_size
        targets = [
            (name, (start + size, end) if name != "train" else (start, end))
            for name, (start, end) in sorted(self.borders.items())
        ]
        key = f"{self.series.sha256}|{targets}|{self.test.horizon}"
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
