"""Data: benchmark sources, the standard long-term splits, scaling and sliding windows.

The split borders follow the long-term forecasting literature (Informer, Time-Series-Library):
ETT hourly is 12/4/4 months, ETT 15-minute the same times four, other files 70/10/20, and
the validation and test splits start `input_size` rows early so that their first window's
history lies before the split. The scaler is fitted on the training rows only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from llata_core.atomic import atomic_write_bytes
from llata_core.config import DataConfig

log = logging.getLogger(__name__)

MIRROR_ENV = "LLATA_DATA_MIRROR"
CACHE_ENV = "LLATA_HOME"

Split = Literal["train", "val", "test"]
SourceKind = Literal["file", "mirror", "cache", "url", "synthetic"]


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


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
BENCHMARKS: dict[str, Benchmark] = {
    "ETTh1": Benchmark(
        "ETTh1.csv",
        _ETT + "ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        "ett_hour",
        "h",
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
    """

    frame: pd.DataFrame
    timestamp_column: str
    channels: tuple[str, ...]
    source: SourceKind
    origin: str
    sha256: str
    split: Literal["ett_hour", "ett_minute", "ratio"]

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


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def fetch_benchmark_bytes(name: str, *, timeout: float = 20.0) -> tuple[bytes, SourceKind, str]:
    """Find a benchmark's verified bytes: mirror, then local cache, then the public URL.

    Every candidate is checked against the published SHA-256; a mismatch is skipped with a
    warning (a corrupt mirror must not silently feed training).

    Returns:
        The uncompressed CSV bytes, the kind of source and its location.

    Raises:
        DataError: no source had bytes with the right checksum.
    """
    bench = BENCHMARKS[name]
    candidates: list[tuple[SourceKind, Path]] = []
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        for fname in (bench.filename + ".gz", bench.filename):
            candidates.append(("mirror", Path(mirror) / fname))
    cached = llata_home() / "data" / bench.filename
    candidates.append(("cache", cached))
    tried: list[str] = []
    for kind, path in candidates:
        if not path.is_file():
            continue
        data = _read_maybe_gzip(path)
        if sha256_bytes(data) == bench.sha256:
            return data, kind, str(path)
        log.warning("%s has the wrong SHA-256 for %s; ignoring it", path, name)
        tried.append(f"{path} (checksum mismatch)")
    try:
        with urllib.request.urlopen(bench.url, timeout=timeout) as resp:  # noqa: S310
            data = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        tried.append(f"{bench.url} ({err})")
    else:
        if sha256_bytes(data) == bench.sha256:
            atomic_write_bytes(cached, data)
            return data, "url", bench.url
        tried.append(f"{bench.url} (checksum mismatch)")
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


def read_table(path: Path, timestamp_column: str) -> pd.DataFrame:
    """Read a wide CSV (optionally gzipped) or parquet file, with errors that name the file."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # pandas raises many types for malformed files
        raise DataError(f"cannot read {path}: {err}") from err
    if timestamp_column not in frame.columns:
        raise DataError(
            f"{path}: no timestamp column {timestamp_column!r} (columns: {list(frame.columns)})"
        )
    return frame


def _prepare_frame(
    frame: pd.DataFrame, timestamp_column: str, channels: tuple[str, ...] | None, origin: str
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    frame = frame.copy()
    try:
        frame[timestamp_column] = pd.to_datetime(frame[timestamp_column])
    except (ValueError, TypeError) as err:
        raise DataError(
            f"{origin}: timestamps in {timestamp_column!r} do not parse: {err}"
        ) from err
    if channels is None:
        channels = tuple(
            c
            for c in frame.columns
            if c != timestamp_column and pd.api.types.is_numeric_dtype(frame[c])
        )
    missing = [c for c in channels if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing channel columns {missing}")
    if not channels:
        raise DataError(f"{origin}: no numeric channel columns")
    bad = [c for c in channels if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise DataError(f"{origin}: channel columns are not numeric: {bad}")
    values = frame.loc[:, list(channels)].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows, cols = np.nonzero(~np.isfinite(values))
        pairs = list(zip(rows, cols, strict=True))[:5]
        examples = ", ".join(f"row {r} {channels[c]}" for r, c in pairs)
        raise DataError(
            f"{origin}: {len(rows)} NaN/inf values in the channels (e.g. {examples}); "
            "clean or impute them before training"
        )
    return frame.loc[:, [timestamp_column, *channels]], tuple(channels)


def load_series(cfg: DataConfig, *, allow_synthetic: bool = False) -> SeriesFrame:
    """Load the series that `cfg.dataset` names.

    A path is read as a file. A benchmark name is looked up in the mirror directory
    (`$LLATA_DATA_MIRROR`), the local cache and its public URL, each checksum-verified.
    `synthetic` (or any benchmark when nothing is reachable and `allow_synthetic`) gives the
    generated series, with a loud warning.

    Raises:
        DataError: the file is missing or malformed, or the benchmark is unreachable and
            synthetic data was not allowed.
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
        frame = pd.read_csv(io.BytesIO(data))
        frame, channels = _prepare_frame(frame, "date", cfg.channels, origin)
        split = bench.split if cfg.split == "auto" else cfg.split
        return SeriesFrame(frame, "date", channels, kind, origin, bench.sha256, split)
    if name == "synthetic":
        return _synthetic(cfg, freq="h", split="ett_hour")
    path = Path(name)
    frame = read_table(path, cfg.timestamp_column)
    raw = _read_maybe_gzip(path) if path.suffix != ".parquet" else path.read_bytes()
    frame, channels = _prepare_frame(frame, cfg.timestamp_column, cfg.channels, str(path))
    split = "ratio" if cfg.split == "auto" else cfg.split
    return SeriesFrame(
        frame, cfg.timestamp_column, channels, "file", str(path), sha256_bytes(raw), split
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

    The frame goes through the same checks as a file (timestamps parse, channels numeric and
    finite); `cfg.split` picks the split rule (`auto` means 70/10/20 for a frame).
    """
    frame, channels = _prepare_frame(frame, cfg.timestamp_column, cfg.channels, origin)
    frame = frame.sort_values(cfg.timestamp_column, kind="stable").reset_index(drop=True)
    digest = sha256 or sha256_bytes(frame.to_csv(index=False).encode())
    split = "ratio" if cfg.split == "auto" else cfg.split
    return SeriesFrame(frame, cfg.timestamp_column, channels, source, origin, digest, split)


def _synthetic(
    cfg: DataConfig, *, freq: str, split: Literal["ett_hour", "ett_minute", "ratio"]
) -> SeriesFrame:
    n_rows = 17420 if split != "ett_minute" else 69680
    frame = synthetic_frame(n_rows, freq=freq)
    frame, channels = _prepare_frame(frame, "date", cfg.channels, "synthetic")
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
