"""Registered versions: immutable, verified copies of model artifacts in BentoML's model store.

Every registered version is a BentoML model (``bentoml.models.create``) holding a verified
copy of one model artifact directory plus its metadata (metrics, params, data hash, git
revision, ``registered_at``). BentoML versions never change after they are saved; which
version is ``production`` lives beside the store (``serving.registry_aliases``).

BentoML 1.4.40 caches ``BENTOML_HOME`` in a process-wide singleton the first time any store
is touched, so this module builds its own ``ModelStore`` from ``BENTOML_HOME`` (read when a
store is opened) and passes it to ``bentoml.models.*`` explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
from bentoml._internal.models import ModelStore  # no public way to open a store at a path
from bentoml.exceptions import BentoMLException, NotFound

from llata_core.forecaster import (
    check_metrics,
    copy_artifact,
    headline_metric,
    manifest_digest,
    read_metrics,
    verify_manifest,
)

if TYPE_CHECKING:
    from bentoml._internal.models import Model

logger = logging.getLogger(__name__)

# What a long-term artifact (headline `mse`) must record; any other task needs its headline.
REQUIRED_METRICS = ("mse", "mae")


class RegistryError(RuntimeError):
    """A registry operation cannot proceed; the registry state is unchanged."""


class VersionNotFoundError(RegistryError, LookupError):
    """A version (or the version an alias points to) is not in the model store."""


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the registry sees it.

    Attributes:
        tag: Full BentoML tag, ``name:version``.
        version: The version part of the tag.
        created: BentoML's creation time (UTC).
        metrics: The artifact's metrics: its headline (``metric``; ``mse`` and ``mae`` for
            long-term models, ``owa`` for M4 ones).
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

    @property
    def headline(self) -> str:
        """The name of the metric this version is judged by (lower is better)."""
        return headline_metric(self.metrics)

    @property
    def score(self) -> float | None:
        """The stored value of the headline metric, if any."""
        value = self.metrics.get(self.headline)
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


class VersionStore:
    """The versions of one model name in the model store ``<bentoml_home>/models``.

    Args:
        model_name: BentoML model name (lowercase letters, digits, ``-``, ``_``, ``.``).
        bentoml_home: BentoML home holding the model store.

    Raises:
        ValueError: The model name is not a valid BentoML name.
    """

    def __init__(self, model_name: str, bentoml_home: Path) -> None:
        try:
            valid = str(bentoml.Tag(model_name, None)) == model_name
        except (ValueError, BentoMLException):
            valid = False
        if not valid:
            raise ValueError(f"invalid BentoML model name {model_name!r}")
        self.model_name = model_name
        self.store_dir = bentoml_home / "models"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._store = ModelStore(self.store_dir)

    def register(self, artifact_dir: str | os.PathLike[str], *, metadata: Mapping[str, Any]) -> str:
        """Copies a verified artifact into a new, immutable BentoML model version.

        BentoML's ``models.create`` stages the files in a temporary directory and only
        saves into the store when the ``with`` block exits cleanly, so a failed copy leaves
        nothing in the store. The copy is verified against the manifest before that exit, so
        an artifact changing under our feet is caught too.

        Args:
            artifact_dir: Directory with config, weights, scaler, metrics and manifest.
            metadata: Params, data hash, ``git_revision``, ``eval_split_hash``, ... (JSON
                values, no None). ``metrics`` comes from the artifact; a caller-given
                ``metrics`` must equal it. ``registered_at`` is added.

        Returns:
            The new version's tag, ``name:version``.

        Raises:
            ArtifactError: The artifact is incomplete or does not match its manifest.
            ValueError: The metadata cannot be stored.
        """
        src = Path(artifact_dir)
        files = verify_manifest(src)
        metrics = read_metrics(src)
        name = headline_metric(metrics)
        check_metrics(src, metrics, REQUIRED_METRICS if name == "mse" else (name,))
        meta = _normalise_metadata(metadata)
        if "metrics" in meta and meta["metrics"] != metrics:
            raise ValueError(f"metadata['metrics'] differs from the metrics of the artifact {src}")
        meta["metrics"] = metrics
        meta["manifest_sha256"] = manifest_digest(src)
        meta["registered_at"] = datetime.now(UTC).isoformat()
        with bentoml.models.create(
            self.model_name, metadata=meta, _model_store=self._store
        ) as model:
            staging = Path(model.path)  # a temp dir until the block exits, not the store
            try:
                copy_artifact(src, staging, files)
            except BaseException:
                # BentoML re-raises without saving, but leaves its staging dir to a GC
                # finaliser; remove it now so a failed large copy does not fill /tmp.
                shutil.rmtree(staging, ignore_errors=True)
                raise
        tag = str(model.tag)
        logger.info("registered %s from %s (%s %s)", tag, src, name, metrics[name])
        return tag

    def models(self) -> list[Model]:
        """Every version BentoML can load, in directory order.

        A directory BentoML cannot load (a registration being saved right now, or a killed
        one) is skipped with a warning instead of failing the whole listing.
        """
        name_dir = self.store_dir / self.model_name
        if not name_dir.is_dir():
            return []
        models = []
        for entry in sorted(name_dir.iterdir()):
            if not entry.is_dir():  # BentoML keeps a `latest` pointer file here
                continue
            try:
                models.append(
                    bentoml.models.get(f"{self.model_name}:{entry.name}", _model_store=self._store)
                )
            except BentoMLException as exc:
                logger.warning("skipping unreadable model directory %s: %s", entry, exc)
        return models

    def model(self, ref: str) -> Model:
        """The version a full tag, version, unique version prefix or ``latest`` names.

        Raises:
            RegistryError: The reference is ambiguous, invalid or of another model name.
            VersionNotFoundError: No such version.
        """
        try:
            return bentoml.models.get(self._full_tag(ref), _model_store=self._store)
        except NotFound as exc:
            raise VersionNotFoundError(
                f"{ref!r} is not a version of {self.model_name} in the model store {self.store_dir}"
            ) from exc
        except (BentoMLException, ValueError) as exc:  # ambiguous prefix, invalid tag
            raise RegistryError(f"cannot resolve {ref!r}: {exc}") from exc

    def exists(self, tag: str) -> bool:
        """Whether the full tag ``name:version`` is saved in the store."""
        name, _, version = tag.partition(":")
        return (self.store_dir / name / version / "model.yaml").is_file()

    def delete(self, tag: str) -> None:
        """Removes a version from the store (the caller checks that no alias needs it)."""
        bentoml.models.delete(tag, _model_store=self._store)

    def _full_tag(self, ref: str) -> str:
        name, sep, version = ref.partition(":")
        if not sep:
            return f"{self.model_name}:{ref}"
        if name != self.model_name:
            raise RegistryError(f"{ref!r} is not a version of {self.model_name}")
        return ref


def version_info(model: Model, aliases: tuple[str, ...]) -> VersionInfo:
    """The registry's view of a stored version, with the alias names pointing at it."""
    metadata = dict(model.info.metadata)
    metrics = metadata.get("metrics")
    return VersionInfo(
        tag=str(model.tag),
        version=str(model.tag.version),
        created=model.info.creation_time,
        metrics=dict(metrics) if isinstance(metrics, dict) else {},
        metadata=metadata,
        aliases=aliases,
        path=Path(model.path),
    )


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
