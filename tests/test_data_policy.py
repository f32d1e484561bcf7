"""Data tests: the one reader and the one data policy, on small generated damaged files.

Each kind of damage found in the data-trust corpus (issue 17) has a test that writes a
small file with it and checks that the reader, the validation suite, training and
`llata validate PATH` refuse it, naming the line and the column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from features.frame import DataLoadError, FrameSpec, load_frame
from features.validation import Check, ValidationReport, validate_frame
from flows.params import ValidationParams
from llata_core.cli import main
from llata_core.config import DataConfig
from llata_core.data import (
    GAP_FILL,
    MAX_NAN_FRACTION,
    DataError,
    fill_gaps,
    load_series,
    read_table,
)

ROWS = 60
SPEC = FrameSpec(min_rows=24)


def make_frame(rows: int = ROWS) -> pd.DataFrame:
    """Hourly timestamps and two varying channels, the last one named like ETTh1's."""
    steps = np.arange(rows, dtype=np.float64)
    return pd.DataFrame(
        {
            "date": pd.date_range("2024-01-01", periods=rows, freq="h").strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "HUFL": np.round(np.sin(steps / 3) * 5 + 10, 3),
            "OT": np.round(np.cos(steps / 5) * 3 + 20, 3),
        }
    )


def write_lines(path: Path, frame: pd.DataFrame, edit: dict[int, str] | None = None) -> Path:
    """Write `frame` as CSV text; `edit` replaces whole file lines (1-based, header is 1)."""
    lines = frame.to_csv(index=False).splitlines()
    for number, text in (edit or {}).items():
        lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def by_check(report: ValidationReport, check: Check) -> list:
    return [f for f in report.failures if f.check is check]


def validate_file(path: Path, spec: FrameSpec = SPEC) -> ValidationReport:
    return validate_frame(load_frame(path, "date"), spec)


# --------------------------------------------------------------------------- ragged rows


def test_a_row_with_a_missing_field_is_refused_naming_its_line(tmp_path: Path) -> None:
    # Before: pandas read the missing field as NaN, which fit under max_nan_fraction.
    path = write_lines(tmp_path / "short.csv", make_frame(), {7: "2024-01-01 05:00:00,12.5"})

    with pytest.raises(DataLoadError, match=r"1 row\(s\) do not have the header's 3 fields"):
        load_frame(path, "date")
    with pytest.raises(DataLoadError, match=r"short\.csv.*\(line 7 has 2\)"):
        load_frame(path, "date")
    with pytest.raises(DataError, match=r"line 7 has 2"):  # training reads it the same way
        load_series(DataConfig(dataset=str(path), input_size=8, horizon=4))


def test_a_row_with_an_extra_field_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "long.csv", make_frame(), {12: "2024-01-01 10:00:00,1.0,2.0,3.0"})

    with pytest.raises(DataLoadError, match=r"\(line 12 has 4\)"):
        load_frame(path, "date")


def test_many_ragged_rows_are_counted_after_the_first_few(tmp_path: Path) -> None:
    edits = {line: "2024-01-01 00:00:00,1.0" for line in range(10, 18)}
    path = write_lines(tmp_path / "ragged.csv", make_frame(), edits)

    with pytest.raises(DataLoadError, match=r"8 row\(s\).*line 14 has 2 and 3 more"):
        load_frame(path, "date")


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    # pandas would silently rename the second one 'OT.1'.
    path = write_lines(tmp_path / "twice.csv", make_frame(), {1: "date,OT,OT"})

    with pytest.raises(DataLoadError, match=r"line 1\) names column 'OT' twice \(fields 2 and 3"):
        load_frame(path, "date")


def test_bytes_that_are_not_utf8_name_their_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "latin1.csv", make_frame())
    raw = path.read_bytes().splitlines(keepends=True)
    raw[4] = raw[4].replace(b"2024", b"2024\xe9")
    path.write_bytes(b"".join(raw))

    with pytest.raises(DataLoadError, match=r"line 5 is not UTF-8 text"):
        load_frame(path, "date")


# --------------------------------------------------------------------------- bad cells


def test_one_bad_cell_is_named_by_line_column_and_value(tmp_path: Path) -> None:
    frame = make_frame()
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[40, "OT"] = "abc"  # row 40 is line 42
    path = write_lines(tmp_path / "abc.csv", frame)

    for spec in (SPEC, FrameSpec(min_rows=24, channels=("HUFL", "OT"))):
        report = validate_file(path, spec)
        # The damaged column is still a channel, not dropped as text.
        assert report.channels == ("HUFL", "OT") and report.ignored_columns == ()
        [failure] = report.failures
        assert failure.check is Check.NUMERIC_CHANNEL and failure.column == "OT"
        # Before: "holds 17420 non-numeric value(s)", with valid numbers as examples.
        assert "holds 1 non-numeric value(s) in 60 rows" in failure.message
        assert "line 42, column 'OT': 'abc'" in failure.message
        [example] = failure.examples
        assert (example.index, example.line, example.values["OT"]) == (40, 42, "abc")
        assert "index 40 (line 42)" in failure.describe()


