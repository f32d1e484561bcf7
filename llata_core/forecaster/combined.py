"""The combination artifact: trained models and their weights, in one directory.

    config.json        the longest member's LlataConfig (`llata`: the combination's input
                       size, horizon and data), channels, metadata, and `combination`: each
                       member's name, sub-directory, family, lookback and weight
    scaler.json        the members' common scaler
    metrics.json       the combination's own evaluation (validation and test)
    intervals.safetensors  conformal scores of the combination's own residuals
    members/<name>/    each member, a complete artifact (with its own manifest)
    manifest.json      `kind: combination`, SHA-256 of every file above, the members' too

One manifest covers every byte, so a member's file changed after writing fails the check of
the whole (`verify_manifest`), and the registry, `copy_artifact` and `add_intervals` (`llata
calibrate`) treat a combination as they treat any artifact. Building the model is
`Forecaster.load`'s job.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llata_core.config import LlataConfig
from llata_core.data import Scaler
from llata_core.forecaster.artifact import (
    COMBINATION_KIND,
    FORMAT_VERSION,
    INTERVALS_FILE,
    MANIFEST_NAME,
    ArtifactError,
    build_artifact_dir,
    check_intervals,
    copy_artifact,
    read_json_object,
    verified_artifact,
)
from llata_core.intervals import ConformalScores

MEMBERS_DIR = "members"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class MemberEntry:
    """One member as the combination's config.json records it.

    Attributes:
        name: the member's name (its candidate's).
        path: its artifact directory, relative to the combination's.
        weight: its weight in the mean.
    """

    name: str
    path: str
    weight: float


@dataclass(frozen=True)
class CombinationContents:
    """A combination artifact, verified and parsed, before its members are loaded.

    Attributes:
        config: the longest member's configuration.
        scaler: the members' common scaler.
        metrics: the combination's metrics.json.
        metadata: lineage (data, candidate, members, ...).
        intervals: the combination's conformal scores, when the manifest lists them.
        members: the members in order, with their weights.
    """

    config: LlataConfig
    scaler: Scaler
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    intervals: ConformalScores | None
    members: tuple[MemberEntry, ...]


def save_combination(
    path: str | Path,
    members: Sequence[tuple[str, Path]],
    weights: Sequence[float],
    config: LlataConfig,
    scaler: Scaler,
    metrics: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    intervals: ConformalScores | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a combination artifact atomically: each member artifact is verified and copied
    into `members/<name>/`, and one manifest lists every file.

    Args:
        path: the artifact directory to create.
        members: `(name, artifact directory)` of each member, in the combination's order.
        weights: their weights (the combination model checked them).
        config: the combination's configuration (the longest member's).
        scaler: the members' common scaler.
        metrics: the combination's evaluation (JSON-able).
        metadata: lineage to record.
        intervals: the combination's conformal scores.
        overwrite: replace an existing artifact (after the new one is complete).

    Raises:
        ArtifactError: fewer than two members, a bad member name, a member artifact that
            fails verification, or scores that do not fit.
    """
    dest = Path(path)
    if dest.exists() and not overwrite:
        raise ArtifactError(f"{dest} exists; pass overwrite=True to replace it")
    if len(members) < 2 or len(weights) != len(members):
        raise ArtifactError(f"{dest}: a combination needs two or more members, one weight each")
    for name, _ in members:
        if not _NAME.match(name):
            raise ArtifactError(f"{dest}: member name {name!r} cannot name a directory")
    if intervals is not None:
        check_intervals(dest, intervals, config.data.horizon, len(scaler.channels))
    # Each member is checked once here (manifest and format); `copy_artifact` then checks
    # its copy against the same manifest.
    verified = [(name, Path(src), *verified_artifact(src)) for name, src in members]

    def fill(tmp: Path) -> list[str]:
        names: list[str] = []
        entries = []
        for (name, src, raw, files), weight in zip(verified, weights, strict=True):
            where = f"{MEMBERS_DIR}/{name}"
            copy_artifact(src, tmp / where, files)
            names += [f"{where}/{rel}" for rel in [*sorted(files), MANIFEST_NAME]]
            member_cfg = raw["llata"]
            entries.append(
                {
                    "name": name,
                    "path": where,
                    "kind": member_cfg["model"]["kind"],
                    "input_size": member_cfg["data"]["input_size"],
                    "weight": float(weight),
                }
            )
        document = {
            "format_version": FORMAT_VERSION,
            "llata": config.to_dict(),
            "channels": list(scaler.channels),
            "combination": {"members": entries},
            "metadata": dict(metadata or {}),
        }
        (tmp / "config.json").write_text(json.dumps(document, indent=2, default=str))
        (tmp / "scaler.json").write_text(json.dumps(scaler.to_dict(), indent=2))
        (tmp / "metrics.json").write_text(json.dumps(dict(metrics), indent=2, default=float))
        top = ["config.json", "scaler.json", "metrics.json"]
        if intervals is not None:
            intervals.save(tmp / INTERVALS_FILE)
            top.append(INTERVALS_FILE)
        return [*top, *names]

    return build_artifact_dir(dest, fill, COMBINATION_KIND)


def read_combination(path: str | os.PathLike[str]) -> CombinationContents:
    """Verify a combination artifact (every file, the members' included) and read it.

    Raises:
        ArtifactError: missing, incomplete, tampered or unreadable artifact.
    """
    root = Path(path)
    raw, listed = verified_artifact(root)
    try:
        cfg = LlataConfig.model_validate(raw["llata"])
        scaler = Scaler.from_dict(read_json_object(root, "scaler.json"))
        members = tuple(
            MemberEntry(str(m["name"]), str(m["path"]), float(m["weight"]))
            for m in raw["combination"]["members"]
        )
        intervals = (
            ConformalScores.load(root / INTERVALS_FILE) if INTERVALS_FILE in listed else None
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{root}: cannot read the combination ({err})") from err
    for member in members:
        # Only a directory whose files the manifest verified is part of the artifact.
        if f"{member.path}/{MANIFEST_NAME}" not in listed or ".." in Path(member.path).parts:
            raise ArtifactError(f"{root}: member {member.name!r} is not listed in the manifest")
    if intervals is not None:
        check_intervals(root, intervals, cfg.data.horizon, len(scaler.channels))
    return CombinationContents(
        config=cfg,
        scaler=scaler,
        metrics=read_json_object(root, "metrics.json"),
        metadata=dict(raw.get("metadata") or {}),
        intervals=intervals,
        members=members,
    )
