"""The model artifact and the `Forecaster` that serves it.

An artifact is one self-contained directory:
    config.json        the LlataConfig, the truncated backbone's config, channels, metadata
    model.safetensors  the inference model only (student, LoRA merged)
    scaler.json        the per-channel scaler fitted on the training rows
    metrics.json       evaluation results
    intervals.safetensors  (optional) sorted conformal scores [n, horizon, channels], which
                       give calibrated prediction intervals (`llata_core.intervals`)
    manifest.json      SHA-256 of every file above
It is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written model; loading checks the manifest and never unpickles anything. An artifact
made before intervals existed loads as before and refuses interval levels; `add_intervals`
(`llata calibrate`) rewrites it, atomically, with its scores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from llata_core.atomic import swap_directory
from llata_core.config import LlataConfig, resolve_precision
from llata_core.data import Scaler, file_sha256
from llata_core.intervals import INTERVALS_FILE, ConformalScores, IntervalForecast, bounds

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from llata_core.baselines import BaselineForecastModel
    from llata_core.model import ForecastModel

# transformers, peft and the model classes are imported where a model is built, not here:
# the registry (and with it every `llata` command) imports this module for `verify_manifest`
# and `ArtifactError`, and those imports would add seconds to each start.

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ARTIFACT_FILES = ("config.json", "model.safetensors", "scaler.json", "metrics.json")


class ArtifactError(ValueError):
    """A model directory that is missing, incomplete, tampered with or incompatible.

    The one artifact error of the project: the registry (`serving.registry`) raises it too.
    """


class ForecastInputError(ValueError):
    """A history window the model cannot forecast from (shape, length, NaN...), or a request
    it cannot answer (bad interval levels, intervals beyond the calibrated horizon)."""


class IntervalsUnavailableError(ForecastInputError):
    """Interval levels asked of a model whose artifact holds no conformal scores."""


def _write_manifest(root: Path, names: Sequence[str]) -> None:
    manifest = {"files": {name: file_sha256(root / name) for name in names}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def _build_dir(dest: Path, fill: Callable[[Path], Sequence[str]]) -> Path:
    """Fill a temporary sibling of `dest` (`fill` returns the files to list in the manifest),
    write its manifest and swap it into place; on any failure `dest` is untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        _write_manifest(tmp, fill(tmp))
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
        _check_intervals(dest, intervals, model.cfg.data.horizon, len(scaler.channels))

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

    return _build_dir(dest, fill)


