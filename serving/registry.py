"""Model registry: immutable versions in BentoML's model store, atomic aliases beside it.

Every registered version is a BentoML model (``bentoml.models.create``) holding a verified
copy of one model artifact directory plus its metadata (metrics, params, data hash, git
revision, ``registered_at``). BentoML versions never change after they are saved; what does
change - which version is ``production`` and which is ``previous`` - lives in
``aliases.json`` next to an append-only ``history.jsonl`` in the registry directory
(default ``$BENTOML_HOME/llata_registry/``).

Consistency rules:

* ``aliases.json`` is only ever replaced whole (temp file in the same directory, fsync,
  ``os.replace``), so lock-free readers such as the serving process see the old or the new
  file, never a partial one.
* Every read-compare-write of the aliases happens under one ``filelock.FileLock``, so
  promotions and rollbacks from threads or processes are serialised.
* Scoring (minutes of evaluation) runs outside the lock. Before writing, the promotion
  re-reads production under the lock; if it moved meanwhile, the candidate is re-scored
  against the new production (the candidate's own score is reused) and the comparison is
  redone. After ``MAX_PROMOTION_ATTEMPTS`` moves the promotion is refused with
  ``PromotionError``. A decision is therefore always taken against the production that is
  live at the moment of the write.
* Aliases are written first, then the history line, both under the lock; the aliases file
  is the source of truth and carries a ``revision`` counter that history lines repeat.

BentoML 1.4.40 caches ``BENTOML_HOME`` in a process-wide singleton the first time any store
is touched, so this module builds its own ``ModelStore`` from ``BENTOML_HOME`` (read when a
``Registry`` is constructed) and passes it to ``bentoml.models.*`` explicitly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import filelock
from bentoml._internal.models import ModelStore  # no public way to open a store at a path
from bentoml.exceptions import BentoMLException, NotFound

from llata_core.atomic import write_json
from llata_core.data import file_sha256
from llata_core.forecaster import (  # ArtifactError is re-exported: callers catch it from here
    MANIFEST_NAME,
    ArtifactError,
    verify_manifest,
)

if TYPE_CHECKING:
    from bentoml._internal.models import Model

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "llata-forecaster"
PRODUCTION = "production"
PREVIOUS = "previous"
ALIAS_NAMES = (PRODUCTION, PREVIOUS)
REQUIRED_METRICS = ("mse", "mae")
MAX_PROMOTION_ATTEMPTS = 3

_ALIASES_FILE = "aliases.json"
_HISTORY_FILE = "history.jsonl"
_LOCK_FILE = "registry.lock"


class RegistryError(RuntimeError):
    """A registry operation cannot proceed; the registry state is unchanged."""


class VersionNotFoundError(RegistryError, LookupError):
    """A version (or the version an alias points to) is not in the model store."""


class PromotionError(RegistryError):
    """A promotion was aborted before any alias changed (scoring failed, production moving)."""


# --------------------------------------------------------------------------- artifacts


def _read_metrics(root: Path) -> dict[str, Any]:
    try:
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{root}: metrics.json is not valid JSON ({exc})") from exc
    if not isinstance(metrics, dict):
        raise ArtifactError(f"{root}: metrics.json must be a JSON object")
    for key in REQUIRED_METRICS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ArtifactError(f"{root}: metrics.json needs a numeric {key!r}")
        if not math.isfinite(value):
            raise ArtifactError(f"{root}: metrics.json {key!r} is not finite ({value})")
    return metrics


def _copy_file(src: Path, dst: Path) -> None:
    """Copies one artifact file (a separate function so tests can make a copy fail)."""
    shutil.copy2(src, dst)


def _normalise_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # BentoML stores metadata as YAML and rejects None (and accepts odd types JSON cannot
    # carry); keep metadata JSON-shaped so `show` can print it and a None fails with the key
    # named instead of BentoML's anonymous "metadata entries must be basic python types".
    try:
        plain = json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable with finite numbers: {exc}") from exc

    def walk(value: Any, where: str) -> None:
        if value is None:
            raise ValueError(f"metadata[{where}] is None; BentoML cannot store None values")
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}" if where else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")

    walk(plain, "")
    return plain


# --------------------------------------------------------------------------- lineage

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


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the registry sees it.

    Attributes:
        tag: Full BentoML tag, ``name:version``.
        version: The version part of the tag.
        created: BentoML's creation time (UTC).
        metrics: The artifact's ``metrics.json`` (at least ``mse`` and ``mae``).
        metadata: Everything stored with the version (metrics, params, hashes, ...).
        aliases: Alias names currently pointing at this version.
        path: The stored artifact directory inside the model store (read-only by contract).
    """

    tag: str
    version: str
    created: datetime
    metrics: Mapping[str, Any]
    metadata: Mapping[str, Any]
    aliases: tuple[str, ...]
    path: Path

    @property
    def mse(self) -> float | None:
        """The stored MSE (on the evaluation split the metadata names), if any."""
        value = self.metrics.get("mse")
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, for the command line and logs."""
        return {
            "tag": self.tag,
            "version": self.version,
            "created": self.created.isoformat(),
            "aliases": list(self.aliases),
            "metrics": dict(self.metrics),
            "metadata": dict(self.metadata),
            "path": str(self.path),
        }


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


@dataclass(frozen=True)
class _Aliases:
    production: str | None = None
    previous: str | None = None
    revision: int = 0

    def names_for(self, tag: str) -> tuple[str, ...]:
        return tuple(name for name in ALIAS_NAMES if getattr(self, name) == tag)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def resolve_bentoml_home() -> Path:
    """Resolves ``BENTOML_HOME`` the way BentoML does, but now rather than once per process.

    Returns:
        ``$BENTOML_HOME`` with variables and ``~`` expanded, else ``~/bentoml``.
    """
    raw = os.environ.get("BENTOML_HOME", os.path.join(os.path.expanduser("~"), "bentoml"))
    while True:  # BentoML expands repeatedly until stable
        expanded = os.path.expanduser(os.path.expandvars(raw))
        if expanded == raw:
            return Path(expanded)
        raw = expanded


# --------------------------------------------------------------------------- registry


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
        try:
            valid = str(bentoml.Tag(model_name, None)) == model_name
        except (ValueError, BentoMLException):
            valid = False
        if not valid:
            raise ValueError(f"invalid BentoML model name {model_name!r}")
        home = Path(bentoml_home) if bentoml_home is not None else resolve_bentoml_home()
        self.model_name = model_name
        self.store_dir = home / "models"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._store = ModelStore(self.store_dir)
        self.registry_dir = Path(registry_dir) if registry_dir else home / "llata_registry"
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self.aliases_path = self.registry_dir / _ALIASES_FILE
        self.history_path = self.registry_dir / _HISTORY_FILE
        self._lock_path = self.registry_dir / _LOCK_FILE
        self._lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Registry({self.model_name!r}, store={self.store_dir}, dir={self.registry_dir})"

    # ------------------------------------------------------------------ register

    def register(self, artifact_dir: str | os.PathLike[str], *, metadata: Mapping[str, Any]) -> str:
        """Copies a verified artifact into a new, immutable BentoML model version.

        BentoML's ``models.create`` stages the files in a temporary directory and only
        saves into the store when the ``with`` block exits cleanly, so a failed copy leaves
        nothing in the store. The copy is verified against the manifest before that exit, so
        an artifact changing under our feet is caught too.

        Args:
            artifact_dir: Directory with config, weights, scaler, metrics and manifest.
            metadata: Params, data hash, ``git_revision``, ``eval_split_hash``, ... (JSON
                values, no None). ``metrics`` comes from ``metrics.json``; a caller-given
                ``metrics`` must equal it. ``registered_at`` is added.

        Returns:
            The new version's tag, ``name:version``.

        Raises:
            ArtifactError: The artifact is incomplete or does not match its manifest.
            ValueError: The metadata cannot be stored.
        """
        src = Path(artifact_dir)
        files = verify_manifest(src)
        metrics = _read_metrics(src)
        meta = _normalise_metadata(metadata)
        if "metrics" in meta and meta["metrics"] != metrics:
            raise ValueError(f"metadata['metrics'] differs from {src / 'metrics.json'}")
        meta["metrics"] = metrics
        meta["manifest_sha256"] = file_sha256(src / MANIFEST_NAME)
        meta["registered_at"] = _now()
        with bentoml.models.create(
            self.model_name, metadata=meta, _model_store=self._store
        ) as model:
            staging = Path(model.path)  # a temp dir until the block exits, not the store
            try:
                for rel in [*sorted(files), MANIFEST_NAME]:
                    dst = staging / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    _copy_file(src / rel, dst)
                verify_manifest(staging)
            except BaseException:
                # BentoML re-raises without saving, but leaves its staging dir to a GC
                # finaliser; remove it now so a failed large copy does not fill /tmp.
                shutil.rmtree(staging, ignore_errors=True)
                raise
        tag = str(model.tag)
        logger.info("registered %s from %s (mse %s)", tag, src, metrics["mse"])
        return tag

    # ------------------------------------------------------------------ queries

    def list_versions(self) -> list[VersionInfo]:
        """All versions of this model name, oldest first.

        BentoML's version strings are not time-ordered (they start with the low bits of a
        uuid1 timestamp), so this sorts by creation time. A directory BentoML cannot load
        (a registration being saved right now, or a killed one) is skipped with a warning
        instead of failing the whole listing.
        """
        aliases = self._read_aliases()
        name_dir = self.store_dir / self.model_name
        if not name_dir.is_dir():
            return []
        infos = []
        for entry in sorted(name_dir.iterdir()):
            if not entry.is_dir():  # BentoML keeps a `latest` pointer file here
                continue
            try:
                model = bentoml.models.get(
                    f"{self.model_name}:{entry.name}", _model_store=self._store
                )
            except BentoMLException as exc:
                logger.warning("skipping unreadable model directory %s: %s", entry, exc)
                continue
            infos.append(self._info(model, aliases))
        return sorted(infos, key=lambda info: info.created)

    def get(self, version_or_alias: str) -> VersionInfo:
        """Looks up a version by alias, full tag, version, unique version prefix or ``latest``.

        Raises:
            RegistryError: The alias is not set, or the reference is ambiguous/invalid.
            VersionNotFoundError: The version (or the alias's target) is not in the store.
        """
        aliases = self._read_aliases()
        if version_or_alias in ALIAS_NAMES:
            tag = getattr(aliases, version_or_alias)
            if tag is None:
                raise RegistryError(
                    f"alias {version_or_alias!r} of {self.model_name} is not set "
                    f"(registry {self.registry_dir})"
                )
            return self._info(self._alias_model(version_or_alias, tag), aliases)
        return self._info(self._model(version_or_alias), aliases)

    def production(self) -> VersionInfo | None:
        """The production version, or None when none was promoted yet.

        Raises:
            VersionNotFoundError: Production points at a version deleted from the store.
        """
        aliases = self._read_aliases()
        if aliases.production is None:
            return None
        return self._info(self._alias_model(PRODUCTION, aliases.production), aliases)

    def production_tag(self) -> str | None:
        """Production's tag from ``aliases.json`` alone: a cheap, lock-free poll for servers.

        Does not check that the version still exists; :meth:`production` does.
        """
        return self._read_aliases().production

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, rejection and rollback, oldest first."""
        with self._lock():
            if not self.history_path.exists():
                return []
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

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
        directories (MSE on the evaluation split; lower is better). The candidate wins when
        there is no production yet or ``cand_mse < prod_mse * (1 - margin)``. On a win,
        ``previous <- production`` and ``production <- candidate`` in one atomic write.
        Either way the decision goes to the history. Scoring runs outside the lock; if
        production moved meanwhile, the comparison is redone against the new production.

        Data lineage comes first (`lineage_conflict`): a candidate trained on other data
        (dataset, series, channel schema, frequency) is rejected without scoring, unless
        ``force``, and the override is recorded in the history. A candidate trained on
        generated data never replaces a production model trained on real data, forced or
        not.

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
        for attempt in range(1, MAX_PROMOTION_ATTEMPTS + 1):
            prod_tag = self._read_aliases().production
            prod_mse: float | None = None
            # Models of different data are not compared on one split at all: scoring
            # production on the candidate's data (generated, another series) means nothing.
            conflict = self._conflict_with(cand, prod_tag)
            if (
                score is not None
                and not force
                and prod_tag != cand.tag
                and conflict is None
                and miscalibrated is None
            ):
                if cand_mse is None:
                    cand_mse = _score(score, cand, "candidate")
                if prod_tag is not None:
                    if scored_production is None or scored_production[0] != prod_tag:
                        prod = self._info(self._alias_model(PRODUCTION, prod_tag), _Aliases())
                        scored_production = (prod_tag, _score(score, prod, "production"))
                    prod_mse = scored_production[1]
            with self._lock():
                current = self._read_aliases()
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
                    current, cand.tag, cand_mse, prod_mse, margin, force, miscalibrated
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
        with self._lock():
            current = self._read_aliases()
            if current.previous is None:
                raise RegistryError(
                    f"cannot roll back {self.model_name}: alias 'previous' is not set"
                )
            self._alias_model(PREVIOUS, current.previous)  # must exist
            # If production itself was deleted, do not point `previous` at a missing version.
            rolled_back = current.production
            keep = rolled_back is not None and self._exists(rolled_back)
            new = _Aliases(
                production=current.previous,
                previous=rolled_back if keep else None,
                revision=current.revision + 1,
            )
            self._write_aliases(new)
            reason = f"rollback from {rolled_back} to {current.previous}"
            self._append_history(
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
        with self._lock():
            model = self._model(version)
            tag = str(model.tag)
            names = self._read_aliases().names_for(tag)
            if names:
                raise RegistryError(f"refusing to delete {tag}: it is {' and '.join(names)}")
            bentoml.models.delete(tag, _model_store=self._store)
        logger.info("deleted %s", tag)

    # ------------------------------------------------------------------ internals

    def _decide_locked(
        self,
        current: _Aliases,
        cand_tag: str,
        cand_mse: float | None,
        prod_mse: float | None,
        margin: float,
        force: bool,
        miscalibrated: str | None = None,
    ) -> PromotionDecision:
        prod_tag = current.production
        if not self._exists(cand_tag):
            raise VersionNotFoundError(f"{cand_tag} was deleted from the model store")
        conflict = self._conflict_with(self.get(cand_tag), prod_tag)
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
        else:
            assert cand_mse is not None and prod_mse is not None
            threshold = prod_mse * (1.0 - margin)
            promoted = cand_mse < threshold
            relation = "<" if promoted else ">="
            reason = (
                f"candidate mse {cand_mse:.6g} {relation} production mse {prod_mse:.6g} "
                f"x (1 - margin {margin:g}) = {threshold:.6g}"
            )
        after = current
        if promoted:
            # Never leave `previous` pointing at a version that is gone (forced replacement
            # of a deleted production).
            keep = prod_tag is not None and self._exists(prod_tag)
            after = _Aliases(
                production=cand_tag,
                previous=prod_tag if keep else None,
                revision=current.revision + 1,
            )
            self._write_aliases(after)
        self._append_history(
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

    def _conflict_with(self, cand: VersionInfo, prod_tag: str | None) -> tuple[str, str] | None:
        if prod_tag is None or prod_tag == cand.tag or not self._exists(prod_tag):
            return None
        return lineage_conflict(cand.metadata, self._model(prod_tag).info.metadata)

    def _lock(self) -> filelock.BaseFileLock:
        # A fresh lock object per operation: flock on separate descriptors excludes threads
        # of this process as well as other processes.
        return filelock.FileLock(self._lock_path, timeout=self._lock_timeout)

    def _full_tag(self, ref: str) -> str:
        name, sep, version = ref.partition(":")
        if not sep:
            return f"{self.model_name}:{ref}"
        if name != self.model_name:
            raise RegistryError(f"{ref!r} is not a version of {self.model_name}")
        return ref

    def _model(self, ref: str) -> Model:
        try:
            return bentoml.models.get(self._full_tag(ref), _model_store=self._store)
        except NotFound as exc:
            raise VersionNotFoundError(
                f"{ref!r} is not a version of {self.model_name} in the model store {self.store_dir}"
            ) from exc
        except (BentoMLException, ValueError) as exc:  # ambiguous prefix, invalid tag
            raise RegistryError(f"cannot resolve {ref!r}: {exc}") from exc

    def _alias_model(self, alias: str, tag: str) -> Model:
        try:
            return self._model(tag)
        except VersionNotFoundError as exc:
            raise VersionNotFoundError(
                f"alias {alias!r} points to {tag}, which is no longer in the model store "
                f"{self.store_dir} (deleted?); promote another version with force=True "
                "or roll back"
            ) from exc

    def _exists(self, tag: str) -> bool:
        name, _, version = tag.partition(":")
        return (self.store_dir / name / version / "model.yaml").is_file()

    def _info(self, model: Model, aliases: _Aliases) -> VersionInfo:
        tag = str(model.tag)
        metadata = dict(model.info.metadata)
        metrics = metadata.get("metrics")
        return VersionInfo(
            tag=tag,
            version=str(model.tag.version),
            created=model.info.creation_time,
            metrics=dict(metrics) if isinstance(metrics, dict) else {},
            metadata=metadata,
            aliases=aliases.names_for(tag),
            path=Path(model.path),
        )

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

    def _read_aliases(self) -> _Aliases:
        try:
            raw = self.aliases_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _Aliases()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:  # cannot happen through this class: os.replace
            raise RegistryError(f"{self.aliases_path} is corrupt: {exc}") from exc
        if data.get("model_name") != self.model_name:
            raise RegistryError(
                f"{self.registry_dir} holds aliases of {data.get('model_name')!r}, not "
                f"{self.model_name!r}; give each model name its own registry_dir"
            )
        return _Aliases(
            production=data.get(PRODUCTION),
            previous=data.get(PREVIOUS),
            revision=int(data.get("revision", 0)),
        )

    def _write_aliases(self, aliases: _Aliases) -> None:
        """Replaces aliases.json atomically; the caller holds the lock."""
        payload = {
            "model_name": self.model_name,
            PRODUCTION: aliases.production,
            PREVIOUS: aliases.previous,
            "revision": aliases.revision,
            "updated_at": _now(),
        }
        write_json(self.aliases_path, payload)  # 0644: the server may be another user

    def _append_history(
        self,
        *,
        action: str,
        candidate: str,
        before: _Aliases,
        after: _Aliases,
        reason: str,
        **extra: Any,
    ) -> None:
        """Appends one history line; the caller holds the lock."""
        entry = {
            "time": _now(),
            "action": action,
            "candidate": candidate,
            "production_before": before.production,
            "previous_before": before.previous,
            "production_after": after.production,
            "previous_after": after.previous,
            "revision": after.revision,
            "reason": reason,
            **extra,
        }
        with self.history_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _score(score: Callable[[Path], float], info: VersionInfo, role: str) -> float:
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
    logger.info("scored %s %s: mse %.6g", role, info.tag, value)
    return value


def stored_mse_scorer(registry: Registry, candidate: VersionInfo) -> Callable[[Path], float]:
    """A scorer that reads stored ``metrics.json`` MSEs instead of re-evaluating.

    Stored metrics are only comparable when both versions were evaluated on the same split,
    so scoring any version other than ``candidate`` raises unless its metadata
    ``eval_split_hash`` equals the candidate's (and both are set). Because the check runs
    inside the scorer, it also holds if production changes while the promotion runs.

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
        if info.mse is None:
            raise RegistryError(f"{info.tag} has no stored mse")
        return info.mse

    return score
