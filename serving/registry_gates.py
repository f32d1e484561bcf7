"""The promotion gates a candidate passes before it is scored: data lineage and coverage.

A model trained on other data than production's is not compared with it at all (its score
on another split means nothing), and one whose prediction intervals under-cover is not
served. Both rules read only a version's stored metadata and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
