"""Data tests: split borders, window counts, scaling, sources and bad input."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from llata_core.config import DataConfig
from llata_core.data import (
    BENCHMARKS,
    DataError,
    Scaler,
    SeriesFrame,
    WindowDataset,
    bundled_path,
    fetch_benchmark_bytes,
    file_sha256,
    load_series,
    make_splits,
    split_borders,
    synthetic_frame,
)
from tests.conftest import SHARED_DATA, sine_frame

# llata_core/datasets/README.md; the mirror's SHA256SUMS lists the same bytes.
BUNDLED_ETTH1_GZ_SHA256 = "6e5c7510ec29ece805c5d9279dc8c2315b94cf0f08b8fc1a0ee429ba1b322fea"


def _ett_like(n_rows: int = 17420) -> SeriesFrame:
    frame = synthetic_frame(n_rows, 7)
    channels = tuple(c for c in frame.columns if c != "date")
    return SeriesFrame(frame, "date", channels, "synthetic", "test", "x", "ett_hour")


def test_etth1_window_counts_input96_horizon96() -> None:
    splits = make_splits(_ett_like(), DataConfig(input_size=96, horizon=96))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8449, 2785, 2785)
    assert splits.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}


def test_ett_minute_borders_are_four_times_hourly() -> None:
    borders = split_borders(69680, 96, "ett_minute")
    assert borders["train"] == (0, 34560)
    assert borders["test"] == (46080 - 96, 57600)


def test_ratio_split_is_70_10_20() -> None:
    borders = split_borders(1000, 10, "ratio")
    assert borders == {"train": (0, 700), "val": (690, 800), "test": (790, 1000)}


def test_scaler_is_fitted_on_training_rows_only() -> None:
    series = _ett_like()
    values = series.values.copy()
    splits = make_splits(series, DataConfig(input_size=96, horizon=96))
    np.testing.assert_allclose(splits.scaler.mean, values[:8640].mean(axis=0), rtol=1e-5)
    assert not np.allclose(splits.scaler.mean, values.mean(axis=0), rtol=1e-3)
    x, _ = splits.train[0]
    np.testing.assert_allclose(
        x.numpy(), (values[:96] - splits.scaler.mean) / splits.scaler.std, rtol=1e-4, atol=1e-5
    )


def test_few_shot_keeps_the_first_windows() -> None:
    series = _ett_like()
    full = make_splits(series, DataConfig(input_size=96, horizon=96))
    few = make_splits(series, DataConfig(input_size=96, horizon=96, few_shot_percent=10))
    assert len(few.train) == int(8449 * 0.1)
    assert len(few.val) == len(full.val) and len(few.test) == len(full.test)
    assert all((few.train[i][0] == full.train[i][0]).all() for i in (0, len(few.train) - 1))


def test_windows_slide_by_one_step() -> None:
    ds = WindowDataset(np.arange(20, dtype=np.float32).reshape(10, 2), 3, 2)
    assert len(ds) == 6
    x, y = ds[1]
    assert x[:, 0].tolist() == [2.0, 4.0, 6.0] and y[:, 0].tolist() == [8.0, 10.0]
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(DataError, match="cannot hold one window"):
        WindowDataset(np.zeros((4, 2), dtype=np.float32), 3, 2)


def test_csv_nan_is_filled_within_the_share_and_rejected_beyond_naming_lines(
    tmp_path: Path,
) -> None:
    """One NaN rule with the validation suite: up to 1% is filled forward, more refused."""
    frame = sine_frame()
    frame.loc[17, "c1"] = np.nan  # 1 of 600 rows
    path = tmp_path / "gap.csv"
    frame.to_csv(path, index=False)
    series = load_series(DataConfig(dataset=str(path), input_size=24, horizon=8))
    assert series.filled_values == 1
    assert series.frame.loc[17, "c1"] == series.frame.loc[16, "c1"]  # forward fill

    frame.loc[17:27, "c1"] = np.nan  # 11 of 600 rows: 1.83%
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    # Row 17 is line 19 of the file: the header is line 1.
    with pytest.raises(DataError, match=r"'c1' 11 of 600 \(1.83%; first at line 19, line 20"):
        load_series(DataConfig(dataset=str(path), input_size=24, horizon=8))


def test_missing_file_and_missing_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        load_series(DataConfig(dataset=str(tmp_path / "nope.csv")))
    path = tmp_path / "x.csv"
    sine_frame().rename(columns={"date": "ts"}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no timestamp column 'date'"):
        load_series(DataConfig(dataset=str(path)))
    with pytest.raises(DataError, match=r"missing channel columns \['zz'\]"):
        load_series(DataConfig(dataset=str(path), timestamp_column="ts", channels=("zz",)))


def test_file_source_uses_ratio_split(sine_csv: Path) -> None:
    series = load_series(DataConfig(dataset=str(sine_csv)))
    assert series.source == "file" and series.split == "ratio"
    assert series.channels == ("c0", "c1", "c2")


def test_mirror_is_checksum_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(tmp_path))
    monkeypatch.setenv("LLATA_HOME", str(tmp_path / "home"))
    (tmp_path / "ETTh2.csv.gz").write_bytes(gzip.compress(b"date,a\n2020-01-01,1\n"))
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_benchmark_bytes("ETTh2")
    with pytest.raises(DataError, match="not available"):
        load_series(DataConfig(dataset="ETTh2"))  # generated data only when asked
    series = load_series(DataConfig(dataset="ETTh2"), allow_synthetic=True)
    assert series.source == "synthetic"  # loudly labelled, never silently real


def test_the_bundled_etth1_is_real_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mirror, no cache, no network: ETTh1 still loads, from the package's own copy."""
    monkeypatch.delenv("LLATA_DATA_MIRROR", raising=False)
    monkeypatch.setenv("LLATA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    path = bundled_path("ETTh1")
    assert path is not None and path.name == "ETTh1.csv.gz"
    assert file_sha256(path) == BUNDLED_ETTH1_GZ_SHA256
    series = load_series(DataConfig(dataset="ETTh1"))
    assert series.source == "bundled" and series.sha256 == BENCHMARKS["ETTh1"].sha256
    assert len(series.frame) == 17420
    # A corrupt mirror copy is skipped for the bundled one, never used.
    (tmp_path / "ETTh1.csv.gz").write_bytes(gzip.compress(b"date,a\n2020-01-01,1\n"))
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(tmp_path))
    tried: list[str] = []
    _, kind, _ = fetch_benchmark_bytes("ETTh1", tried=tried)
    assert kind == "bundled" and any("checksum mismatch" in t for t in tried)
    assert bundled_path("ETTh2") is None  # only the embedded default ships


