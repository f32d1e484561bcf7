"""Data tests: the Great Expectations suite on small synthetic forecasting frames."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.validation import (
    Check,
    DataLoadError,
    DataValidationError,
    ExpectationFailure,
    FrameSpec,
    ValidationReport,
    load_frame,
    validate_frame,
)

ROWS = 48


def make_frame(rows: int = ROWS, start: str = "2024-01-01", freq: str = "h") -> pd.DataFrame:
    """An hourly frame with timestamps as text, the way load_frame returns a CSV."""
    timestamps = pd.date_range(start, periods=rows, freq=freq)
    steps = np.arange(rows, dtype=np.float64)
    return pd.DataFrame(
        {
            "date": timestamps.strftime("%Y-%m-%d %H:%M:%S"),
            "a": steps,
            "b": np.sin(steps),
        }
    )


def make_multi_frame() -> pd.DataFrame:
    """Two series, rows interleaved: only the order within a series matters."""
    north = make_frame().assign(series_id="north")
    south = make_frame().assign(series_id="south", a=lambda f: f["a"] + 100)
    return pd.concat([north, south]).sort_index(kind="stable").reset_index(drop=True)


SPEC = FrameSpec(min_rows=24)
MULTI_SPEC = FrameSpec(min_rows=24, series_column="series_id")


def by_check(report: ValidationReport) -> dict[Check, list[ExpectationFailure]]:
    grouped: dict[Check, list[ExpectationFailure]] = {}
    for failure in report.failures:
        grouped.setdefault(failure.check, []).append(failure)
    return grouped


def example_indices(failure: ExpectationFailure) -> list[object]:
    return [example.index for example in failure.examples]


def test_clean_frame_passes() -> None:
    report = validate_frame(make_frame(), SPEC)

    assert report.success, [f.describe() for f in report.failures]
    assert report.failures == []
    assert report.channels == ("a", "b")
    assert report.frequency == "h"
    assert (report.rows, report.series) == (ROWS, 1)
    report.raise_for_failures()  # no-op on success


@pytest.mark.parametrize("tz", [None, "Europe/Berlin"])
def test_datetime_timestamps_are_accepted_and_checked(tz: str | None) -> None:
    frame = make_frame()
    frame["date"] = pd.to_datetime(frame["date"]).dt.tz_localize(tz)
    assert validate_frame(frame, SPEC).success

    frame.loc[12, "date"] = frame.loc[11, "date"]

    report = validate_frame(frame, SPEC)
    assert example_indices(by_check(report)[Check.TIMESTAMP_UNIQUE][0]) == [11, 12]


def test_numbers_are_not_timestamps() -> None:
    frame = make_frame()
    frame["date"] = np.arange(ROWS) * 3600

    report = validate_frame(frame, SPEC)

    [failure] = by_check(report)[Check.TIMESTAMP_PARSEABLE]
    assert f"{ROWS} of {ROWS}" in failure.message


def test_clean_multi_series_frame_passes() -> None:
    report = validate_frame(make_multi_frame(), MULTI_SPEC)

    assert report.success, [f.describe() for f in report.failures]
    assert report.series == 2
    assert report.channels == ("a", "b")


def test_missing_column_is_reported() -> None:
    spec = FrameSpec(min_rows=24, channels=("a", "b", "c"))

    report = validate_frame(make_frame(), spec)

    assert not report.success
    [failure] = report.failures
    assert failure.check is Check.COLUMNS_PRESENT
    assert failure.expectation == "expect_table_columns_to_match_set"
    assert "['c']" in failure.message


def test_non_numeric_channel_is_reported_with_the_bad_value() -> None:
    frame = make_frame()
    frame["b"] = frame["b"].astype(object)
    frame.loc[5, "b"] = "oops"

    report = validate_frame(frame, FrameSpec(min_rows=24, channels=("a", "b")))

    [failure] = by_check(report)[Check.NUMERIC_CHANNEL]
    assert failure.column == "b"
    assert example_indices(failure) == [5]
    assert failure.examples[0].values["b"] == "oops"


def test_inferred_channels_skip_non_numeric_columns_visibly() -> None:
    frame = make_frame().assign(note="text")

    report = validate_frame(frame, SPEC)

    assert report.success
    assert report.channels == ("a", "b")
    assert report.ignored_columns == ("note",)


def test_frame_without_any_channel_fails() -> None:
    report = validate_frame(make_frame()[["date"]], SPEC)

    assert Check.HAS_CHANNELS in by_check(report)


def test_unparseable_timestamp_is_reported_with_the_raw_value() -> None:
    frame = make_frame()
    frame.loc[7, "date"] = "not a date"

    report = validate_frame(frame, SPEC)

    [failure] = by_check(report)[Check.TIMESTAMP_PARSEABLE]
    assert example_indices(failure) == [7]
    assert failure.examples[0].values["date"] == "not a date"


def test_integer_steps_are_refused_with_how_to_stamp_them() -> None:
    frame = make_multi_frame()  # a long file of many series indexed by integer steps
    frame["date"] = frame.groupby("series_id").cumcount()

    report = validate_frame(frame, MULTI_SPEC)

    [failure] = by_check(report)[Check.TIMESTAMP_PARSEABLE]
    assert "in 'date' are numbers, not timestamps" in failure.message
    assert "start plus step x frequency" in failure.message


def test_non_increasing_timestamps_are_reported() -> None:
    frame = make_frame()
    frame.loc[[10, 11], "date"] = frame.loc[[11, 10], "date"].to_numpy()

    report = validate_frame(frame, SPEC)

    [failure] = by_check(report)[Check.TIMESTAMP_INCREASING]
    assert failure.expectation == "expect_column_values_to_be_increasing"
    assert example_indices(failure) == [11]
    assert Check.TIMESTAMP_UNIQUE not in by_check(report)


def test_duplicate_timestamps_are_reported() -> None:
    frame = make_frame()
    frame.loc[12, "date"] = frame.loc[11, "date"]

    report = validate_frame(frame, SPEC)

    [failure] = by_check(report)[Check.TIMESTAMP_UNIQUE]
    assert failure.expectation == "expect_column_values_to_be_unique"
    assert example_indices(failure) == [11, 12]


def test_gap_breaks_the_inferred_frequency() -> None:
    frame = make_frame().drop(index=20)  # index labels keep their gap

    report = validate_frame(frame, SPEC)

    [failure] = report.failures
    assert failure.check is Check.REGULAR_FREQUENCY
    assert failure.expectation == "expect_column_pair_values_to_be_equal"
    assert example_indices(failure) == [21]
    values = failure.examples[0].values
    assert values["expected_timestamp"] == "2024-01-01T20:00:00"
    assert values["date"] == "2024-01-01 21:00:00"
    assert "'h'" in failure.message


def test_configured_frequency_is_enforced() -> None:
    spec = FrameSpec(min_rows=24, frequency="30min")

    report = validate_frame(make_frame(), spec)

    [failure] = report.failures
    assert failure.check is Check.REGULAR_FREQUENCY
    assert report.frequency == "30min"
    assert f"{ROWS - 1} timestamp(s)" in failure.message
    assert len(failure.examples) == 5


def test_calendar_frequency_is_inferred() -> None:
    report = validate_frame(make_frame(rows=30, freq="MS"), SPEC)

    assert report.success, [f.describe() for f in report.failures]
    assert report.frequency == "MS"


def test_nan_share_over_threshold_is_reported() -> None:
    frame = make_frame()
    frame.loc[[3, 9], "a"] = np.nan  # 2 of 48 rows: 4.2%

    report = validate_frame(frame, SPEC)

    [failure] = report.failures
    assert failure.check is Check.NAN_SHARE
    assert failure.column == "a"
    assert example_indices(failure) == [3, 9]
    assert failure.examples[0].values["a"] == "NaN"
    assert "4.17% NaN" in failure.message
    # The same frame is fine under a looser threshold: the check measures, it is not fixed.
    assert validate_frame(frame, FrameSpec(min_rows=24, max_nan_fraction=0.05)).success


def test_infinite_values_are_reported() -> None:
    frame = make_frame()
    frame.loc[3, "a"] = np.inf
    frame.loc[4, "b"] = -np.inf

    report = validate_frame(frame, SPEC)

    failures = by_check(report)[Check.FINITE_VALUES]
    assert [(f.column, example_indices(f)) for f in failures] == [("a", [3]), ("b", [4])]
    assert failures[1].examples[0].values["b"] == "-inf"
    assert set(by_check(report)) == {Check.FINITE_VALUES}


def test_too_few_rows_are_reported() -> None:
    report = validate_frame(make_frame(), FrameSpec(min_rows=ROWS + 1))

    [failure] = report.failures
    assert failure.check is Check.MIN_ROWS
    assert f"the frame has {ROWS} rows" in failure.message


def test_per_series_checks_name_the_series() -> None:
    frame = make_multi_frame()
    south = frame.index[frame["series_id"] == "south"]
    frame.loc[south[12], "date"] = frame.loc[south[11], "date"]  # duplicate within south
    short = make_frame(rows=5).assign(series_id="tiny")
    frame = pd.concat([frame, short], ignore_index=True)

    report = validate_frame(frame, MULTI_SPEC)

    failures = by_check(report)
    [unique] = failures[Check.TIMESTAMP_UNIQUE]
    assert unique.expectation == "expect_compound_columns_to_be_unique"
    assert example_indices(unique) == [south[11], south[12]]
    assert {e.values["series_id"] for e in unique.examples} == {"south"}
    [increasing] = failures[Check.TIMESTAMP_INCREASING]
    assert example_indices(increasing) == [south[12]]
    [rows] = failures[Check.MIN_ROWS]
    assert "'tiny'" in rows.message
    assert {e.values["series_id"] for e in rows.examples} == {"tiny"}


def test_error_names_every_failure_with_examples() -> None:
    frame = make_frame()
    frame.loc[3, "a"] = np.inf
    frame.loc[7, "date"] = "not a date"

    report = validate_frame(frame, SPEC)
    with pytest.raises(DataValidationError) as raised:
        report.raise_for_failures()

    text = str(raised.value)
    assert raised.value.report is report
    assert "expect_column_values_to_not_be_in_set on 'a'" in text
    assert "expect_column_values_to_not_be_null" in text
    assert "index 3:" in text and "index 7:" in text and '"not a date"' in text


def test_report_dir_gets_json_and_data_docs(tmp_path: Path) -> None:
    frame = make_frame()
    frame.loc[3, "a"] = np.inf

    report = validate_frame(frame, SPEC, report_dir=tmp_path)
    report_again = validate_frame(make_frame(), SPEC, report_dir=tmp_path)

    document = json.loads((tmp_path / "validation.json").read_text())
    assert document["success"] is True  # the second run replaced the first
    assert document["spec"]["min_rows"] == 24
    assert report.data_docs_index == tmp_path / "data_docs" / "index.html"
    assert report_again.data_docs_index is not None and report_again.data_docs_index.is_file()
    pages = list((tmp_path / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 1
    page = pages[0].read_text()
    assert "forecasting_frame" in page and "Succeeded" in page  # the passing second run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data_docs", "validation.json"]


def test_failed_report_json_lists_failures(tmp_path: Path) -> None:
    frame = make_frame()
    frame.loc[[3, 9], "a"] = np.nan

    validate_frame(frame, SPEC, report_dir=tmp_path)

    document = json.loads((tmp_path / "validation.json").read_text())
    assert document["success"] is False
    [failure] = document["failures"]
    assert failure["check"] == "nan_share"
    assert [e["index"] for e in failure["examples"]] == [3, 9]


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("frame.csv", lambda f, p: f.to_csv(p, index=False)),
        ("frame.csv.gz", lambda f, p: f.to_csv(p, index=False)),
        ("frame.parquet", lambda f, p: f.to_parquet(p, index=False)),
    ],
)
def test_load_frame_reads_supported_formats(
    tmp_path: Path, name: str, write: Callable[[pd.DataFrame, Path], None]
) -> None:
    frame = make_frame()
    write(frame, tmp_path / name)

    loaded = load_frame(tmp_path / name, "date")

    pd.testing.assert_frame_equal(loaded, frame)


def test_load_frame_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        load_frame(tmp_path / "absent.csv", "date")


def test_load_frame_names_the_unparseable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(b"date,a\n2024-01-01,1\n")[:-8])  # truncated
    with pytest.raises(DataLoadError, match="broken.csv.gz"):
        load_frame(broken, "date")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataLoadError, match="junk.parquet"):
        load_frame(junk, "date")


def test_spec_rejects_a_bad_frequency_alias() -> None:
    with pytest.raises(ValueError, match="not a pandas offset alias"):
        FrameSpec(min_rows=24, frequency="fortnightly")
