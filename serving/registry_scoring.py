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


def stored_mse_scorer(registry: VersionLocator, candidate: VersionInfo) -> Callable[[Path], float]:
    """A scorer that reads the headline scores stored with the versions (MSE, or OWA for an
    M4 model) instead of re-evaluating.

    Stored metrics are only comparable when both versions were evaluated on the same split
    and name the same headline, so scoring any version other than ``candidate`` raises
    unless its metadata ``eval_split_hash`` equals the candidate's (and both are set) and
    its headline metric is the candidate's. Because the checks run inside the scorer, they
    also hold if production changes while the promotion runs.

    Args:
        registry: The registry both versions live in.
        candidate: The version being promoted.

    Returns:
        A callable for ``Registry.promote(score=...)``.
    """
    split = candidate.metadata.get("eval_split_hash")

    def score(path: Path) -> float:
        info = registry.info_for_path(path)
        if info.tag != candidate.tag:
            other = info.metadata.get("eval_split_hash")
            if split is None or other != split:
                raise RegistryError(
                    f"stored metrics of {candidate.tag} (eval_split_hash {split!r}) and "
                    f"{info.tag} (eval_split_hash {other!r}) are not comparable"
                )
            if info.headline != candidate.headline:
                raise RegistryError(
                    f"{candidate.tag} is judged by {candidate.headline} and {info.tag} by "
                    f"{info.headline}: models of different tasks are not compared"
                )
        if info.score is None:
            raise RegistryError(f"{info.tag} has no stored {info.headline}")
        return info.score

    return score