def _no_network(*args: object, **kwargs: object) -> None:
    raise OSError("network disabled in tests")


@pytest.mark.skipif(not (SHARED_DATA / "ETTh1.csv.gz").is_file(), reason="no benchmark mirror")
def test_real_etth1_from_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(SHARED_DATA))
    series = load_series(DataConfig(dataset="ETTh1"))
    assert series.source == "mirror"
    assert series.sha256 == BENCHMARKS["ETTh1"].sha256
    assert series.channels == ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
    assert len(series.frame) == 17420
    raw = gzip.decompress((SHARED_DATA / "ETTh1.csv.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == series.sha256


def test_scaler_round_trip_and_malformed() -> None:
    values = np.random.default_rng(0).normal(size=(50, 3))
    scaler = Scaler.fit(values, ("a", "b", "c"))
    again = Scaler.from_dict(scaler.to_dict())
    np.testing.assert_allclose(again.inverse(again.transform(values)), values, atol=1e-5)
    with pytest.raises(DataError, match="malformed scaler"):
        Scaler.from_dict({"channels": ["a"], "mean": [0.0, 1.0], "std": [1.0]})


def test_series_from_frame_checks_and_sorts() -> None:
    from llata_core.data import series_from_frame

    frame = sine_frame(100).iloc[::-1]
    series = series_from_frame(frame, DataConfig(split="ratio"), origin="feast")
    assert series.frame["date"].is_monotonic_increasing and series.split == "ratio"
    frame.loc[frame.index[3], "c0"] = np.inf
    with pytest.raises(DataError, match=r"1 infinite value\(s\).*row 96, column 'c0': inf"):
        series_from_frame(frame, DataConfig(), origin="feast")
