"""Great Expectations suite for forecasting frames.

Everything downstream (windowing, the scaler, the Feast stores) assumes a frame whose
timestamps parse, increase, repeat nowhere and sit on a regular grid, and whose channels
are numeric, finite and mostly present. The pipeline checks that once, here, and stops
with a readable report when it does not hold.

The suite is half of the project's data policy (`llata_core.data`, which training applies):
what it lets through, training accepts. A channel may hold at most `max_nan_fraction` NaN,
which the features stage and training fill forward, then backward (`fill_gaps`); a constant
or near-constant channel is refused, or only reported under `constant_channels="warn"`;
columns that are not channels are listed in the report. Rows are named by their index and,
for a frame `load_frame` read from a CSV, by their line in the file.

GX 1.x has no per-group expectations and no notion of a time grid, so the frame is
extended with derived helper columns (parsed timestamp, previous timestamp of the same
series, the timestamp the grid predicts, rows per series). They are computed in plain
pandas and GX evaluates real expectations on them, so every verdict in the report is a
GX result; nothing is decided outside the suite.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
    ExpectationValidationResult,
)
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
from great_expectations.expectations.metadata_types import FailureSeverity
from pandas.api import types as ptypes
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset, Tick

from features.frame import (
    HELPER_PREFIX,
    DataLoadError,
    FrameSpec,
    channel_candidates,
    load_frame,
    parse_timestamps,
    resolve_channels,
)
from llata_core.atomic import swap_directory, write_json
from llata_core.data import (
    GAP_FILL,
    SourceRows,
    constant_threshold,
    describe_cells,
    source_lines,
)

__all__ = [
    "BadRow",
    "Check",
    "DataLoadError",
    "DataValidationError",
    "ExpectationFailure",
    "FrameSpec",
    "ValidationReport",
    "load_frame",
    "validate_frame",
]

logger = logging.getLogger(__name__)

SUITE_NAME: Final = "forecasting_frame"
REPORT_FILE: Final = "validation.json"
DATA_DOCS_DIR: Final = "data_docs"
_DOCS_SITE: Final = "llata_validation"
MAX_EXAMPLES: Final = 5

PARSED_TIMESTAMP: Final = f"{HELPER_PREFIX}timestamp"
PREVIOUS_TIMESTAMP: Final = f"{HELPER_PREFIX}previous_timestamp"
EXPECTED_TIMESTAMP: Final = f"{HELPER_PREFIX}expected_timestamp"
SERIES_ROWS: Final = f"{HELPER_PREFIX}series_rows"
# How helper columns are named in example rows (the parsed timestamp is never shown: the
# raw value is what a person can find in the file).
_HELPER_LABELS: Final = {
    PREVIOUS_TIMESTAMP: "previous_timestamp",
    EXPECTED_TIMESTAMP: "expected_timestamp",
    SERIES_ROWS: "series_rows",
}

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

_CHECK_KEY: Final = "llata_check"
_ORDER_KEY: Final = "llata_order"


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


@dataclass(frozen=True)
class _Prepared:
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


def validate_frame(
    frame: pd.DataFrame, spec: FrameSpec, report_dir: Path | None = None
) -> ValidationReport:
    """Validate a forecasting frame with the Great Expectations suite.

    Checks that the expected columns exist, channels are numeric, timestamps parse and are
    strictly increasing, unique and regularly spaced within each series, the NaN share of
    every channel stays within `spec.max_nan_fraction`, no value is infinite, no channel is
    constant or near-constant (a warning only under `spec.constant_channels="warn"`), and
    every series has at least `spec.min_rows` rows.

    Args:
        frame: The frame, as loaded (timestamps may still be text).
        spec: What the frame must look like.
        report_dir: If given, `validation.json` and GX Data Docs (`data_docs/index.html`)
            are written there; both are replaced atomically.

    Returns:
        The report; call `raise_for_failures()` to stop on failure.
    """
    prepared = _prepare(frame, spec)
    expectations = _build_expectations(spec, prepared)

    docs_build_dir: Path | None = None
    if report_dir is not None:
        report_dir = Path(report_dir).resolve()
        report_dir.mkdir(parents=True, exist_ok=True)
        docs_build_dir = Path(tempfile.mkdtemp(prefix=f".{DATA_DOCS_DIR}.", dir=report_dir))
    try:
        context = _ephemeral_context(docs_build_dir)
        result = _run_suite(context, expectations, prepared.data)
        failures: list[ExpectationFailure] = []
        warnings: list[ExpectationFailure] = []
        for unmet in (r for r in _sorted_results(result) if not r.success):
            warning = _config(unmet).severity == FailureSeverity.WARNING
            (warnings if warning else failures).append(_to_failure(unmet, spec, prepared))
        data_docs_index = None
        if report_dir is not None and docs_build_dir is not None:
            context.build_data_docs(site_names=[_DOCS_SITE])
            data_docs = report_dir / DATA_DOCS_DIR
            swap_directory(docs_build_dir, data_docs)
            docs_build_dir = None
            data_docs_index = data_docs / "index.html"
    finally:
        if docs_build_dir is not None:
            shutil.rmtree(docs_build_dir, ignore_errors=True)

    report = ValidationReport(
        # GX fails the suite on any unmet expectation; warnings alone do not fail the frame.
        success=not failures and (bool(result.success) or bool(warnings)),
        failures=failures,
        channels=prepared.channels,
        frequency=prepared.offset.freqstr if prepared.offset is not None else None,
        rows=len(frame),
        series=prepared.series_count,
        ignored_columns=prepared.ignored_columns,
        warnings=warnings,
        nan_cells=prepared.nan_cells,
        data_docs_index=data_docs_index,
    )
    if report_dir is not None:
        document = {
            **report.to_dict(),
            "spec": asdict(spec),
            "frequency_inferred": prepared.frequency_inferred,
            "statistics": _jsonable(dict(result.statistics)),
            "great_expectations_version": gx.__version__,
            "validated_at": datetime.now(UTC).isoformat(),
        }
        write_json(report_dir / REPORT_FILE, document)
    for warning in report.warnings:
        logger.warning("frame warning: %s", warning.message)
    if report.success:
        logger.info(
            "frame valid: %d rows, %d series, channels %s, frequency %s",
            report.rows,
            report.series,
            list(report.channels),
            report.frequency,
        )
    else:
        logger.warning(
            "frame invalid: %d expectation(s) not met: %s",
            len(report.failures),
            ", ".join(f"{f.check.value}({f.column})" for f in report.failures),
        )
    return report


# --------------------------------------------------------------------------- frame prep


def _prepare(frame: pd.DataFrame, spec: FrameSpec) -> _Prepared:
    """Copy the frame onto a positional index and add the helper columns."""
    clash = [c for c in frame.columns if _is_helper(c)]
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
    return _Prepared(
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


def _is_helper(column: object) -> bool:
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


def _build_expectations(spec: FrameSpec, prepared: _Prepared) -> list[gxe.Expectation]:
    """The suite for this spec. Column-level expectations are added only for columns the
    frame has: a missing column is already reported once by the column-set expectation,
    and GX would otherwise add one "column not found" error per check on it."""
    data = prepared.data
    ts, series = spec.timestamp_column, spec.series_column
    expectations: list[gxe.Expectation] = []

    def add(check: Check, expectation: type[gxe.Expectation], notes: str, **kwargs: Any) -> None:
        meta = {_CHECK_KEY: check.value, _ORDER_KEY: len(expectations)}
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
        non_channels = [c for c in data.columns if c in (ts, series) or _is_helper(c)]
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


def _ephemeral_context(docs_dir: Path | None) -> Any:
    """An in-memory GX context, with a Data Docs site rooted in `docs_dir` if given.

    The explicit project config replaces `get_context(mode="ephemeral")`'s default, which
    adds a Data Docs site in a fresh temporary directory on every call, and turns off the
    tqdm progress bars GX writes to stderr for every metric computation.
    """
    sites: dict[str, Any] = {}
    if docs_dir is not None:
        sites[_DOCS_SITE] = {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites=sites,
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _run_suite(
    context: Any, expectations: list[gxe.Expectation], data: pd.DataFrame
) -> ExpectationSuiteValidationResult:
    """Register the suite against a whole-dataframe batch and run it."""
    batch = (
        context.data_sources.add_pandas("forecasting_frames")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{SUITE_NAME}_validation", data=batch, suite=suite)
    )
    return definition.run(
        batch_parameters={"dataframe": data},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
    )


def _sorted_results(
    result: ExpectationSuiteValidationResult,
) -> list[ExpectationValidationResult]:
    """Results in suite order (GX returns them grouped by domain)."""
    return sorted(result.results, key=lambda r: _config(r).meta[_ORDER_KEY])


def _config(result: ExpectationValidationResult) -> ExpectationConfiguration:
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


def _to_failure(
    result: ExpectationValidationResult, spec: FrameSpec, prepared: _Prepared
) -> ExpectationFailure:
    config = _config(result)
    check = Check(config.meta[_CHECK_KEY])
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
    prepared: _Prepared,
) -> str:
    """A sentence for a person, from the numbers in GX's result."""
    bad, total = details.get("unexpected_count"), details.get("element_count")
    column = kwargs.get("column")
    ts = spec.timestamp_column
    per_series = " of the same series" if prepared.multi_series else ""
    if check is Check.COLUMNS_PRESENT:
        missing = details.get("details", {}).get("mismatched", {}).get("missing", [])
        observed = details.get("observed_value", [])
        present = [c for c in observed if not _is_helper(c)]
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
            (prepared.labels[p], column, _jsonable(prepared.data[column].iloc[p]))
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
            what = f"is constant: all {len(values)} values are {_jsonable(values.iloc[0])!r}"
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
        shown = ", ".join(repr(_jsonable(s)) for s in short[:MAX_EXAMPLES])
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
    prepared: _Prepared,
) -> list[BadRow]:
    """The first offending rows GX reported, with the values that show the problem."""
    positions = details.get("partial_unexpected_index_list") or []
    data = prepared.data
    columns = [c for c in (spec.timestamp_column, spec.series_column) if c and c in data.columns]
    column = kwargs.get("column")
    if column is not None and not _is_helper(column) and column not in columns:
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
        values = {_HELPER_LABELS.get(c, str(c)): _jsonable(row[c]) for c in columns}
        examples.append(
            BadRow(
                index=_jsonable(prepared.labels[int(position)]),
                values=values,
                line=prepared.line(int(position)),
            )
        )
    return examples


def _jsonable(value: Any) -> Any:
    """A JSON-safe stand-in for a cell or GX value: NaN/inf as text, times as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
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


