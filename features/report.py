"""The validation report: unmet expectations as messages a person can act on.

`to_failure` turns a GX result into an `ExpectationFailure`: a sentence built from GX's
numbers, and the first offending rows with their index, their line in the CSV file when
known, and the values that show the problem. `ValidationReport` gathers them and is what
`validation.json` holds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationValidationResult,
)
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from pandas.api import types as ptypes

from features.frame import FrameSpec
from features.suite import (
    CHECK_KEY,
    EXPECTED_TIMESTAMP,
    PREVIOUS_TIMESTAMP,
    SERIES_ROWS,
    Check,
    PreparedFrame,
    is_helper,
)
from llata_core.policy import GAP_FILL
from llata_core.tables import describe_cells

MAX_EXAMPLES: Final = 5
"""Most offending rows an unmet expectation lists; GX is asked for no more."""
# How helper columns are named in example rows (the parsed timestamp is never shown: the
# raw value is what a person can find in the file).
_HELPER_LABELS: Final = {
    PREVIOUS_TIMESTAMP: "previous_timestamp",
    EXPECTED_TIMESTAMP: "expected_timestamp",
    SERIES_ROWS: "series_rows",
}


@dataclass(frozen=True)
class BadRow:
    """One row that broke an expectation: its index label in the input frame, its line in
    the CSV file it was read from (when known), and the values that show why (timestamp,
    series id, the offending column, helper values)."""

    index: Any
    values: dict[str, Any]
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"index": self.index, "line": self.line, "values": self.values}

    def describe(self) -> str:
        """`index 5 (line 7): {...}`, the line only when known."""
        line = f" (line {self.line})" if self.line is not None else ""
        return f"index {self.index!r}{line}: {json.dumps(self.values)}"


@dataclass(frozen=True)
class ExpectationFailure:
    """One unmet expectation.

    Attributes:
        check: The property of the frame that does not hold.
        expectation: The GX expectation type that found it.
        column: The column it concerns, if any (for per-series checks, a helper column).
        message: What is wrong, for a person.
        examples: Up to `MAX_EXAMPLES` offending rows; empty for table-level expectations.
    """

    check: Check
    expectation: str
    column: str | None
    message: str
    examples: list[BadRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "check": self.check.value,
            "expectation": self.expectation,
            "column": self.column,
            "message": self.message,
            "examples": [example.to_dict() for example in self.examples],
        }

    def describe(self) -> str:
        """Multi-line text: the expectation, the message, one line per example."""
        where = f" on {self.column!r}" if self.column else ""
        lines = [f"- [{self.check.value}] {self.expectation}{where}: {self.message}"]
        lines += [f"    {example.describe()}" for example in self.examples]
        return "\n".join(lines)


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating a frame.

    Attributes:
        success: Whether every expectation held, warnings aside.
        failures: The unmet expectations, in suite order.
        channels: The channel columns validated.
        frequency: The frequency the grid check used (configured or inferred), as a pandas
            alias; None when it could not be determined.
        rows: Rows in the frame.
        series: Distinct series in the frame.
        ignored_columns: Columns that are neither channels nor the timestamp/series column
            (not numeric, or not among the configured channels): nothing downstream uses
            them, and the report says so.
        warnings: Unmet expectations of warning severity (a constant channel under
            `constant_channels="warn"`); they do not fail the frame.
        nan_cells: NaN cells in the channels, within the allowed share: the features stage
            and training fill them (`GAP_FILL`).
        data_docs_index: The Data Docs index page, when a report directory was given.
    """

    success: bool
    failures: list[ExpectationFailure]
    channels: tuple[str, ...]
    frequency: str | None
    rows: int
    series: int
    ignored_columns: tuple[str, ...] = ()
    warnings: list[ExpectationFailure] = field(default_factory=list)
    nan_cells: int = 0
    data_docs_index: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to `validation.json`."""
        return {
            "success": self.success,
            "failures": [failure.to_dict() for failure in self.failures],
            "warnings": [warning.to_dict() for warning in self.warnings],
            "channels": list(self.channels),
            "frequency": self.frequency,
            "rows": self.rows,
            "series": self.series,
            "ignored_columns": list(self.ignored_columns),
            "nan_cells": self.nan_cells,
            "nan_policy": f"NaN within the allowed share is filled: {GAP_FILL}",
            "data_docs_index": str(self.data_docs_index) if self.data_docs_index else None,
        }

    def describe(self) -> str:
        """Multi-line text: every failure and warning with examples, and ignored columns."""
        lines = [failure.describe() for failure in self.failures]
        if self.warnings:
            lines.append(f"warnings ({len(self.warnings)}, not failures):")
            lines += [warning.describe() for warning in self.warnings]
        if self.ignored_columns:
            lines.append(f"ignored columns (not channels): {list(self.ignored_columns)}")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise `DataValidationError` naming every failure, unless the frame passed."""
        if not self.success:
            raise DataValidationError(self)


