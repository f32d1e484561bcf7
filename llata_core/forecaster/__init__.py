"""The model artifact and the `Forecaster` that serves it.

Four rooms: `artifact` is the one place that knows an artifact's files and format (write,
verify, read, add intervals), `combined` the layout of a combination of trained models
(members in sub-directories, one manifest), `metrics` its metrics.json for callers that
compare artifacts, and `predict` builds the inference model from what they read and answers
forecasts. Everything outside this package imports the names
below from `llata_core.forecaster`, never from its modules.
"""

from llata_core.forecaster.artifact import (
    ARTIFACT_FILES,
    CALIBRATION_FILES,
    COMBINATION_KIND,
    FORMAT_VERSION,
    INTERVALS_FILE,
    MANIFEST_NAME,
    ArtifactContents,
    ArtifactError,
    ArtifactRecord,
    add_intervals,
    artifact_kind,
    copy_artifact,
    is_artifact,
    manifest_digest,
    read_artifact,
    read_artifact_record,
    save_artifact,
    verify_artifact,
    verify_manifest,
)
from llata_core.forecaster.combined import (
    CombinationContents,
    MemberEntry,
    read_combination,
    save_combination,
)
from llata_core.forecaster.metrics import check_metrics, headline_metric, read_metrics
from llata_core.forecaster.predict import Forecaster, ForecastInputError, IntervalsUnavailableError

__all__ = [
    "ARTIFACT_FILES",
    "FORMAT_VERSION",
    "CALIBRATION_FILES",
    "COMBINATION_KIND",
    "INTERVALS_FILE",
    "MANIFEST_NAME",
    "ArtifactContents",
    "ArtifactError",
    "ArtifactRecord",
    "CombinationContents",
    "ForecastInputError",
    "Forecaster",
    "IntervalsUnavailableError",
    "MemberEntry",
    "add_intervals",
    "artifact_kind",
    "check_metrics",
    "copy_artifact",
    "headline_metric",
    "is_artifact",
    "manifest_digest",
    "read_artifact",
    "read_artifact_record",
    "read_combination",
    "read_metrics",
    "save_artifact",
    "save_combination",
    "verify_artifact",
    "verify_manifest",
]
