"""The promotion gates a candidate passes before it is scored: data lineage and coverage,
and the rule that replaces scoring for a recalibrated version (same weights, new intervals).

A model trained on other data than production's is not compared with it at all (its score
on another split means nothing), and one whose prediction intervals under-cover is not
served. Both rules read only a version's stored metadata and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llata_core.forecaster import CALIBRATION_FILES

LINEAGE_KEY = "data_lineage"
LINEAGE_FIELDS = ("dataset", "series_id", "channels", "frequency")


def lineage_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What data a version was trained on: dataset, series id, channels, frequency, real?

    Versions registered before the lineage record existed carry only the pipeline's
    `dataset` and `synthetic_data` keys; those are read instead, and the fields they lack
    are unknown (None), which no comparison can fail on.
    """
    recorded = metadata.get(LINEAGE_KEY)
    if isinstance(recorded, Mapping):
        lineage = {key: recorded.get(key) for key in LINEAGE_FIELDS}
        lineage["synthetic"] = bool(recorded.get("synthetic", False))
        return lineage
    lineage = {key: None for key in LINEAGE_FIELDS}
    lineage["dataset"] = metadata.get("dataset")
    lineage["synthetic"] = bool(metadata.get("synthetic_data", False))
    return lineage


def _describe_lineage(lineage: Mapping[str, Any]) -> str:
    channels = lineage.get("channels")
    parts = [
        f"dataset {lineage.get('dataset')!r}",
        f"series {lineage.get('series_id')!r}",
        f"channels {list(channels) if channels is not None else None}",
        f"frequency {lineage.get('frequency')!r}",
        "generated data" if lineage.get("synthetic") else "real data",
    ]
    return ", ".join(parts)


def lineage_conflict(
    candidate: Mapping[str, Any], production: Mapping[str, Any]
) -> tuple[str, str] | None:
    """Why a candidate may not replace production on data grounds, if it may not.

    Returns:
        None when the lineages agree (fields unknown on either side are not compared);
        `("synthetic", message)` for a model trained on generated data against one trained
        on real data, which is never promoted; `("lineage", message)` when dataset, series,
        channel schema or frequency differ, which only an operator's `force` overrides.
        The message names both lineages.
    """
    cand, prod = lineage_of(candidate), lineage_of(production)
    if cand["synthetic"] and not prod["synthetic"]:
        return "synthetic", (
            "the candidate was trained on generated data and production on real data; a "
            f"model trained on generated data never replaces one trained on real data "
            f"(candidate: {_describe_lineage(cand)}; production: {_describe_lineage(prod)})"
        )
    differ = [
        key
        for key in LINEAGE_FIELDS
        if cand[key] is not None
        and prod[key] is not None
        and _plain(cand[key]) != _plain(prod[key])
    ]
    if differ:
        return "lineage", (
            f"the candidate's data lineage differs from production's in {', '.join(differ)} "
            f"(candidate: {_describe_lineage(cand)}; production: {_describe_lineage(prod)})"
        )
    return None


def coverage_problem(
    metrics: Mapping[str, Any], level: float, tolerance: float, over_tolerance: float | None = None
) -> str | None:
    """Why a version's prediction intervals are not trustworthy enough to serve, if so.

    Reads the empirical coverage its evaluation recorded (`coverage_80` for level 80) and
    compares it with nominal: more than `tolerance` below it (intervals that promise more
    than they deliver) is refused; more than `over_tolerance` above it (needlessly wide
    intervals) only when `over_tolerance` is set. Tolerances are fractions (0.05 = five
    points). None when the coverage passes.
    """
    key = f"coverage_{level:g}"
    value = metrics.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return (
            f"the candidate has no recorded {level:g}% interval coverage ({key}); calibrate it "
            "(`llata calibrate --model DIR`) before it can serve intervals"
        )
    nominal, covered = level / 100.0, float(value)
    if covered < nominal - tolerance:
        return (
            f"its {level:g}% intervals covered {covered:.3f} of the holdout, more than "
            f"{tolerance:.3f} below nominal {nominal:.2f}"
        )
    if over_tolerance is not None and covered > nominal + over_tolerance:
        return (
            f"its {level:g}% intervals covered {covered:.3f} of the holdout, more than "
            f"{over_tolerance:.3f} above nominal {nominal:.2f}"
        )
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