class DataValidationError(ValueError):
    """The frame broke the suite; the message lists every failure with examples."""

    def __init__(self, report: ValidationReport) -> None:
        self.report = report
        header = f"frame validation failed: {len(report.failures)} expectation(s) not met"
        if not report.failures:
            header += " (GX reported failure without a failing expectation)"
        super().__init__("\n".join([header, report.describe()]).rstrip("\n"))


def expectation_config(result: ExpectationValidationResult) -> ExpectationConfiguration:
    if result.expectation_config is None:
        raise RuntimeError("GX returned a result without its expectation configuration")
    return result.expectation_config


def _exception_message(result: ExpectationValidationResult) -> str | None:
    """GX's error text if the expectation raised instead of evaluating.

    `exception_info` is flat for an expectation-level error and keyed by metric for a
    metric-level one.
    """
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else list(info.values())
    for candidate in candidates:
        if isinstance(candidate, dict) and candidate.get("raised_exception"):
            return str(candidate.get("exception_message"))
    return None


# --------------------------------------------------------------------------- reporting


def to_failure(
    result: ExpectationValidationResult, spec: FrameSpec, prepared: PreparedFrame
) -> ExpectationFailure:
    config = expectation_config(result)
    check = Check(config.meta[CHECK_KEY])
    kwargs = config.kwargs
    column = kwargs.get("column") or kwargs.get("column_A")
    details = dict(result.result or {})
    error = _exception_message(result)
    if error is not None:
        message = f"GX could not evaluate it: {error}"
    else:
        message = _message(check, details, kwargs, spec, prepared)
    return ExpectationFailure(
        check=check,
        expectation=config.type,
        column=column,
        message=message,
        examples=_examples(check, details, kwargs, spec, prepared),
    )


