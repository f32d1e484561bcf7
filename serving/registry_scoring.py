"""How a promotion scores a version: the scorer contract, and a scorer of stored metrics.

A scorer maps a stored artifact directory to its headline score on the evaluation split
(MSE for long-term models, OWA for M4 ones; lower is better). The promotion calls the same
scorer on the candidate and on production, so the two numbers are comparable only as far
as the scorer makes them so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from serving.registry_store import RegistryError, VersionInfo

logger = logging.getLogger(__name__)


class PromotionError(RegistryError):
    """A promotion was aborted before any alias changed (scoring failed, production moving)."""


class VersionLocator(Protocol):
    """What a scorer of stored metrics needs of a registry: the version stored at a path."""

    def info_for_path(self, path: Path) -> VersionInfo: ...


def score_version(score: Callable[[Path], float], info: VersionInfo, role: str) -> float:
    """Runs a scorer on a stored version.

    Args:
        score: The scorer.
        info: The version; the scorer gets its stored directory.
        role: ``candidate`` or ``production``, for the messages.

    Returns:
        The version's finite score.

    Raises:
        PromotionError: The scorer raised (its exception is the ``__cause__``) or returned a
            value that is not finite.
    """
    try:
        value = float(score(info.path))
    except Exception as exc:
        raise PromotionError(
            f"scoring the {role} {info.tag} failed ({type(exc).__name__}: {exc}); aliases unchanged"
        ) from exc
    if not math.isfinite(value):
        raise PromotionError(
            f"scorer returned {value} for the {role} {info.tag}; aliases unchanged"
        )
    logger.info("scored %s %s: %.6g", role, info.tag, value)
    return value


# What stored scores score, most specific first: `eval_targets_hash` names the data, its
# splits and the futures forecast, not the lookback (artifacts trained since the thirteenth
# session); `eval_split_hash` also names the window shape (every artifact has it).
_SCORED_TARGETS = ("eval_targets_hash", "eval_split_hash")


def _stored(info: VersionInfo, key: str) -> object:
    """A version's `key`, from its registry metadata or else its artifact's metrics."""
    return info.metadata.get(key, info.metrics.get(key))


def incomparable(candidate: VersionInfo, other: VersionInfo) -> str | None:
    """Why the stored headline scores of two versions cannot be compared, or None if they can.

    They can when both score the same targets with the same headline metric: equal
    `eval_targets_hash` where both record one (so models of different lookbacks compare),
    otherwise equal `eval_split_hash` (older artifacts: the same window shape too).
    """
    for key in _SCORED_TARGETS:
        mine, theirs = _stored(candidate, key), _stored(other, key)
        if mine is None or theirs is None:
            continue
        if mine != theirs:
            return (
                f"stored metrics of {candidate.tag} ({key} {mine!r}) and {other.tag} "
                f"({key} {theirs!r}) are not comparable: other data, splits or horizon"
                + (" or lookback" if key == "eval_split_hash" else "")
            )
        if other.headline != candidate.headline:
            return (
                f"{candidate.tag} is judged by {candidate.headline} and {other.tag} by "
                f"{other.headline}: models of different tasks are not compared"
            )
        return None
    return (
        f"stored metrics of {candidate.tag} and {other.tag} are not comparable: one of them "
        "records no evaluation split (eval_split_hash)"
    )


def stored_mse_scorer(registry: VersionLocator, candidate: VersionInfo) -> Callable[[Path], float]:
    """A scorer that reads the headline scores stored with the versions (MSE, or OWA for an
    M4 model) instead of re-evaluating.

    Stored metrics are only comparable when both versions scored the same targets with the
    same headline (`incomparable`), so scoring any version other than ``candidate`` raises
    otherwise. Because the checks run inside the scorer, they also hold if production
    changes while the promotion runs.

    Args:
        registry: The registry both versions live in.
        candidate: The version being promoted.

    Returns:
        A callable for ``Registry.promote(score=...)``.
    """

    def score(path: Path) -> float:
        info = registry.info_for_path(path)
        if info.tag != candidate.tag and (problem := incomparable(candidate, info)):
            raise RegistryError(problem)
        if info.score is None:
            raise RegistryError(f"{info.tag} has no stored {info.headline}")
        return info.score

    return score