def test_many_bad_cells_show_a_few_and_a_count(tmp_path: Path) -> None:
    frame = make_frame()
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[10:17, "OT"] = "n/a?"
    path = write_lines(tmp_path / "many.csv", frame)

    [failure] = validate_file(path).failures

    assert "holds 8 non-numeric value(s)" in failure.message
    assert "line 12, column 'OT': 'n/a?'" in failure.message
    assert failure.message.endswith("and 3 more")
    assert len(failure.examples) == 5


def test_training_refuses_the_bad_cell_at_the_same_place(tmp_path: Path) -> None:
    frame = make_frame()
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[40, "OT"] = "abc"
    path = write_lines(tmp_path / "abc.csv", frame)

    with pytest.raises(
        DataError, match=r"1 channel cell\(s\) are not numbers: line 42, column 'OT': 'abc'"
    ):
        load_series(DataConfig(dataset=str(path), input_size=8, horizon=4))


def test_lines_stay_right_after_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    frame = make_frame(30).assign(note="")
    frame["note"] = frame["note"].astype(object)
    frame.loc[3, "note"] = "two\nlines"  # row 3 spans lines 5-6
    frame["OT"] = frame["OT"].astype(object)
    frame.loc[20, "OT"] = "abc"
    text = frame.to_csv(index=False).replace("\n2024-01-01 10:", "\n\n2024-01-01 10:")
    path = tmp_path / "shifted.csv"
    path.write_text(text, encoding="utf-8")
    # header 1, rows 0-2 on 2-4, row 3 on 5-6, rows 4-9 on 7-12, a blank line 13, row 10
    # on 14: row 20 is on line 24.

    report = validate_file(path)

    [failure] = report.failures
    assert "line 24, column 'OT': 'abc'" in failure.message
    assert report.ignored_columns == ("note",)


# --------------------------------------------------------------------------- NaN


def test_nan_follows_one_rule_in_validation_and_training(tmp_path: Path) -> None:
    frame = make_frame(200)
    frame.loc[[0, 50], "OT"] = np.nan  # 1% of 200 rows: at the limit of the default share
    path = write_lines(tmp_path / "gaps.csv", frame)

    report = validate_file(path)
    assert report.success and report.nan_cells == 2
    assert report.to_dict()["nan_policy"].endswith(GAP_FILL)
    series = load_series(DataConfig(dataset=str(path), input_size=8, horizon=4))
    assert series.filled_values == 2
    expected, filled = fill_gaps(read_table(path, "date"), ["HUFL", "OT"], origin="x")
    assert filled == 2
    np.testing.assert_array_equal(series.frame["OT"], expected["OT"])
    ot = series.frame["OT"]
    assert ot[0] == ot[1] and ot[50] == ot[49]  # backward at the start, forward elsewhere

    frame.loc[[0, 50, 51], "OT"] = np.nan  # 1.5%: over the share, refused by both
    write_lines(path, frame)
    [failure] = validate_file(path).failures
    assert failure.check is Check.NAN_SHARE
    assert [e.line for e in failure.examples] == [2, 52, 53]
    with pytest.raises(DataError, match=r"'OT' 3 of 200 \(1.50%; first at line 2, line 52"):
        load_series(DataConfig(dataset=str(path), input_size=8, horizon=4))


def test_one_nan_threshold_default() -> None:
    assert FrameSpec(min_rows=2).max_nan_fraction == MAX_NAN_FRACTION
    assert ValidationParams().max_nan_fraction == MAX_NAN_FRACTION


# --------------------------------------------------------------------------- dead channels


def test_a_constant_channel_is_refused_by_default(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "dead.csv", make_frame().assign(OT=7.5))

    report = validate_file(path)

    [failure] = report.failures
    assert failure.check is Check.CONSTANT_CHANNEL and failure.column == "OT"
    assert "is constant: all 60 values are 7.5" in failure.message
    assert "constant_channels: warn" in failure.message


def test_a_near_constant_channel_is_refused_too() -> None:
    frame = make_frame()
    frame["OT"] = 1000.0 + 1e-6 * np.sin(np.arange(ROWS))  # float noise on a stuck value

    [failure] = validate_frame(frame, SPEC).failures

    assert failure.check is Check.CONSTANT_CHANNEL
    assert "is near-constant: standard deviation" in failure.message