def _message(
    check: Check,
    details: dict[str, Any],
    kwargs: dict[str, Any],
    spec: FrameSpec,
    prepared: PreparedFrame,
) -> str:
    """A sentence for a person, from the numbers in GX's result."""
    bad, total = details.get("unexpected_count"), details.get("element_count")
    column = kwargs.get("column")
    ts = spec.timestamp_column
    per_series = " of the same series" if prepared.multi_series else ""
    if check is Check.COLUMNS_PRESENT:
        missing = details.get("details", {}).get("mismatched", {}).get("missing", [])
        observed = details.get("observed_value", [])
        present = [c for c in observed if not is_helper(c)]
        return f"missing column(s) {missing}; the frame has {present}"
    if check is Check.HAS_CHANNELS:
        return f"no channel column besides {[ts, spec.series_column]!r}"
    if check is Check.NUMERIC_CHANNEL:
        if "observed_value" in details:
            return f"channel {column!r} has dtype {details['observed_value']!r}, not a number"
        positions = [
            int(p)
            for p in details.get("partial_unexpected_index_list") or []
            if isinstance(p, int | np.integer)
        ]
        cells = (
            (prepared.labels[p], str(column), jsonable(prepared.data[column].iloc[p]))
            for p in positions
        )
        shown = describe_cells(cells, prepared.source, bad or len(positions))
        return f"channel {column!r} holds {bad} non-numeric value(s) in {total} rows: {shown}"
    if check is Check.NAN_SHARE:
        share = bad / total if total else 0.0
        return (
            f"channel {column!r} is {share:.2%} NaN ({bad} of {total} rows); "
            f"at most {spec.max_nan_fraction:.2%} is allowed"
        )
    if check is Check.FINITE_VALUES:
        return f"channel {column!r} holds {bad} infinite value(s)"
    if check is Check.CONSTANT_CHANNEL:
        values = prepared.data[column].dropna()
        if values.nunique() == 1:
            what = f"is constant: all {len(values)} values are {jsonable(values.iloc[0])!r}"
        else:
            what = (
                f"is near-constant: standard deviation {details.get('observed_value') or 0.0:.3g}, "
                f"at most {kwargs['min_value']:.3g} for values of this size"
            )
        hint = (
            ""
            if spec.constant_channels == "warn"
            else " (set pipeline.validation.constant_channels: warn to accept it)"
        )
        return f"channel {column!r} {what}; a dead sensor carries no signal{hint}"
    if check is Check.TIMESTAMP_PARSEABLE:
        if ts in prepared.data.columns and ptypes.is_numeric_dtype(prepared.data[ts]):
            return (
                f"{bad} of {total} value(s) in {ts!r} are numbers, not timestamps: a number "
                "without a unit is ambiguous, "
                "and the feature store keys every row on its event time; write each row's "
                "time (a start plus step x frequency, as `llata data pull` does for M4) "
                "before validating"
            )
        return f"{bad} of {total} value(s) in {ts!r} are missing or not parseable timestamps"
    if check is Check.SERIES_ID_PRESENT:
        return f"{bad} row(s) have no series id in {column!r}"
    if check is Check.TIMESTAMP_INCREASING:
        return f"{bad} timestamp(s) in {ts!r} are not strictly after the previous row{per_series}"
    if check is Check.TIMESTAMP_UNIQUE:
        return f"{bad} row(s) share their timestamp with another row{per_series}"
    if check is Check.REGULAR_FREQUENCY:
        freq = prepared.offset.freqstr if prepared.offset is not None else "?"
        how = "inferred" if prepared.frequency_inferred else "configured"
        return (
            f"{bad} timestamp(s) are off the regular {freq!r} grid ({how} frequency): each "
            f"must be the previous timestamp{per_series} plus one step"
        )
    if check is Check.MIN_ROWS:
        if not prepared.multi_series:
            return (
                f"the frame has {details.get('observed_value')} rows; at least "
                f"{spec.min_rows} (input_size + horizon) are needed"
            )
        data = prepared.data
        short = data.loc[data[SERIES_ROWS] < spec.min_rows, spec.series_column].unique()
        shown = ", ".join(repr(jsonable(s)) for s in short[:MAX_EXAMPLES])
        more = f" and {len(short) - MAX_EXAMPLES} more" if len(short) > MAX_EXAMPLES else ""
        return (
            f"{len(short)} series have fewer than {spec.min_rows} rows "
            f"(input_size + horizon): {shown}{more}"
        )
    raise AssertionError(f"no message for check {check}")


def _examples(
    check: Check,
    details: dict[str, Any],
    kwargs: dict[str, Any],
    spec: FrameSpec,
    prepared: PreparedFrame,
) -> list[BadRow]:
    """The first offending rows GX reported, with the values that show the problem."""
    positions = details.get("partial_unexpected_index_list") or []
    data = prepared.data
    columns = [c for c in (spec.timestamp_column, spec.series_column) if c and c in data.columns]
    column = kwargs.get("column")
    if column is not None and not is_helper(column) and column not in columns:
        columns.append(column)
    helpers = {
        Check.TIMESTAMP_INCREASING: [PREVIOUS_TIMESTAMP],
        Check.REGULAR_FREQUENCY: [PREVIOUS_TIMESTAMP, EXPECTED_TIMESTAMP],
        Check.MIN_ROWS: [SERIES_ROWS],
    }.get(check, [])
    columns += [h for h in helpers if h in data.columns]
    examples = []
    for position in positions[:MAX_EXAMPLES]:
        if not isinstance(position, int | np.integer):
            continue  # GX gives dicts when unexpected_index_column_names is set; not here.
        row = data.iloc[int(position)]
        values = {_HELPER_LABELS.get(c, str(c)): jsonable(row[c]) for c in columns}
        examples.append(
            BadRow(
                index=jsonable(prepared.labels[int(position)]),
                values=values,
                line=prepared.line(int(position)),
            )
        )
    return examples


def jsonable(value: Any) -> Any:
    """A JSON-safe stand-in for a cell or GX value: NaN/inf as text, times as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or value is pd.NaT:
        return None if value is None else "NaT"
    if isinstance(value, np.datetime64 | np.timedelta64):
        value = pd.Timestamp(value) if isinstance(value, np.datetime64) else pd.Timedelta(value)
        if value is pd.NaT:
            return "NaT"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, bool | int | str):
        return value
    return str(value)
