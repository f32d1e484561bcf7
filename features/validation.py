"""Validating a forecasting frame: run the expectation suite, write the report and Data Docs.

Everything downstream (windowing, the scaler, the Feast stores) assumes a frame whose
timestamps parse, increase, repeat nowhere and sit on a regular grid, and whose channels
are numeric, finite and mostly present. The pipeline checks that once, here, and stops
with a readable report when it does not hold. What is checked is in `features.suite`; how
an unmet expectation reads is in `features.report`; this module runs the one against the
frame in an in-memory GX context and writes the other (`validation.json`, Data Docs).

The suite is half of the project's data policy (`llata_core.policy`, which training
applies): what it lets through, training accepts. A channel may hold at most
`max_nan_fraction` NaN, which the features stage and training fill forward, then backward
(`fill_gaps`); a constant or near-constant channel is refused, or only reported under
`constant_channels="warn"`; columns that are not channels are listed in the report. Rows
are named by their index and, for a frame `load_frame` read from a CSV, by their line in
the file.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import great_expectations as gx
import great_expectations.expectations as gxe
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
from great_expectations.expectations.metadata_types import FailureSeverity

from features.frame import DataLoadError, FrameSpec, load_frame
from features.report import (
    MAX_EXAMPLES,
    BadRow,
    DataValidationError,
    ExpectationFailure,
    ValidationReport,
    expectation_config,
    jsonable,
    to_failure,
)
from features.suite import ORDER_KEY, Check, build_expectations, prepare_suite_frame
from llata_core.atomic import swap_directory, write_json

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
    prepared = prepare_suite_frame(frame, spec)
    expectations = build_expectations(spec, prepared)

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
            is_warning = expectation_config(unmet).severity == FailureSeverity.WARNING
            (warnings if is_warning else failures).append(to_failure(unmet, spec, prepared))
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
            "statistics": jsonable(dict(result.statistics)),
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
    return sorted(result.results, key=lambda r: expectation_config(r).meta[ORDER_KEY])
