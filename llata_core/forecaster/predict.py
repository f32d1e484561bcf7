"""`Forecaster`: a loaded artifact that forecasts, with intervals, in the data's own units.

It builds the inference model from what `llata_core.forecaster.artifact` read, checks every
history it is given, and rolls a horizon beyond the trained one out recursively.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd
import torch

from llata_core.combination import (
    Combination,
    Member,
    llm_blocks,
    scalers_agree,
    weights_precision,
)
from llata_core.config import LlataConfig, resolve_precision
from llata_core.data import Scaler
from llata_core.forecaster.artifact import (
    COMBINATION_KIND,
    ArtifactError,
    artifact_kind,
    read_artifact,
)
from llata_core.forecaster.combined import read_combination
from llata_core.intervals import ConformalScores, IntervalForecast, bounds

if TYPE_CHECKING:
    from llata_core.baselines import BaselineForecastModel
    from llata_core.model import ForecastModel

# transformers, peft and the model classes are imported where a model is built, not here:
# the registry (and with it every `llata` command) imports this package for
# `verify_manifest` and `ArtifactError`, and those imports would add seconds to each start.


class ForecastInputError(ValueError):
    """A history window the model cannot forecast from (shape, length, NaN...), or a request
    it cannot answer (bad interval levels, intervals beyond the calibrated horizon)."""


class IntervalsUnavailableError(ForecastInputError):
    """Interval levels asked of a model whose artifact holds no conformal scores."""


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
        model: ForecastModel | BaselineForecastModel | Combination,
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
            precision: `fp32`, `bf16` (an LLaTA model's weights are cast to bfloat16 once,
                which halves the memory traffic and runs faster on CPUs with
                AVX512-BF16/AMX; the instance normalisation and the answer stay fp32) or
                `auto` (bf16 where the device computes it natively). Baselines always run
                in fp32.

        A combination artifact loads its members the same way and answers with their
        weighted mean (`llata_core.combination.Combination`).

        Raises:
            ArtifactError: missing, incomplete, tampered or incompatible artifact.
        """
        from llata_core.baselines import build_baseline
        from llata_core.model import ForecastModel

        root = Path(path)
        if artifact_kind(root) == COMBINATION_KIND:
            return cls._load_combination(root, device=device, precision=precision)
        precision = resolve_precision(precision, device)
        contents = read_artifact(root, device=device)
        cfg, backbone_config = contents.config, contents.pretrained_config()
        model = (
            ForecastModel(cfg, backbone_config)
            if backbone_config is not None
            else build_baseline(cfg).to_inference()
        )
        try:
            model.load_state_dict(contents.state, strict=True)
        except RuntimeError as err:
            raise ArtifactError(f"{root}: weights do not fit the saved config ({err})") from err
        if precision == "bf16" and isinstance(model, ForecastModel):
            model = model.to(torch.bfloat16)
        return cls(
            model.to(device),
            contents.scaler,
            contents.metrics,
            contents.metadata,
            root,
            contents.intervals,
        )

    @classmethod
    def _load_combination(cls, root: Path, *, device: str, precision: str) -> Forecaster:
        """A combination artifact: its members loaded as artifacts, then their mean."""
        contents = read_combination(root)
        loaded = [
            (m.name, cls.load(root / m.path, device=device, precision=precision))
            for m in contents.members
        ]
        members = [Member(name, fc.model, fc.scaler) for name, fc in loaded]
        try:
            model = Combination(members, [m.weight for m in contents.members])
        except ValueError as err:
            raise ArtifactError(f"{root}: {err}") from err
        if not scalers_agree(model.scaler, contents.scaler):
            raise ArtifactError(f"{root}: scaler.json is not its members' scaler")
        if model.cfg.data.input_size != contents.config.data.input_size:
            raise ArtifactError(f"{root}: config.json's input size is not its longest member's")
        return cls(
            model, contents.scaler, contents.metrics, contents.metadata, root, contents.intervals
        )

    @property
    def precision(self) -> str:
        """`bf16` or `fp32`: the dtype the model's weights are held in (`mixed` for a
        combination whose members differ; `describe()["members"]` has each one's)."""
        return weights_precision(self.model)

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
        """What `GET /model` and `llata forecast` tell about this model; a combination's
        kind is `combination`, with each member's name, kind, LLM backbone and blocks,
        lookback, weight and precision. `backbone` and `n_layers` are None for a baseline and
        for a combination (its members have their own)."""
        members = (
            {
                "members": [
                    {**described, "precision": weights_precision(member)}
                    for described, member in zip(
                        self.model.describe_members(), self.model.members, strict=True
                    )
                ]
            }
            if isinstance(self.model, Combination)
            else {}
        )
        # A combination's are its members' (its own configuration is its longest member's).
        backbone, n_layers = (None, None) if members else llm_blocks(self.config)
        return {
            "kind": COMBINATION_KIND if members else self.config.model.kind,
            **members,
            "backbone": backbone,
            "n_layers": n_layers,
            "precision": self.precision,
            "input_size": self.input_size,
            "horizon": self.horizon,
            "channels": list(self.channels),
            "metrics": self.metrics,
            "metadata": self.metadata,
            "intervals": self.intervals.describe() if self.intervals is not None else None,
        }
