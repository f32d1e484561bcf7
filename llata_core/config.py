"""The typed configuration: `params.yaml` is validated once here and passed below frozen.

Every section is a frozen pydantic model with unknown keys forbidden, so a typo in
`params.yaml` is an error at the edge rather than a silently ignored setting. The whole
`LlataConfig` is saved next to the weights, which makes a model directory self-describing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llata_core.catalog import m4_subset

LossKind = Literal["l1", "smooth_l1", "mse"]
ForecastLossKind = Literal["l1", "smooth_l1", "mse", "smape", "mase"]
M4_PREFIX = "M4-"
Precision = Literal["auto", "fp32", "bf16"]
# The window scales a short-term conformal residual may be divided by (`window_scale` in
# `llata_core.intervals`); absolute residuals (`none`) pooled over series of unrelated
# scales are not exchangeable, so short-term data has no such choice.
ShortTermNormalizer = Literal["seasonal-mae", "seasonal-rmse"]


def resolve_precision(precision: str, device: Any = "cpu") -> str:
    """`auto` -> `bf16` where the device computes bfloat16 natively, else `fp32`.

    Training (bf16 autocast) and inference (bf16 weights) resolve `auto` alike: on a GPU
    with bf16 support, or a CPU with AVX512-BF16 or AMX (where bf16 roughly doubles training
    speed); a CPU without them emulates bf16 matmuls, slower than fp32.

    Args:
        precision: `auto`, `fp32` or `bf16`.
        device: a `torch.device` or its name.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if precision != "auto":
        return precision
    import torch  # here, not at the top: the config is read before any model is built

    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