def _check_intervals(root: Path, scores: ConformalScores, horizon: int, n_channels: int) -> None:
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
    files = verify_manifest(root)
    raw = verify_artifact(root)
    try:
        horizon = int(raw["llata"]["data"]["horizon"])
        n_channels = len(raw["channels"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{root}: config.json lacks the horizon or channels ({err})") from err
    _check_intervals(root, scores, horizon, n_channels)

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

    return _build_dir(root, fill)


def _check_manifest_entry(root: Path, rel: str) -> None:
    # A manifest is input: refuse entries that would make us read (and copy) outside the
    # artifact directory, or that name the manifest itself.
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or rel in ("", ".", MANIFEST_NAME):
        raise ArtifactError(f"{root}: invalid file name {rel!r} in {MANIFEST_NAME}")


def verify_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check that an artifact directory is complete and matches its manifest.

    The manifest (`{"files": {relative_name: sha256}}`) must list every file of
    `ARTIFACT_FILES`; every listed file must exist with that hash. Files the manifest does
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
    if not root.is_dir():
        raise ArtifactError(f"model directory not found: {root}")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ArtifactError(f"{root}: {MANIFEST_NAME} is missing (incomplete artifact)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{root}: {MANIFEST_NAME} is not valid JSON ({err})") from err
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise ArtifactError(f"{root}: {MANIFEST_NAME} must be {{'files': {{name: sha256}}}}")
    for name in ARTIFACT_FILES:
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


def verify_artifact(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check the manifest (`verify_manifest`) and the artifact format; return `config.json`."""
    root = Path(path)
    verify_manifest(root)
    config = _read_json_object(root, "config.json")
    if config.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{root}: artifact format {config.get('format_version')} is not {FORMAT_VERSION}"
        )
    return config


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
    metrics = _read_json_object(root, "metrics.json")
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


def _read_json_object(root: Path, name: str) -> dict[str, Any]:
    try:
        value = json.loads((root / name).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{root}: {name} is not valid JSON ({err})") from err
    if not isinstance(value, dict):
        raise ArtifactError(f"{root}: {name} must be a JSON object")
    return value


def _backbone_config(raw: dict[str, Any]) -> PretrainedConfig:
    from transformers import AutoConfig

    raw = dict(raw)
    model_type = raw.pop("model_type", None)
    if model_type is None:
        raise ArtifactError("config.json: backbone_config has no model_type")
    return AutoConfig.for_model(model_type, **raw)


class Forecaster:
    """A loaded artifact that answers in the data's own units.

    Example:
        >>> fc = Forecaster.load("artifacts/model")
        >>> forecast = fc.predict(history)  # history: [>= input_size, channels]
        >>> bands = fc.predict(history, levels=(80, 95))  # IntervalForecast
        >>> bands.lower[80], bands.upper[80]  # [horizon, channels] each
    """

    def __init__(
        self,
        model: ForecastModel | BaselineForecastModel,
        scaler: Scaler,
        metrics: dict[str, Any],
        metadata: dict[str, Any],
        path: Path | None = None,
        intervals: ConformalScores | None = None,
    ):
        self.model = model.eval()
        self.scaler = scaler
        self.metrics = metrics
        self.metadata = metadata
        self.path = path
        self.intervals = intervals

    @property
    def config(self) -> LlataConfig:
        return self.model.cfg

    @property
    def input_size(self) -> int:
        return self.model.cfg.data.input_size

    @property
    def horizon(self) -> int:
        return self.model.cfg.data.horizon

    @property
    def channels(self) -> tuple[str, ...]:
        return self.scaler.channels

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", precision: str = "fp32") -> Forecaster:
        """Load and verify an artifact directory.

        Args:
            path: the artifact directory.
            device: where the model runs.
            precision: `fp32`, `bf16` (an LLaTA model's weights are cast to bfloat16 once:
                half the memory traffic, about 1.5x faster on CPUs with AVX512-BF16/AMX;
                the instance normalisation and the answer stay fp32) or `auto` (bf16 where
                the device computes it natively). Baselines always run in fp32.

        Raises:
            ArtifactError: missing, incomplete, tampered or incompatible artifact.
        """
        from llata_core.baselines import build_baseline
        from llata_core.model import ForecastModel

        precision = resolve_precision(precision, device)
        root = Path(path)
        raw = verify_artifact(root)
        # Only a file the manifest lists (and so has verified) is part of the artifact.
        listed = INTERVALS_FILE in verify_manifest(root)
        try:
            cfg = LlataConfig.model_validate(raw["llata"])
            backbone_config = (
                _backbone_config(raw["backbone_config"]) if cfg.model.kind == "llata" else None
            )
            scaler = Scaler.from_dict(json.loads((root / "scaler.json").read_text()))
            metrics = json.loads((root / "metrics.json").read_text())
            state = load_file(str(root / "model.safetensors"), device=device)
            intervals = ConformalScores.load(root / INTERVALS_FILE) if listed else None
        except (KeyError, ValueError, SafetensorError) as err:
            raise ArtifactError(f"{root}: cannot read the artifact ({err})") from err
        if intervals is not None:
            _check_intervals(root, intervals, cfg.data.horizon, len(scaler.channels))
        model = (
            ForecastModel(cfg, backbone_config)
            if backbone_config is not None
            else build_baseline(cfg).to_inference()
        )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ArtifactError(f"{root}: weights do not fit the saved config ({err})") from err
        if precision == "bf16" and isinstance(model, ForecastModel):
            model = model.to(torch.bfloat16)
        return cls(model.to(device), scaler, metrics, raw.get("metadata", {}), root, intervals)

    @property
    def precision(self) -> str:
        """`bf16` or `fp32`: the dtype the model's weights are held in."""
        return "bf16" if next(self.model.parameters()).dtype == torch.bfloat16 else "fp32"

    def _as_array(self, history: np.ndarray | pd.DataFrame | list) -> np.ndarray:
        if isinstance(history, pd.DataFrame):
            missing = [c for c in self.channels if c not in history.columns]
            if missing:
                raise ForecastInputError(f"history lacks channels {missing}")
            history = history.loc[:, list(self.channels)].to_numpy()
        try:
            arr = np.asarray(history, dtype=np.float64)
        except (ValueError, TypeError) as err:
            raise ForecastInputError(
                f"history is not a numeric [steps, channels] array: {err}"
            ) from err
        return arr

    def _check(self, arr: np.ndarray) -> np.ndarray:
        """`[..., T, M]` -> the last `input_size` steps, with shape and value checks."""
        if arr.ndim < 2:
            raise ForecastInputError(f"history must be [steps, channels], got shape {arr.shape}")
        if arr.shape[-1] != len(self.channels):
            raise ForecastInputError(
                f"history has {arr.shape[-1]} channels, the model expects {len(self.channels)} "
                f"({', '.join(self.channels)})"
            )
        if arr.shape[-2] < self.input_size:
            raise ForecastInputError(
                f"history has {arr.shape[-2]} steps, the model needs at least {self.input_size}"
            )
        arr = arr[..., -self.input_size :, :]
        if not np.isfinite(arr).all():
            raise ForecastInputError("history contains NaN or infinite values")
        return arr

    @overload
    def predict_batch(
        self, histories: np.ndarray, horizon: int | None = None, *, levels: None = None
    ) -> np.ndarray: ...

    @overload
    def predict_batch(
        self, histories: np.ndarray, horizon: int | None = None, *, levels: Sequence[float]
    ) -> IntervalForecast: ...

    @overload
    def predict_batch(
        self,
        histories: np.ndarray,
        horizon: int | None = None,
        *,
        levels: Sequence[float] | None = None,
    ) -> np.ndarray | IntervalForecast: ...

    @torch.inference_mode()
    def predict_batch(
        self,
        histories: np.ndarray,
        horizon: int | None = None,
        *,
        levels: Sequence[float] | None = None,
    ) -> np.ndarray | IntervalForecast:
        """Forecast a batch `[B, T, M]` (data units) -> `[B, horizon, M]` (data units).

        A horizon beyond the trained one is rolled out recursively: each forecast is
        appended to the history and forecast again. Error compounds with each round.

        Args:
            histories: `[B, T >= input_size, M]`, data units; the last `input_size` steps
                are used.
            horizon: steps to forecast (default: the trained horizon).
            levels: interval levels in percent, e.g. `(80, 95)`; with them the answer is an
                `IntervalForecast` (`[B, horizon, M]` arrays) with conformal bounds.

        Raises:
            ForecastInputError: bad history or horizon; bad levels; levels with a horizon
                beyond the calibrated one (a recursive roll-out has no calibrated width).
            IntervalsUnavailableError: levels asked of an artifact without conformal scores.
        """
        checked = self._check_levels(levels, horizon)
        arr = self._check(self._as_array(histories))
        if arr.ndim != 3:
            raise ForecastInputError(f"expected [batch, steps, channels], got shape {arr.shape}")
        steps = self.horizon if horizon is None else int(horizon)
        if steps < 1:
            raise ForecastInputError(f"horizon must be at least 1, got {steps}")
        device = next(self.model.parameters()).device
        x = torch.from_numpy(self.scaler.transform(arr)).to(device, torch.float32)  # [B, L, M]
        scale = None
        if checked is not None and self.intervals is not None:
            scale = self.intervals.scale_of(x.cpu().numpy())
        chunks = []
        produced = 0
        while produced < steps:
            y = self.model(x).float()  # [B, H, M]
            chunks.append(y)
            produced += y.shape[1]
            x = torch.cat([x, y], dim=1)[:, -self.input_size :]
        pred = torch.cat(chunks, dim=1)[:, :steps].cpu().numpy()  # [B, steps, M] scaled
        if checked is None:
            return self.scaler.inverse(pred)
        assert self.intervals is not None  # _check_levels refused otherwise
        lower, upper = bounds(pred.astype(np.float64), self.intervals, checked, scale)
        # One pass back to data units for the point and every bound: [1 + 2K, B, steps, M].
        units = self.scaler.inverse(np.stack([pred, *lower.values(), *upper.values()]))
        k = len(checked)
        return IntervalForecast(
            point=units[0],
            lower=dict(zip(checked, units[1 : 1 + k], strict=True)),
            upper=dict(zip(checked, units[1 + k :], strict=True)),
            channels=self.channels,
        )

    def _check_levels(
        self, levels: Sequence[float] | None, horizon: int | None
    ) -> tuple[float, ...] | None:
        """Validated levels (None without), before any compute is spent."""
        if levels is None:
            return None
        if self.intervals is None:
            where = self.path if self.path is not None else "this model"
            raise IntervalsUnavailableError(
                f"{where} has no calibrated intervals (the artifact predates them or was "
                f"saved without them); add them with `llata calibrate --model {where}`"
            )
        if horizon is not None and int(horizon) > self.intervals.horizon:
            raise ForecastInputError(
                f"intervals are calibrated for the trained horizon of {self.intervals.horizon} "
                f"steps; horizon {int(horizon)} is rolled out recursively and has no "
                "calibrated width beyond it. Ask for at most "
                f"{self.intervals.horizon} steps with levels, or for no levels"
            )
        try:
            return self.intervals.check_levels(levels)
        except ValueError as err:
            raise ForecastInputError(str(err)) from err

    @overload
    def predict(
        self,
        history: np.ndarray | pd.DataFrame | list,
        horizon: int | None = None,
        *,
        levels: None = None,
    ) -> np.ndarray: ...

    @overload
    def predict(
        self,
        history: np.ndarray | pd.DataFrame | list,
        horizon: int | None = None,
        *,
        levels: Sequence[float],
    ) -> IntervalForecast: ...

    @overload
    def predict(
        self,
        history: np.ndarray | pd.DataFrame | list,
        horizon: int | None = None,
        *,
        levels: Sequence[float] | None = None,
    ) -> np.ndarray | IntervalForecast: ...

    def predict(
        self,
        history: np.ndarray | pd.DataFrame | list,
        horizon: int | None = None,
        *,
        levels: Sequence[float] | None = None,
    ) -> np.ndarray | IntervalForecast:
        """Forecast one history `[T >= input_size, M]` -> `[horizon, M]`, in data units.

        With `levels` (percent, e.g. `(80, 95)`), an `IntervalForecast`: the same point
        forecast plus lower and upper conformal bounds per level (see `predict_batch`).
        """
        arr = self._check(self._as_array(history))
        if arr.ndim != 2:
            raise ForecastInputError(f"history must be [steps, channels], got shape {arr.shape}")
        if levels is None:
            return self.predict_batch(arr[None], horizon)[0]
        return self.predict_batch(arr[None], horizon, levels=levels)[0]

    def describe(self) -> dict[str, Any]:
        """What `GET /model` and `llata forecast` tell about this model."""
        return {
            "kind": self.config.model.kind,
            "backbone": self.config.model.backbone if self.config.model.kind == "llata" else None,
            "n_layers": self.config.model.n_layers,
            "precision": self.precision,
            "input_size": self.input_size,
            "horizon": self.horizon,
            "channels": list(self.channels),
            "metrics": self.metrics,
            "metadata": self.metadata,
            "intervals": self.intervals.describe() if self.intervals is not None else None,
        }


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