def test_constant_channels_warn_turns_the_failure_into_a_warning(tmp_path: Path) -> None:
    frame = make_frame().assign(OT=7.5)

    report = validate_frame(frame, FrameSpec(min_rows=24, constant_channels="warn"))

    assert report.success and report.failures == []
    [warning] = report.warnings
    assert warning.check is Check.CONSTANT_CHANNEL and warning.column == "OT"
    assert report.to_dict()["warnings"][0]["column"] == "OT"
    report.raise_for_failures()  # no-op: warnings do not fail the frame


def test_the_constant_channels_setting_is_validated() -> None:
    assert ValidationParams().constant_channels == "error"
    assert ValidationParams(constant_channels="warn").constant_channels == "warn"
    with pytest.raises(ValidationError):
        ValidationParams(constant_channels="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="constant_channels must be 'error' or 'warn'"):
        FrameSpec(min_rows=24, constant_channels="ignore")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- ignored columns


def test_columns_that_are_not_channels_are_listed(tmp_path: Path) -> None:
    frame = make_frame().assign(extra=np.arange(ROWS) * 1.5, note="text")
    path = write_lines(tmp_path / "extra.csv", frame)

    inferred = validate_file(path)
    configured = validate_file(path, FrameSpec(min_rows=24, channels=("HUFL", "OT")))

    assert inferred.channels == ("HUFL", "OT", "extra")
    assert inferred.ignored_columns == ("note",)
    # Before: with configured channels, the other columns were dropped without a word.
    assert configured.success and configured.ignored_columns == ("extra", "note")
    assert configured.to_dict()["ignored_columns"] == ["extra", "note"]
    assert "ignored columns (not channels): ['extra', 'note']" in configured.describe()


# --------------------------------------------------------------------------- llata validate


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose params validate 2-column hourly data; its raw file is clean."""
    root = tmp_path / "project"
    raw = root / "data" / "raw" / "series.csv"
    raw.parent.mkdir(parents=True)
    write_lines(raw, make_frame())
    params = {
        "data": {"input_size": 8, "horizon": 4},
        "pipeline": {
            "dataset": "sine",
            "raw_data": "data/raw/series.csv",
            "series_id": "sine",
            "split": "ratio",
            "validation": {"channels": None, "frequency": "h"},
        },
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root


def run_validate(*args: str) -> int:
    return main(["validate", *args])


def test_validate_path_checks_any_file_outside_the_project(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = str(project / "params.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    good = write_lines(elsewhere / "good.csv", make_frame().assign(note="x"))
    make_frame().to_parquet(elsewhere / "good.parquet", index=False)

    assert run_validate(str(good), "--params", params) == 0
    out, err = capsys.readouterr()
    assert f"{good}: valid (60 rows, 2 channels, frequency h)" in out
    assert "ignored columns (not channels): ['note']" in err
    assert run_validate(str(elsewhere / "good.parquet"), "--params", params) == 0
    assert not (project / "reports").exists()  # PATH writes no report unless asked

    damaged = make_frame()
    damaged["OT"] = damaged["OT"].astype(object)
    damaged.loc[40, "OT"] = "abc"
    bad = write_lines(elsewhere / "abc.csv", damaged)
    capsys.readouterr()
    assert run_validate(str(bad), "--params", params, "--report-dir", str(tmp_path / "r")) == 1
    err = capsys.readouterr().err
    assert "[numeric_channel]" in err and "line 42, column 'OT': 'abc'" in err
    document = json.loads((tmp_path / "r" / "validation.json").read_text())
    assert document["success"] is False
    assert document["failures"][0]["examples"][0]["line"] == 42
    assert (tmp_path / "r" / "data_docs" / "index.html").is_file()

    ragged = write_lines(elsewhere / "short.csv", make_frame(), {7: "2024-01-01 05:00:00,1"})
    assert run_validate(str(ragged), "--params", params) == 1
    assert "line 7 has 2" in capsys.readouterr().err
    assert run_validate(str(elsewhere / "absent.csv"), "--params", params) == 1
    assert "data file not found" in capsys.readouterr().err


def test_validate_without_path_still_checks_the_raw_data(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = str(project / "params.yaml")

    assert run_validate("--params", params) == 0
    assert "data/raw/series.csv: valid" in capsys.readouterr().out
    report = json.loads((project / "reports/validation/validation.json").read_text())
    assert report["success"] is True and report["ignored_columns"] == []

    assert run_validate("--params", params, "--report-dir", str(project / "x")) == 2
    assert "--report-dir goes with PATH" in capsys.readouterr().err
