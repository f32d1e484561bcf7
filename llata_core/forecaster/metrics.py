"""An artifact's metrics.json, read and checked without building its model.

For callers that store or compare artifacts (the registry and its gates), which must not
know the artifact's file names.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llata_core.forecaster.artifact import ArtifactError, read_json_object


def read_metrics(path: str | os.PathLike[str], required: Sequence[str] = ()) -> dict[str, Any]:
    """An artifact's evaluation metrics, read without building its model.

    For callers that store or compare artifacts (the registry) and must not know the
    artifact's file names. The manifest is the caller's to check (`verify_manifest`).

    Args:
        path: The artifact directory.
        required: Metrics that must be present as finite numbers (e.g. `("mse", "mae")`).

    Returns:
        The metrics, as `save_artifact` and `add_intervals` wrote them.

    Raises:
        ArtifactError: The metrics are not a JSON object, or a required one is missing or
            not a finite number.
    """
    root = Path(path)
    metrics = read_json_object(root, "metrics.json")
    check_metrics(root, metrics, required)
    return metrics


def check_metrics(root: Path, metrics: Mapping[str, Any], required: Sequence[str]) -> None:
    """`read_metrics`'s check of metrics already read: each `required` one is a finite number.

    Raises:
        ArtifactError: naming the artifact directory `root` and the metric.
    """
    for key in required:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArtifactError(f"{root}: metrics.json needs a numeric {key!r}")
        if not math.isfinite(value):
            raise ArtifactError(f"{root}: metrics.json {key!r} is not finite ({value})")


def headline_metric(metrics: Mapping[str, Any]) -> str:
    """The metric an artifact is judged by: its `metric` key (`mse` long-term, `owa` for
    M4; lower is better for both), `mse` for artifacts written before artifacts named it.

    Raises:
        ArtifactError: the artifact says its headline is higher-is-better, which no gate
            here compares.
    """
    if metrics.get("lower_is_better", True) is not True:
        raise ArtifactError(f"headline metric {metrics.get('metric')!r} is not lower-is-better")
    name = metrics.get("metric", "mse")
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"metrics.json 'metric' must name a metric, got {name!r}")
    return name