# --------------------------------------------------------------------------- recalibration

RECALIBRATION_KEY = "recalibration"


def recalibration_parent(metadata: Mapping[str, Any]) -> str | None:
    """The version a recalibrated version was recalibrated from, if it is one."""
    record = metadata.get(RECALIBRATION_KEY)
    parent = record.get("parent") if isinstance(record, Mapping) else None
    return str(parent) if parent else None


def same_point_model(candidate: Mapping[str, str], production: Mapping[str, str]) -> bool:
    """Whether two artifacts' manifests (file -> SHA-256) agree on every file but the
    calibration's: same configuration, weights and scaler, hence identical point forecasts."""

    def point(files: Mapping[str, str]) -> dict[str, str]:
        return {k: v.lower() for k, v in files.items() if k not in CALIBRATION_FILES}

    return point(candidate) == point(production)


def recalibration_verdict(
    metadata: Mapping[str, Any],
    metrics: Mapping[str, Any],
    production: str,
    same_weights: bool,
    level: float,
    production_recalibrated: bool = False,
) -> tuple[bool, str]:
    """The promotion rule for a recalibrated version, which replaces intervals, not forecasts.

    A recalibration has its parent's weights, so its point forecasts, and any point metric,
    equal production's: the point-metric comparison (and its margin) is not applied. It is
    judged on the holdout its recalibration recorded instead: its `level`% coverage there
    (from scores fitted only on windows before the holdout) must be at least as close to
    nominal as production's own scores' on the same windows. Ties promote: the fresher
    scores, which include the newest windows, win. The coverage gate (`coverage_problem`)
    applies before this, as to every candidate.

    When production is itself a recalibration, its scores were fitted on the newest windows
    of its day, which a daily run's holdout mostly repeats: its coverage there is in-sample
    and flatters it (a recalibration on the same data was refused against 0.814 in-sample).
    Then only the coverage gate decides, which is the daily rolling scheme that
    `benchmarks/intervals/coverage.py` measured within 3 points of nominal.

    A recalibration is only judged against its parent: if production moved meanwhile (a
    retrained model was promoted), or the weights are not the parent's, it is refused.

    Returns:
        Whether to promote, and why.
    """
    parent = recalibration_parent(metadata)
    if parent != production:
        return False, (
            f"refused: a recalibration of {parent} is judged against it, but production is now "
            f"{production}; recalibrate the current production"
        )
    if not same_weights:
        return False, (
            f"refused: recorded as a recalibration of {parent}, but its configuration, weights "
            "or scaler differ from it"
        )
    record = metadata[RECALIBRATION_KEY]
    key, nominal = f"coverage_{level:g}", level / 100.0
    covered = metrics.get(key)
    before = (record.get("replaced") or {}).get(key)
    windows = record.get("holdout_windows")
    head = f"recalibration of {parent} (same weights: point metrics not compared)"
    if not isinstance(covered, int | float):
        return False, f"refused: {head}, but it records no {level:g}% holdout coverage"
    if production_recalibrated:
        return True, (
            f"{head}: holdout {level:g}% coverage {covered:.3f}; production's own scores are "
            "a recalibration fitted on windows this holdout repeats, so not compared "
            "(the coverage gate decides)"
        )
    if not isinstance(before, int | float):
        return True, (
            f"{head}: holdout {level:g}% coverage {covered:.3f}; production had no "
            f"{level:g}% intervals on those windows"
        )
    promoted = abs(covered - nominal) <= abs(before - nominal)
    relation = "at least as close to nominal {} as" if promoted else "further from nominal {} than"
    return promoted, (
        f"{head}: holdout {level:g}% coverage {covered:.3f} is {relation.format(f'{nominal:.2f}')} "
        f"production's {before:.3f} on the same {windows} windows"
    )
