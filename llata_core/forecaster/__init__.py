"""The model artifact and the `Forecaster` that serves it.

Two rooms: `artifact` is the one place that knows an artifact's files and format (write,
verify, read, add intervals); `predict` builds the inference model from what it read and
answers forecasts. Everything outside this package imports the names below from
`llata_core.forecaster`, never from the two modules.
"""

from llata_core.forecaster.artifact import (
    ARTIFACT_FILES,
    CALIBRATION_FILES,
    FORMAT_VERSION,
    INTERVALS_FILE,
    MANIFEST_NAME,
    ArtifactContents,
    ArtifactError,
    ArtifactRecord,
    add_intervals,
    check_metrics,
    copy_artifact,
    headline_metric,
    is_artifact,
    manifest_digest,
    read_artifact,
    read_artifact_record,
    read_metrics,
    save_artifact,
    verify_artifact,
    verify_manifest,
)
from llata_core.forecaster.predict import Forecaster, ForecastInputError, IntervalsUnavailableError

__all__ = [
    "ARTIFACT_FILES",
    "FORMAT_VERSION",
    "CALIBRATION_FILES",
    "INTERVALS_FILE",
    "MANIFEST_NAME",
    "ArtifactContents",
    "ArtifactError",
    "ArtifactRecord",
    "ForecastInputError",
    "Forecaster",
    "IntervalsUnavailableError",
    "add_intervals",
    "check_metrics",
    "copy_artifact",
    "headline_metric",
    "is_artifact",
    "manifest_digest",
    "read_artifact",
    "read_artifact_record",
    "read_metrics",
    "save_artifact",
    "verify_artifact",
    "verify_manifest",
]
