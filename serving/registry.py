"""Model registry: promotion and rollback of immutable versions, through atomic aliases.

The versions live in BentoML's model store (``serving.registry_store``); which one is
``production`` and which is ``previous`` lives in ``aliases.json`` beside an append-only
``history.jsonl`` (``serving.registry_aliases``, default directory
``$BENTOML_HOME/llata_registry/``). A candidate passes the data-lineage and coverage gates
(``serving.registry_gates``) before it is scored.

Consistency rules:

* Every read-compare-write of the aliases happens under one ``filelock.FileLock``, so
  promotions and rollbacks from threads or processes are serialised; lock-free readers such
  as the serving process see the old or the new aliases, never a partial file.
* Scoring (minutes of evaluation) runs outside the lock. Before writing, the promotion
  re-reads production under the lock; if it moved meanwhile, the candidate is re-scored
  against the new production (the candidate's own score is reused) and the comparison is
  redone. After ``MAX_PROMOTION_ATTEMPTS`` moves the promotion is refused with
  ``PromotionError``. A decision is therefore always taken against the production that is
  live at the moment of the write.
* Aliases are written first, then the history line, both under the lock; the aliases file
  is the source of truth and carries a ``revision`` counter that history lines repeat.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llata_core.forecaster import (  # ArtifactError is re-exported: callers catch it from here
    ArtifactError,
    verify_manifest,
)
from serving.registry_aliases import ALIAS_NAMES, PREVIOUS, PRODUCTION, Aliases, RegistryState
from serving.registry_gates import (
    LINEAGE_FIELDS,
    LINEAGE_KEY,
    coverage_problem,
    lineage_conflict,
    lineage_of,
    recalibration_parent,
    recalibration_verdict,
    same_point_model,
)
from serving.registry_scoring import (
    PromotionError,
    incomparable,
    score_version,
    stored_mse_scorer,
)
from serving.registry_store import (
    REQUIRED_METRICS,
    RegistryError,
    VersionInfo,
    VersionNotFoundError,
    VersionStore,
    resolve_bentoml_home,
    version_info,
)

if TYPE_CHECKING:
    from bentoml._internal.models import Model

__all__ = [
    "ALIAS_NAMES",
    "DEFAULT_MODEL_NAME",
    "LINEAGE_FIELDS",
    "LINEAGE_KEY",
    "MAX_PROMOTION_ATTEMPTS",
    "PREVIOUS",
    "PRODUCTION",
    "REQUIRED_METRICS",
    "ArtifactError",
    "PromotionDecision",
    "PromotionError",
    "Registry",
    "RegistryError",
    "VersionInfo",
    "VersionNotFoundError",
    "coverage_problem",
    "incomparable",
    "lineage_conflict",
    "lineage_of",
    "resolve_bentoml_home",
    "stored_mse_scorer",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "llata-forecaster"
MAX_PROMOTION_ATTEMPTS = 3


@dataclass(frozen=True)
class PromotionDecision:
    """What a promotion (or rollback) did and why.

    Attributes:
        promoted: Whether ``production`` now points at ``candidate``.
        candidate: The candidate's full tag.
        production_before: Production's full tag when the decision was taken, if any.
        candidate_mse: The candidate's score (None when not scored: forced, rollback).
        production_mse: Production's score with the same scorer (None when not scored).
        reason: Human-readable explanation, also written to the history.
    """

    promoted: bool
    candidate: str
    production_before: str | None
    candidate_mse: float | None
    production_mse: float | None
    reason: str


class Registry:
    """Registered versions of one model name, their aliases and promotion history.

    Args:
        model_name: BentoML model name (lowercase letters, digits, ``-``, ``_``, ``.``).
        registry_dir: Where ``aliases.json``, ``history.jsonl`` and the lock live; default
            ``$BENTOML_HOME/llata_registry``. One directory belongs to one model name.
        bentoml_home: BentoML home holding the model store (``<home>/models``); default
            ``$BENTOML_HOME`` as it is when the registry is constructed.
        lock_timeout: Seconds to wait for the registry lock before ``filelock.Timeout``.
    """

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL_NAME,
        registry_dir: str | os.PathLike[str] | None = None,
        *,
        bentoml_home: str | os.PathLike[str] | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        home = Path(bentoml_home) if bentoml_home is not None else resolve_bentoml_home()
        self._versions = VersionStore(model_name, home)
        self._state = RegistryState(
            model_name,
            Path(registry_dir) if registry_dir else home / "llata_registry",
            lock_timeout,
        )
        self.model_name = model_name
        self.store_dir = self._versions.store_dir
        self.registry_dir = self._state.registry_dir
        self.aliases_path = self._state.aliases_path
        self.history_path = self._state.history_path

    def __repr__(self) -> str:
        return f"Registry({self.model_name!r}, store={self.store_dir}, dir={self.registry_dir})"

    # ------------------------------------------------------------------ register

    def register(self, artifact_dir: str | os.PathLike[str], *, metadata: Mapping[str, Any]) -> str:
        """Copies a verified artifact into a new, immutable version (`VersionStore.register`).

        Returns:
            The new version's tag, ``name:version``.

        Raises:
            ArtifactError: The artifact is incomplete or does not match its manifest.
            ValueError: The metadata cannot be stored.
        """
        return self._versions.register(artifact_dir, metadata=metadata)

    # ------------------------------------------------------------------ queries

    def list_versions(self) -> list[VersionInfo]:
        """All versions of this model name, oldest first.

        BentoML's version strings are not time-ordered (they start with the low bits of a
        uuid1 timestamp), so this sorts by creation time. A directory BentoML cannot load
        (a registration being saved right now, or a killed one) is skipped with a warning
        instead of failing the whole listing.
        """
        aliases = self._state.read_aliases()
        infos = [self._info(model, aliases) for model in self._versions.models()]
        return sorted(infos, key=lambda info: info.created)

    def get(self, version_or_alias: str) -> VersionInfo:
        """Looks up a version by alias, full tag, version, unique version prefix or ``latest``.

        Raises:
            RegistryError: The alias is not set, or the reference is ambiguous/invalid.
            VersionNotFoundError: The version (or the alias's target) is not in the store.
        """
        aliases = self._state.read_aliases()
        if version_or_alias in ALIAS_NAMES:
            tag = getattr(aliases, version_or_alias)
            if tag is None:
                raise RegistryError(
                    f"alias {version_or_alias!r} of {self.model_name} is not set "
                    f"(registry {self.registry_dir})"
                )
            return self._info(self._alias_model(version_or_alias, tag), aliases)
        return self._info(self._versions.model(version_or_alias), aliases)

    def production(self) -> VersionInfo | None:
        """The production version, or None when none was promoted yet.

        Raises:
            VersionNotFoundError: Production points at a version deleted from the store.
        """
        aliases = self._state.read_aliases()
        if aliases.production is None:
            return None
        return self._info(self._alias_model(PRODUCTION, aliases.production), aliases)

    def production_tag(self) -> str | None:
        """Production's tag from ``aliases.json`` alone: a cheap, lock-free poll for servers.

        Does not check that the version still exists; :meth:`production` does.
        """
        return self._state.read_aliases().production

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, rejection and rollback, oldest first."""
        return self._state.history()

    # ------------------------------------------------------------------ changes

    def promote(
        self,
        candidate: str,
        *,
        score: Callable[[Path], float] | None,
        margin: float,
        force: bool = False,
        coverage_tolerance: float | None = None,
        coverage_level: float = 80.0,
        coverage_over_tolerance: float | None = None,
    ) -> PromotionDecision:
        """Makes ``candidate`` production if it has production's data lineage and beats it.

        Both versions are scored by the same ``score`` callable on their stored artifact
        directories (the headline metric on the evaluation split: MSE, or OWA for an M4
        model; lower is better). The candidate wins when there is no production yet or
        ``cand_mse < prod_mse * (1 - margin)``. On a win,
        ``previous <- production`` and ``production <- candidate`` in one atomic write.
        Either way the decision goes to the history. Scoring runs outside the lock; if
        production moved meanwhile, the comparison is redone against the new production.

        Data lineage comes first (`lineage_conflict`): a candidate trained on other data
        (dataset, series, channel schema, frequency) is rejected without scoring, unless
        ``force``, and the override is recorded in the history. A candidate trained on
        generated data never replaces a production model trained on real data, forced or
        not.

        A recalibrated version (metadata ``recalibration.parent``: production's weights
        with new conformal scores) is not scored: its point forecasts are production's.
        It must be a recalibration of the current production with the same configuration,
        weights and scaler, and its holdout coverage must be at least as close to nominal
        as production's on the same windows (`recalibration_verdict`); the coverage gate
        applies as to any candidate.

        Args:
            candidate: Version, tag, unique prefix or alias of the candidate.
            score: Evaluates an artifact directory, returns its MSE. Required unless forced.
                The first promotion scores the candidate too, so a model that cannot be
                evaluated never reaches production.
            margin: Relative improvement required, in ``[0, 1)``.
            force: Promote without scoring, and across data lineages (an operator's
                decision, recorded as such); never over real data with generated data.
            coverage_tolerance: When set, the candidate's recorded interval coverage at
                ``coverage_level`` (its metrics' ``coverage_80``, measured on the holdout)
                may fall at most this far (a fraction, 0.05 = 5 points) below nominal; an
                uncalibrated or under-covering candidate is rejected unscored.
            coverage_over_tolerance: Also refuse coverage this far above nominal (None:
                conservative intervals pass).

        Returns:
            The decision. A rejection leaves the aliases untouched.

        Raises:
            PromotionError: Scoring failed or returned a non-finite value, or production
                kept moving; nothing changed. The scorer's exception is the ``__cause__``.
            ArtifactError: The candidate's stored copy no longer matches its manifest.
            RegistryError: Unknown candidate, or production points at a deleted version.
        """
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        if score is None and not force:
            raise ValueError("a scorer is required unless force=True")
        cand = self.get(candidate)
        verify_manifest(cand.path)
        miscalibrated = None
        if coverage_tolerance is not None and not force:
            miscalibrated = coverage_problem(
                cand.metrics, coverage_level, coverage_tolerance, coverage_over_tolerance
            )
        cand_mse: float | None = None
        scored_production: tuple[str, float] | None = None
        parent = recalibration_parent(cand.metadata)
        for attempt in range(1, MAX_PROMOTION_ATTEMPTS + 1):
            prod_tag = self._state.read_aliases().production
            prod_mse: float | None = None
            # Models of different data are not compared on one split at all: scoring
            # production on the candidate's data (generated, another series) means nothing.
            conflict = self._conflict_with(cand, prod_tag)
            recalibration = None
            if parent is not None and not force and prod_tag not in (None, cand.tag):
                assert prod_tag is not None
                recalibration = self._recalibration_verdict(cand, prod_tag, coverage_level)
            if (
                score is not None
                and not force
                and prod_tag != cand.tag
                and conflict is None
                and miscalibrated is None
                and recalibration is None
            ):
                if cand_mse is None:
                    cand_mse = score_version(score, cand, "candidate")
                if prod_tag is not None:
                    if scored_production is None or scored_production[0] != prod_tag:
                        prod = self._info(self._alias_model(PRODUCTION, prod_tag), Aliases())
                        scored_production = (prod_tag, score_version(score, prod, "production"))
                    prod_mse = scored_production[1]
            with self._state.lock():
                current = self._state.read_aliases()
                if current.production != prod_tag:
                    logger.warning(
                        "production moved from %s to %s while scoring %s (attempt %d/%d)",
                        prod_tag,
                        current.production,
                        cand.tag,
                        attempt,
                        MAX_PROMOTION_ATTEMPTS,
                    )
                    continue
                return self._decide_locked(
                    current,
                    cand.tag,
                    cand_mse,
                    prod_mse,
                    margin,
                    force,
                    miscalibrated,
                    recalibration,
                )
        raise PromotionError(
            f"production changed {MAX_PROMOTION_ATTEMPTS} times while {cand.tag} was being "
            "scored; aliases unchanged, retry the promotion"
        )

    def rollback(self) -> PromotionDecision:
        """Swaps ``production`` and ``previous`` (one atomic write), recording it.

        Raises:
            RegistryError: ``previous`` is not set.
            VersionNotFoundError: ``previous`` points at a version deleted from the store.
        """
        with self._state.lock():
            current = self._state.read_aliases()
            if current.previous is None:
                raise RegistryError(
                    f"cannot roll back {self.model_name}: alias 'previous' is not set"
                )
            self._alias_model(PREVIOUS, current.previous)  # must exist
            # If production itself was deleted, do not point `previous` at a missing version.
            rolled_back = current.production
            keep = rolled_back is not None and self._versions.exists(rolled_back)
            new = Aliases(
                production=current.previous,
                previous=rolled_back if keep else None,
                revision=current.revision + 1,
            )
            self._state.write_aliases(new)
            reason = f"rollback from {rolled_back} to {current.previous}"
            self._state.append_history(
                action="rollback",
                candidate=current.previous,
                before=current,
                after=new,
                reason=reason,
            )
        logger.info("%s: %s", self.model_name, reason)
        return PromotionDecision(
            promoted=True,
            candidate=current.previous,
            production_before=rolled_back,
            candidate_mse=None,
            production_mse=None,
            reason=reason,
        )

    def delete(self, version: str) -> None:
        """Deletes a version from the model store unless an alias points at it.

        Raises:
            RegistryError: The version is ``production`` or ``previous``.
            VersionNotFoundError: No such version.
        """
        with self._state.lock():
            model = self._versions.model(version)
            tag = str(model.tag)
            names = self._state.read_aliases().names_for(tag)
            if names:
                raise RegistryError(f"refusing to delete {tag}: it is {' and '.join(names)}")
            self._versions.delete(tag)
        logger.info("deleted %s", tag)

    # ------------------------------------------------------------------ internals

    def _decide_locked(
        self,
        current: Aliases,
        cand_tag: str,
        cand_mse: float | None,
        prod_mse: float | None,
        margin: float,
        force: bool,
        miscalibrated: str | None = None,
        recalibration: tuple[bool, str] | None = None,
    ) -> PromotionDecision:
        prod_tag = current.production
        if not self._versions.exists(cand_tag):
            raise VersionNotFoundError(f"{cand_tag} was deleted from the model store")
        cand = self.get(cand_tag)
        conflict = self._conflict_with(cand, prod_tag)
        extra: dict[str, Any] = {}
        if conflict is not None and prod_tag != cand_tag:
            extra["lineage_conflict"] = conflict[0]
        if prod_tag == cand_tag:
            promoted, reason = False, f"{cand_tag} is already production"
        elif miscalibrated is not None:
            promoted, reason = False, f"refused: {miscalibrated}"
            extra["coverage_check"] = "failed"
        elif conflict is not None and (conflict[0] == "synthetic" or not force):
            hint = "" if conflict[0] == "synthetic" else "; an operator may override with force"
            promoted, reason = False, f"refused: {conflict[1]}{hint}"
        elif conflict is not None:
            promoted = True
            reason = f"forced by operator across data lineages (not scored): {conflict[1]}"
            extra["lineage_override"] = True
        elif force:
            promoted, reason = True, "forced by operator (not scored)"
        elif prod_tag is None:
            promoted, reason = True, "no production version yet"
        elif recalibration is not None:
            promoted, reason = recalibration
            extra["recalibration_of"] = recalibration_parent(cand.metadata)
        else:
            assert cand_mse is not None and prod_mse is not None
            threshold = prod_mse * (1.0 - margin)
            promoted = cand_mse < threshold
            relation = "<" if promoted else ">="
            metric = cand.headline
            reason = (
                f"candidate {metric} {cand_mse:.6g} {relation} production {metric} "
                f"{prod_mse:.6g} x (1 - margin {margin:g}) = {threshold:.6g}"
            )
        after = current
        if promoted:
            # Never leave `previous` pointing at a version that is gone (forced replacement
            # of a deleted production).
            keep = prod_tag is not None and self._versions.exists(prod_tag)
            after = Aliases(
                production=cand_tag,
                previous=prod_tag if keep else None,
                revision=current.revision + 1,
            )
            self._state.write_aliases(after)
        self._state.append_history(
            action="promote" if promoted else "reject",
            candidate=cand_tag,
            before=current,
            after=after,
            reason=reason,
            candidate_mse=cand_mse,
            production_mse=prod_mse,
            margin=margin,
            forced=force,
            **extra,
        )
        log = logger.info if promoted else logger.warning
        log("%s %s: %s", "promoted" if promoted else "rejected", cand_tag, reason)
        return PromotionDecision(
            promoted=promoted,
            candidate=cand_tag,
            production_before=prod_tag,
            candidate_mse=cand_mse,
            production_mse=prod_mse,
            reason=reason,
        )

    def _recalibration_verdict(
        self, cand: VersionInfo, prod_tag: str, level: float
    ) -> tuple[bool, str]:
        """`recalibration_verdict` of a recalibrated candidate against production."""
        production = self._alias_model(PRODUCTION, prod_tag)
        same = same_point_model(verify_manifest(cand.path), verify_manifest(production.path))
        return recalibration_verdict(
            cand.metadata,
            cand.metrics,
            prod_tag,
            same,
            level,
            production_recalibrated=recalibration_parent(production.info.metadata) is not None,
        )

    def _conflict_with(self, cand: VersionInfo, prod_tag: str | None) -> tuple[str, str] | None:
        if prod_tag is None or prod_tag == cand.tag or not self._versions.exists(prod_tag):
            return None
        return lineage_conflict(cand.metadata, self._versions.model(prod_tag).info.metadata)

    def _alias_model(self, alias: str, tag: str) -> Model:
        try:
            return self._versions.model(tag)
        except VersionNotFoundError as exc:
            raise VersionNotFoundError(
                f"alias {alias!r} points to {tag}, which is no longer in the model store "
                f"{self.store_dir} (deleted?); promote another version with force=True "
                "or roll back"
            ) from exc

    def _info(self, model: Model, aliases: Aliases) -> VersionInfo:
        return version_info(model, aliases.names_for(str(model.tag)))

    def info_for_path(self, path: Path) -> VersionInfo:
        """The stored version whose directory is `path` (what a scorer is handed).

        Raises:
            VersionNotFoundError: `path` is not a stored version of this model name.
        """
        resolved = Path(path).resolve()
        for info in self.list_versions():
            if info.path.resolve() == resolved:
                return info
        raise VersionNotFoundError(f"{path} is not a stored version of {self.model_name}")
