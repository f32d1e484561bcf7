"""The model artifact: the one place that knows its files and their format.

An artifact is one self-contained directory:
    config.json        the LlataConfig, the truncated backbone's config, channels, metadata
    model.safetensors  the inference model only (student, LoRA merged)
    scaler.json        the per-channel scaler fitted on the training rows
    metrics.json       evaluation results
    intervals.safetensors  (optional) sorted conformal scores [n, horizon, channels], which
                       give calibrated prediction intervals (`llata_core.intervals`)
    manifest.json      SHA-256 of every file above
A combination of trained models (`llata_core.combination`) is an artifact too, of kind
`combination` (`llata_core.forecaster.combined`): its members are complete artifacts in
sub-directories, and its one manifest names every file, the members' included.
It is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written model; reading checks the manifest and never unpickles anything. An artifact
without conformal scores loads and refuses interval levels; `add_intervals` (`llata
calibrate`) rewrites it, atomically, with its scores.

Everything else reads an artifact through this package's functions (`read_artifact`,
`read_artifact_record`, `read_metrics` in `llata_core.forecaster.metrics`), never by file
name. Building a model from what
is read is `Forecaster.load`'s job (`llata_core.forecaster.predict`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llata_core.atomic import swap_directory
from llata_core.config import LlataConfig
from llata_core.data import Scaler, file_sha256
from llata_core.intervals import ConformalScores

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from llata_core.baselines import BaselineForecastModel
    from llata_core.model import ForecastModel

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARTIFACT_FILES = ("config.json", "model.safetensors", "scaler.json", "metrics.json")
# The kinds of artifact a manifest names (`kind`; a manifest without one is a single model)
# and the files each must have at its top level.
MODEL_KIND = "model"
COMBINATION_KIND = "combination"
REQUIRED_FILES = {
    MODEL_KIND: ARTIFACT_FILES,
    COMBINATION_KIND: ("config.json", "scaler.json", "metrics.json"),
}
INTERVALS_FILE = "intervals.safetensors"
# What `add_intervals` rewrites; every other file (config, weights, scaler) decides the point
# forecasts, so two artifacts that agree on those forecast alike.
CALIBRATION_FILES = frozenset({"metrics.json", INTERVALS_FILE})


class ArtifactError(ValueError):
    """A model directory that is missing, incomplete, tampered with or incompatible.

    The one artifact error of the project: the registry (`serving.registry`) raises it too.
    """


def _write_manifest(root: Path, names: Sequence[str], kind: str) -> None:
    files = {name: file_sha256(root / name) for name in names}
    # A single model's manifest keeps the form it always had, so old readers read it.
    manifest = {"files": files} if kind == MODEL_KIND else {"kind": kind, "files": files}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def build_artifact_dir(
    dest: Path, fill: Callable[[Path], Sequence[str]], kind: str = MODEL_KIND
) -> Path:
    """Fill a temporary sibling of `dest` (`fill` returns the files to list in the manifest),
    write its manifest and swap it into place; on any failure `dest` is untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        _write_manifest(tmp, fill(tmp), kind)
        swap_directory(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def save_artifact(
    path: str | Path,
    model: ForecastModel | BaselineForecastModel,
    scaler: Scaler,
    metrics: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    intervals: ConformalScores | None = None,
) -> Path:
    """Write a model artifact atomically.

    Args:
        path: the artifact directory to create.
        model: the inference model.
        scaler: the scaler the model's training data was fitted with.
        metrics: evaluation results (JSON-able).
        metadata: lineage (backbone, data source and hash, git revision, timings...).
        overwrite: replace an existing artifact (the old one is removed only after the new
            one is complete).
        intervals: the model's conformal scores (`llata_core.evaluate.calibrate`), which
            let the artifact answer interval levels.

    Returns:
        The artifact directory.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise ArtifactError(f"{dest} exists; pass overwrite=True to replace it")
    if intervals is not None:
        check_intervals(dest, intervals, model.cfg.data.horizon, len(scaler.channels))

    def fill(tmp: Path) -> list[str]:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = {
            "format_version": FORMAT_VERSION,
            "llata": model.cfg.to_dict(),
            "backbone_config": (
                model.backbone_config.to_dict() if model.backbone_config is not None else None
            ),
            "channels": list(scaler.channels),
            "metadata": dict(metadata or {}),
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "scaler.json").write_text(json.dumps(scaler.to_dict(), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, default=float))
        if intervals is None:
            return list(ARTIFACT_FILES)
        intervals.save(tmp / INTERVALS_FILE)
        return [*ARTIFACT_FILES, INTERVALS_FILE]

    return build_artifact_dir(dest, fill)


def check_intervals(root: Path, scores: ConformalScores, horizon: int, n_channels: int) -> None:
    """Refuse conformal scores that do not cover the model's horizon and channels."""
    if (scores.horizon, scores.n_channels) != (horizon, n_channels):
        raise ArtifactError(
            f"{root}: conformal scores cover {scores.horizon} steps x {scores.n_channels} "
            f"channels; the model forecasts {horizon} x {n_channels}"
        )


def add_intervals(
    path: str | Path, scores: ConformalScores, metrics: Mapping[str, Any] | None = None
) -> Path:
    """Store conformal scores in an existing artifact, without retraining.

    The artifact is verified, copied with the scores (and `metrics` merged into its
    metrics.json) to a temporary sibling with a new manifest, and swapped into place, so a
    reader sees the old artifact or the new one, never a mix. Scores already there are
    replaced.

    Args:
        path: the artifact directory.
        scores: from `llata_core.evaluate.calibrate` on this model.
        metrics: keys to add to (or replace in) metrics.json, e.g. test coverage.

    Returns:
        The artifact directory.

    Raises:
        ArtifactError: the artifact fails verification or the scores do not fit its model.
    """
    root = Path(path)
    raw, files = verified_artifact(root)
    try:
        horizon = int(raw["llata"]["data"]["horizon"])
        n_channels = len(raw["channels"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{root}: config.json lacks the horizon or channels ({err})") from err
    check_intervals(root, scores, horizon, n_channels)

    def fill(tmp: Path) -> list[str]:
        names = [name for name in files if name != INTERVALS_FILE]
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, tmp / name)
            if file_sha256(tmp / name) != files[name].lower():
                raise ArtifactError(f"{root}: {name} changed while it was being copied")
        if metrics:
            merged = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
            merged.update(metrics)
            (tmp / "metrics.json").write_text(json.dumps(merged, indent=2, default=float))
        scores.save(tmp / INTERVALS_FILE)
        return [*names, INTERVALS_FILE]

    return build_artifact_dir(root, fill, artifact_kind(root))


def _check_manifest_entry(root: Path, rel: str) -> None:
    # A manifest is input: refuse entries that would make us read (and copy) outside the
    # artifact directory, or that name the manifest itself.
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or rel in ("", ".", MANIFEST_NAME):
        raise ArtifactError(f"{root}: invalid file name {rel!r} in {MANIFEST_NAME}")


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise ArtifactError(f"model directory not found: {root}")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{root}: {MANIFEST_NAME} is missing (incomplete artifact)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{root}: {MANIFEST_NAME} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{root}: {MANIFEST_NAME} must be {{'files': {{name: sha256}}}}")
    kind = manifest.get("kind", MODEL_KIND)
    if kind not in REQUIRED_FILES:
        raise ArtifactError(
            f"{root}: {MANIFEST_NAME} names the artifact kind {kind!r}; "
            f"known: {', '.join(REQUIRED_FILES)}"
        )
    return manifest


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """`model` (one trained model) or `combination` (trained models and their weights), as
    the manifest says; the manifest's files are `verify_manifest`'s to check."""
    return str(_read_manifest(Path(path)).get("kind", MODEL_KIND))


def verify_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check that an artifact directory is complete and matches its manifest.

    The manifest (`{"files": {relative_name: sha256}}`, with `"kind": "combination"` for a
    combination) must list every file its kind requires (`REQUIRED_FILES`: a model's
    `ARTIFACT_FILES`); every listed file, sub-directories included, must exist with that
    hash. Files the manifest does
    not list are not part of the artifact (the registry does not copy them), so they are not
    an error here. Nothing is parsed beyond the manifest: see `verify_artifact`.

    Args:
        path: The artifact directory.

    Returns:
        The manifest's `files` mapping (relative POSIX name to sha256 hex digest).

    Raises:
        ArtifactError: Naming the missing, unlisted or tampered file.
    """
    root = Path(path)
    manifest = _read_manifest(root)
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise ArtifactError(f"{root}: {MANIFEST_NAME} must be {{'files': {{name: sha256}}}}")
    for name in REQUIRED_FILES[manifest.get("kind", MODEL_KIND)]:
        if not (root / name).is_file():
            raise ArtifactError(f"{root}: {name} is missing (incomplete artifact)")
        if name not in files:
            raise ArtifactError(f"{root}: {name} is not listed in {MANIFEST_NAME}")
    for rel, expected in sorted(files.items()):
        _check_manifest_entry(root, rel)
        file = root / rel
        if not file.is_file():
            raise ArtifactError(f"{root}: {rel} is missing (listed in {MANIFEST_NAME})")
        if file_sha256(file) != expected.lower():
            raise ArtifactError(
                f"{root}: {rel} does not match its checksum in {MANIFEST_NAME} "
                "(truncated, tampered or partially written)"
            )
    return dict(files)


def is_artifact(path: str | os.PathLike[str]) -> bool:
    """Whether a saved artifact is at `path`: an artifact is renamed into place only once
    it is complete, with its manifest, so this does not verify its files (see
    `verify_manifest`)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def manifest_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of an artifact's manifest: one digest that names every file's content."""
    return file_sha256(Path(path) / MANIFEST_NAME)


def copy_artifact(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], files: Mapping[str, str]
) -> None:
    """Copy an artifact's files into the directory `dst`, the manifest last, and verify the
    copy: a copy that fails part-way (a full disk) raises, and `dst` is then the caller's to
    remove.

    Args:
        src: The artifact directory, already checked by `verify_manifest`.
        dst: An existing directory.
        files: What `verify_manifest(src)` returned (the source is not read twice).

    Raises:
        ArtifactError: The copy does not match the manifest.
        OSError: A file could not be copied.
    """
    source, target = Path(src), Path(dst)
    for rel in [*sorted(files), MANIFEST_NAME]:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)
    verify_manifest(target)


def verify_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the manifest (`verify_manifest`) and the artifact format; return `config.json`."""
    return verified_artifact(path)[0]


def verified_artifact(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """`verify_artifact`'s check, once: `config.json` and the files the manifest verified
    (for readers that need both, so that no file is hashed twice)."""
    root = Path(path)
    files = verify_manifest(root)
    config = read_json_object(root, "config.json")
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{root}: artifact format {config.get('format_version')} is not {FORMAT_VERSION}"
        )
    return config, files


def read_json_object(root: Path, name: str) -> dict[str, Any]:
    """An artifact file that must hold a JSON object (`ArtifactError` otherwise)."""
    try:
        value = json.loads((root / name).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{root}: {name} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ArtifactError(f"{root}: {name} must be a JSON object")
    return value


@dataclass(frozen=True)
class ArtifactRecord:
    """What an artifact says about itself, read without building its model.

    Attributes:
        config: the llata configuration it was trained with (JSON form).
        channels: its channel names, in model order.
        metadata: lineage (data, backbone, git revision, candidate, ...).
        metrics: its `metrics.json`.
    """

    config: dict[str, Any]
    channels: tuple[str, ...]
    metadata: dict[str, Any]
    metrics: dict[str, Any]


def read_artifact_record(path: str | os.PathLike[str]) -> ArtifactRecord:
    """The configuration, channels, metadata and metrics of an artifact, manifest-verified.

    For callers that record or compare artifacts (the registry stage) and must not know
    the artifact's file names.

    Raises:
        ArtifactError: the artifact is incomplete, tampered with or not JSON where it must be.
    """
    root = Path(path)
    verify_manifest(root)
    try:
        raw = json.loads((root / "config.json").read_text(encoding="utf-8"))
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{root}: unreadable artifact record ({err})") from err
    return ArtifactRecord(
        config=dict(raw["llata"]),
        channels=tuple(raw.get("channels", ())),
        metadata=dict(raw.get("metadata") or {}),
        metrics=dict(metrics),
    )


@dataclass(frozen=True)
class ArtifactContents:
    """Everything an artifact holds, verified and parsed, before a model is built from it.

    Attributes:
        config: the llata configuration the model was trained with.
        backbone_config: the truncated backbone's configuration (JSON form); None for a
            baseline.
        scaler: the scaler fitted on the training rows.
        metrics: its `metrics.json`.
        metadata: lineage (data, backbone, git revision, candidate, ...).
        state: the inference model's weights, on the device they were asked for.
        intervals: the conformal scores, when the manifest lists them.
    """

    config: LlataConfig
    backbone_config: dict[str, Any] | None
    scaler: Scaler
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    state: dict[str, torch.Tensor]
    intervals: ConformalScores | None

    def pretrained_config(self) -> PretrainedConfig | None:
        """The backbone's transformers configuration (None for a baseline).

        Raises:
            ArtifactError: the stored configuration names no known model type.
        """
        if self.backbone_config is None:
            return None
        from transformers import AutoConfig  # here, not at import: see `forecaster.predict`

        raw = dict(self.backbone_config)
        model_type = raw.pop("model_type", None)
        if model_type is None:
            raise ArtifactError("config.json: backbone_config has no model_type")
        try:
            return AutoConfig.for_model(model_type, **raw)
        except (KeyError, ValueError) as err:
            raise ArtifactError(f"config.json: unusable backbone_config ({err})") from err


def read_artifact(path: str | os.PathLike[str], *, device: str = "cpu") -> ArtifactContents:
    """Verify an artifact (`verify_artifact`) and read all of it.

    Args:
        path: the artifact directory.
        device: where the weights are loaded.

    Raises:
        ArtifactError: missing, incomplete, tampered or unreadable artifact, or conformal
            scores that do not fit its model.
    """
    root = Path(path)
    raw, files = verified_artifact(root)
    # Only a file the manifest lists (and so has verified) is part of the artifact.
    listed = INTERVALS_FILE in files
    try:
        cfg = LlataConfig.model_validate(raw["llata"])
        backbone = raw["backbone_config"] if cfg.model.kind == "llata" else None
        if cfg.model.kind == "llata" and not isinstance(backbone, dict):
            raise ValueError("an llata model's backbone_config must be a JSON object")
        scaler = Scaler.from_dict(json.loads((root / "scaler.json").read_text()))
        metrics = json.loads((root / "metrics.json").read_text())
        state = load_file(str(root / "model.safetensors"), device=device)
        intervals = ConformalScores.load(root / INTERVALS_FILE) if listed else None
    except (KeyError, ValueError, SafetensorError) as err:
        raise ArtifactError(f"{root}: cannot read the artifact ({err})") from err
    if intervals is not None:
        check_intervals(root, intervals, cfg.data.horizon, len(scaler.channels))
    return ArtifactContents(
        config=cfg,
        backbone_config=backbone,
        scaler=scaler,
        metrics=metrics,
        metadata=raw.get("metadata", {}),
        state=state,
        intervals=intervals,
    )