class ConfigError(ValueError):
    """A configuration file or override that does not validate."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShortTermIntervals(_Frozen):
    """How a short-term model's conformal scores are made
    (`llata_core.shortterm.calibrate_forecasts`), a per-dataset choice: the scale that
    makes one series' residuals comparable with another's differs between datasets.

    Attributes:
        normalizer: each residual is divided by its input window's mean absolute
            (`seasonal-mae`) or root mean squared (`seasonal-rmse`) seasonal difference.
        calibration_horizons: how many of each series' last training horizons are
            calibration windows, at most (the first is the held-out horizon; older ones lie
            in the training range, and a series too short for them has fewer).
    """

    normalizer: ShortTermNormalizer = "seasonal-rmse"
    calibration_horizons: int = Field(3, ge=1)


# Each M4 subset's scheme, chosen on its own interval-validation window
# (`benchmarks/shortterm/interval_sweep.py`; shortterm/RESULTS.md, "M4 Hourly intervals"
# and "M4 Weekly intervals"). A subset not listed, and a long-format file, takes the
# defaults above: Hourly's choice, never validated on those data.
M4_INTERVALS: dict[str, ShortTermIntervals] = {
    "Hourly": ShortTermIntervals(normalizer="seasonal-rmse", calibration_horizons=3),
    "Weekly": ShortTermIntervals(normalizer="seasonal-mae", calibration_horizons=1),
}


def short_term_intervals(m4_name: str | None, given: Any = None) -> dict[str, Any]:
    """The `data.intervals` section of short-term data: the keys `given` sets over the M4
    subset's scheme (`M4_INTERVALS`), or over the defaults for other data.

    Args:
        m4_name: the M4 subset (`Weekly`), or None for a long-format file.
        given: what the data section says (a mapping, possibly partial, or None).
    """
    base = M4_INTERVALS.get(m4_subset(m4_name).frequency_name) if m4_name else None
    out = (base or ShortTermIntervals()).model_dump()
    if isinstance(given, BaseModel):
        given = given.model_dump()
    if isinstance(given, Mapping):
        out |= dict(given)
    elif given is not None:
        raise ValueError(f"data.intervals must be a mapping of settings, got {given!r}")
    return out


class DataConfig(_Frozen):
    """Which series to read and how to cut them into windows.

    Two settings share this section. Long-term (the default): one multivariate series, cut
    into sliding windows on the standard splits. Short-term (M4): many univariate series,
    each forecast from its own last `input_size` points; it is selected by an M4 name
    (`M4-Hourly`, `M4-Weekly`, ... any of the six subsets, read from
    `$LLATA_DATA_MIRROR/m4/`) or by `series_column` on a long-format file.

    Attributes:
        dataset: a benchmark name (`ETTh1`, `ETTh2`, `ETTm1`, `ETTm2`, `synthetic`), an M4
            subset (`M4-Hourly`, ...), or a path to a wide CSV / parquet file (timestamp
            column plus numeric channels) or, with `series_column`, a long-format file.
        timestamp_column: name of the timestamp column in a file (in a long-format file,
            the column that orders each series' rows: timestamps or step numbers).
        channels: channel columns to use; None takes every numeric column.
        input_size: length `L` of the history window. Short-term: defaults to
            `2 * horizon`, the CALF/N-BEATS M4 setting.
        horizon: length `H` of the forecast. M4: defaults to the subset's horizon, and no
            other value is allowed (the test file holds exactly that many points).
        few_shot_percent: keep only the first p% of the training windows (few-shot;
            long-term only).
        split: `auto` picks the benchmark borders for ETT names and 70/10/20 otherwise
            (long-term only).
        series_column: makes `dataset` a long-format file of many univariate series
            (`series_column`, `timestamp_column`, `value_column`), i.e. short-term. Each
            series' last `horizon` points are its test target, the `horizon` before them
            its validation target.
        value_column: the value column of a long-format file.
        seasonality: the period `m` of MASE and Naive2 (short-term). M4: the subset's
            (Hourly 24, others as in the competition); a long-format file: 1 unless set.
        intervals: how conformal scores are made (short-term only; `ShortTermIntervals`).
            M4: the subset's validated scheme (`M4_INTERVALS`), key by key unless set; a
            long-format file: the defaults. Filled in, so the config saved with a model
            states it; not a training setting (outside the checkpoint digest), and an
            artifact's stored scores record the normalizer they were made with.
    """

    dataset: str = "ETTh1"
    timestamp_column: str = "date"
    channels: tuple[str, ...] | None = None
    input_size: int = Field(96, ge=2)
    horizon: int = Field(96, ge=1)
    few_shot_percent: float = Field(100.0, gt=0.0, le=100.0)
    split: Literal["auto", "ett_hour", "ett_minute", "ratio"] = "auto"
    series_column: str | None = None
    value_column: str = "value"
    seasonality: int | None = Field(None, ge=1)
    intervals: ShortTermIntervals | None = None

    @property
    def m4_subset(self) -> str | None:
        """The M4 subset an `M4-<Subset>` dataset names (`Hourly`, ...), else None."""
        return self.dataset[len(M4_PREFIX) :] if self.dataset.startswith(M4_PREFIX) else None

    @property
    def short_term(self) -> bool:
        """Many univariate series scored by SMAPE/MASE/OWA, rather than one long series."""
        return self.m4_subset is not None or self.series_column is not None

    @model_validator(mode="before")
    @classmethod
    def _short_term_sizes(cls, raw: Any) -> Any:
        """Fill in the short-term sizes the user left out, so the frozen config (and the
        copy saved with the weights) states them explicitly."""
        if not isinstance(raw, Mapping):
            return raw
        dataset = str(raw.get("dataset", ""))
        if not dataset.startswith(M4_PREFIX) and raw.get("series_column") is None:
            return raw
        raw = dict(raw)
        m4_name = dataset[len(M4_PREFIX) :] if dataset.startswith(M4_PREFIX) else None
        raw["intervals"] = short_term_intervals(m4_name, raw.get("intervals"))
        if m4_name is not None:
            subset = m4_subset(m4_name)
            raw.setdefault("horizon", subset.horizon)
            if raw.get("seasonality") is None:
                raw["seasonality"] = subset.seasonality
            if raw["horizon"] != subset.horizon or raw["seasonality"] != subset.seasonality:
                raise ValueError(
                    f"M4 {subset.frequency_name} has horizon {subset.horizon} and "
                    f"seasonality {subset.seasonality}; got horizon {raw['horizon']} and "
                    f"seasonality {raw['seasonality']}; leave them out or set "
                    f"data.horizon={subset.horizon} (input_size defaults to 2 x horizon)"
                )
        raw.setdefault("input_size", 2 * int(raw.get("horizon", 96)))
        return raw

    @model_validator(mode="after")
    def _short_term_options(self) -> DataConfig:
        if self.short_term and (self.few_shot_percent < 100.0 or self.channels is not None):
            raise ValueError(
                "few_shot_percent and channels apply to long-term data only; a short-term "
                "dataset is many univariate series"
            )
        if not self.short_term and self.intervals is not None:
            raise ValueError(
                "data.intervals applies to short-term data only (an M4 subset or a file "
                "with series_column); long-term scores are absolute residuals per step"
            )
        return self


class LoraSettings(_Frozen):
    """LoRA on the temporal branch's attention projections (paper: r 8, alpha 32, dropout 0.1)."""

    r: int = Field(8, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class BaselineSettings(_Frozen):
    """Hyperparameters of the baselines (DLinear, PatchTST) trained in the same harness.

    `dlinear_norm` standardises each DLinear input window (PatchTST always does) and scales
    the output back: without it DLinear maps raw values, and on M4 (values up to ~1e5,
    every series its own scale) one Adam step moves its forecasts by hundreds of units.
    """

    moving_avg: int = Field(25, ge=1)
    dlinear_norm: bool = False
    patch_len: int = Field(16, ge=1)
    stride: int = Field(8, ge=1)
    d_model: int = Field(16, ge=1)
    heads: int = Field(4, ge=1)
    layers: int = Field(3, ge=1)
    ffn: int = Field(128, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)


class ModelConfig(_Frozen):
    """The forecaster's architecture.

    Attributes:
        kind: `llata` (the distilled LLM forecaster) or a baseline trained in the same
            harness (`dlinear`, `patchtst`).
        backbone: a name from the backbone table (`smollm2-135m`, `gpt2`, `tiny-gpt2`,
            `tiny-llama`) or a Hugging Face id / local directory.
        revision: backbone revision (hub commit or tag); recorded with the model.
        init: `pretrained` weights, or `random` (same architecture, fresh initialisation;
            the ablation that asks whether pretraining helps).
        n_layers: how many of the backbone's first blocks to keep; 0 removes the LLM
            (input encoder straight to the head), the "no LLM" ablation.
        n_principal: `K`, how many principal word embeddings the cross-attention reads.
        encoder_heads: heads of the input encoder and of the cross-modal attention.
        encoder_ffn: feed-forward width of the input encoder's transformer layer.
        dropout: dropout inside the input encoder.
        lora: LoRA settings for the temporal branch.
        baseline: settings of the baselines (unused by `llata`).
        seasonal_base: forecast the seasonal naive forecast of the input window (its last
            `data.seasonality` points repeated; 1 when unset) plus a learned correction,
            instead of the series itself. Hourly M4 series carry a strong daily cycle that
            seasonal naive already captures (OWA 0.63); a network that learns the level and
            the cycle from scratch does worse. Every kind honours it (`seasonal_base` in
            `llata_core.model`), and the correction starts at zero in the baselines.
    """

    kind: Literal["llata", "dlinear", "patchtst"] = "llata"
    backbone: str = "smollm2-135m"
    revision: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    n_layers: int = Field(6, ge=0)
    n_principal: int = Field(500, ge=1)
    encoder_heads: int = Field(12, ge=1)
    encoder_ffn: int = Field(2048, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lora: LoraSettings = LoraSettings()
    baseline: BaselineSettings = BaselineSettings()
    seasonal_base: bool = False


class LossConfig(_Frozen):
    """The distillation objective (DESIGN section 1, item 6).

    `task(y_time, y) + w_out * consistency(y_time, y_text)
    + w_feat * sum_k decay^k * feature(A_k f_time_k, B_k f_text_k)`.

    The forecast terms also take `smape` and `mase`, the paper's M4 losses (SMAPE task
    loss, MASE output consistency); both need the input window, which short-term batches
    carry, and MASE needs the data's seasonality.
    """

    task: ForecastLossKind = "l1"
    consistency: ForecastLossKind = "l1"
    feature: LossKind = "l1"
    w_out: float = Field(1.0, ge=0.0)
    w_feat: float = Field(0.01, ge=0.0)
    decay: float = Field(0.8, gt=0.0, le=1.0)

    @property
    def distills(self) -> bool:
        """Whether the textual teacher has to run at all during training."""
        return self.w_out > 0.0 or self.w_feat > 0.0


class TrainConfig(_Frozen):
    """The training recipe; defaults are the paper's ETT recipe.

    Attributes:
        epochs: upper bound on epochs; early stopping usually ends sooner.
        patience: epochs without an improvement of the validation score (the task's metric:
            MSE, or SMAPE for short-term data) before stopping.
        lr: Adam learning rate for everything but the feature projections.
        proj_lr: learning rate of the per-level feature projections `A_k, B_k`.
        lr_schedule: `cosine` anneals the rate over `t_max` epochs and back (the paper's);
            `halve` halves it after every epoch (DLinear's recipe, the Time-Series-Library's
            `type1`).
        t_max: cosine annealing period in epochs.
        precision: `bf16` autocast, `fp32`, or `auto` (bf16 where the device supports it).
        max_steps_per_epoch: cap on optimizer steps per epoch (quick profiles); None = all.
        max_eval_windows: cap on validation windows per epoch (quick profiles); None = all.
    """

    batch_size: int = Field(256, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1)
    lr: float = Field(5e-4, gt=0.0)
    proj_lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    lr_schedule: Literal["cosine", "halve"] = "cosine"
    t_max: int = Field(20, ge=1)
    seed: int = 2024
    precision: Precision = "auto"
    max_steps_per_epoch: int | None = Field(None, ge=1)
    max_eval_windows: int | None = Field(None, ge=1)
    log_every: int = Field(20, ge=1)


class LlataConfig(_Frozen):
    """The whole configuration of one model: what `params.yaml` holds for llata_core."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return self.model_dump(mode="json")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn `section.key=value` strings into a nested dict; values are parsed as YAML.

    Args:
        items: overrides such as `train.epochs=3` or `model.backbone=tiny-gpt2`.

    Returns:
        A nested dict to merge over the file's contents.
    """
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def merge_trees(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `extra`, nested mappings merged key by key (overrides on a file)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_trees(out[key], value)
        else:
            out[key] = value
    return out


def read_params_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a params YAML file, with errors that name the file.

    Raises:
        ConfigError: missing file, invalid YAML, or not a mapping of sections.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"params file not found: {p}")
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{p} is not valid YAML: {err}") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{p} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded or {}


def config_from_dict(
    raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> LlataConfig:
    """Validate a dict (sections `data`, `model`, `loss`, `train`) into a frozen config.

    Keys of `raw` outside those sections are ignored here: `params.yaml` also carries the
    pipeline's settings, which the pipeline validates itself.
    """
    sections = {k: v for k, v in raw.items() if k in LlataConfig.model_fields}
    merged = merge_trees(sections, overrides or {})
    try:
        return LlataConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration:\n{err}") from err


def load_params(path: str | Path | None, overrides: Iterable[str] = ()) -> LlataConfig:
    """Read `params.yaml` (or defaults when `path` is None) plus dotted overrides.

    Args:
        path: the YAML file; None uses the built-in defaults (the paper's recipe).
        overrides: `section.key=value` strings applied after the file.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: the file is missing, not YAML, or does not validate.
    """
    raw = read_params_file(path) if path is not None else {}
    return config_from_dict(raw, parse_overrides(overrides))
