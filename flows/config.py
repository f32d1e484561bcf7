"""The run's resolved configuration: the validated parameters, every path it reads or writes
(`Layout`) and each candidate's model config, loaded once from `params.yaml`.

`load_pipeline_config` is the edge: it validates the `pipeline` section (`flows.params`) and
the llata_core sections of every candidate, applies the quick profile and the command-line
overrides, and resolves paths against the project root. What it returns is frozen, and is
what every stage, command and Prefect task receives.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from flows.params import (
    DEFAULT_PARAMS_FILE,
    PIPELINE_SECTION,
    PipelineParams,
    Profile,
    SplitRule,
)
from llata_core.config import (
    M4_PREFIX,
    ConfigError,
    LlataConfig,
    config_from_dict,
    merge_trees,
    parse_overrides,
    read_params_file,
    short_term_intervals,
)


@dataclass(frozen=True)
class Layout:
    """Every file the pipeline reads or writes, as absolute paths under the project root.

    `dvc.yaml` declares the same paths as stage outputs; `tests/test_pipeline.py` checks
    that the two agree.
    """

    root: Path
    raw_data: Path
    provenance: Path
    dvc_file: Path
    validation_dir: Path
    feature_repo: Path
    features_dir: Path
    training_frame: Path
    lineage: Path
    backbone_stamp: Path
    model_dir: Path
    run_dir: Path
    metrics: Path
    plots_dir: Path
    forecast_plot: Path
    loss_plot: Path
    candidates_dir: Path
    selection: Path

    def candidate_dir(self, name: str) -> Path:
        """Where a candidate's model (`model/`) and run (`run/`) are written."""
        return self.candidates_dir / name

    @classmethod
    def under(cls, root: Path, params: PipelineParams) -> Layout:
        """The layout of a project rooted at `root`."""
        artifacts = root / params.artifacts_dir
        reports = root / params.reports_dir
        raw = root / params.raw_data
        plots = reports / "plots"
        return cls(
            root=root,
            raw_data=raw,
            # Beside data/raw, not inside it: a file in data/raw would change data.dvc's hash.
            provenance=raw.parent.parent / f"{raw.parent.name}.provenance.json",
            dvc_file=root / "data.dvc",
            validation_dir=reports / "validation",
            feature_repo=root / params.feature_repo,
            features_dir=artifacts / "features",
            training_frame=artifacts / "features" / "training.parquet",
            lineage=artifacts / "features" / "lineage.json",
            backbone_stamp=artifacts / "backbone.json",
            model_dir=artifacts / "model",
            run_dir=artifacts / "run",
            metrics=reports / "metrics.json",
            plots_dir=plots,
            forecast_plot=plots / "forecast.png",
            loss_plot=plots / "loss_curve.png",
            candidates_dir=artifacts / "candidates",
            selection=reports / "candidates.json",
        )


@dataclass(frozen=True)
class PipelineConfig:
    """What every stage receives: the pipeline section, the model config and the layout.

    Attributes:
        params: The validated `pipeline` section.
        model: The llata_core configuration with `data.dataset` pointing at the training
            frame the features stage writes and `data.split` set to the pipeline's rule, so
            training, evaluation and promotion all cut the same borders.
        layout: Absolute paths.
        profile: `full` (params.yaml as written) or `quick` (plus `pipeline.quick`).
        overrides: The command-line overrides applied (recorded with the model).
    """

    params: PipelineParams
    model: LlataConfig
    layout: Layout
    profile: Profile
    overrides: tuple[str, ...]
    candidates: Mapping[str, LlataConfig] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.layout.root

    def shown(self, path: Path) -> str:
        """`path` as a person reads it: relative to the project root where it is inside."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    @property
    def short_term(self) -> bool:
        """The raw file is many univariate series in long format (an M4 subset, or
        `data.series_column`), scored by SMAPE / MASE / OWA."""
        return self.model.data.short_term

    @property
    def max_input_size(self) -> int:
        """The longest lookback of any candidate (the feature store's context window)."""
        return max(
            [self.model.data.input_size, *(c.data.input_size for c in self.candidates.values())]
        )

    def candidate(self, name: str) -> LlataConfig:
        """One candidate's configuration.

        Raises:
            KeyError: no candidate of that name (the message lists them).
        """
        if name not in self.candidates:
            raise KeyError(f"no candidate {name!r}; params.yaml lists {sorted(self.candidates)}")
        return self.candidates[name]


def min_rows_for_split(rule: SplitRule, input_size: int, horizon: int) -> int:
    """Fewest rows for which every split of `rule` holds at least one window.

    The validation suite checks this, so a frame too short for the split borders stops at
    validation with a report instead of failing inside training.
    """
    from llata_core.data import split_borders  # imports torch, which `llata --help` need not

    window = input_size + horizon
    if rule != "ratio":
        # Fixed month-based borders: the test split's end is the minimum length.
        return split_borders(sys.maxsize, input_size, rule)["test"][1]
    n_rows = window
    while True:
        borders = split_borders(n_rows, input_size, rule)
        if all(end - start >= window for start, end in borders.values()):
            return n_rows
        n_rows += 1


def _pipeline_data(
    params: PipelineParams, layout: Layout, given: Mapping[str, object]
) -> dict[str, object]:
    """What the pipeline sets in the data section: every candidate reads the features
    stage's training frame, cut with the pipeline's split rule; an M4 dataset is that
    frame in long format, with the subset's horizon, seasonality and interval scheme
    (`data.intervals`, key by key where the data section leaves it out).

    Args:
        params: The pipeline section.
        layout: Its paths.
        given: The data section as params.yaml and the overrides write it.

    Raises:
        ConfigError: `data.dataset` names another M4 subset than `pipeline.dataset`, or the
            data section contradicts the M4 subset's horizon or seasonality.
    """
    section: dict[str, object] = {"dataset": str(layout.training_frame), "split": params.split}
    named = str(given.get("dataset", ""))
    if named.upper().startswith(M4_PREFIX) and named.lower() != params.dataset.lower():
        raise ConfigError(
            f"data.dataset is {named!r} but pipeline.dataset is {params.dataset!r}: the "
            f"pipeline trains on what pipeline.dataset names (set pipeline.dataset={named})"
        )
    subset = params.m4_subset
    if subset is None:
        return section
    for key, value in (("horizon", subset.horizon), ("seasonality", subset.seasonality)):
        if given.get(key) not in (None, value):
            raise ConfigError(
                f"M4 {subset.frequency_name} has {key} {value}; the data section says "
                f"{given[key]} (leave it out or set data.{key}={value})"
            )
    return section | {
        "horizon": subset.horizon,
        "seasonality": subset.seasonality,
        "series_column": given.get("series_column") or "series_id",
        "intervals": short_term_intervals(subset.frequency_name, given.get("intervals")),
    }


def load_pipeline_config(
    params_file: str | Path = DEFAULT_PARAMS_FILE,
    *,
    overrides: Iterable[str] = (),
    profile: Profile = "full",
    root: str | Path | None = None,
) -> PipelineConfig:
    """Read and validate `params.yaml` for the pipeline, once, at the edge.

    Args:
        params_file: The params file.
        overrides: `section.key=value` strings; `pipeline.*` keys override the pipeline
            section, the others the llata_core sections (after the quick profile).
        profile: `quick` applies `pipeline.quick` before `overrides`.
        root: Project root that relative paths resolve against; default the params file's
            folder.

    Returns:
        The frozen configuration.

    Raises:
        ConfigError: The file or an override does not validate.
    """
    path = Path(params_file).resolve()
    raw = read_params_file(path)
    overrides = tuple(overrides)
    tree = parse_overrides(overrides)
    pipeline_raw = merge_trees(raw.get(PIPELINE_SECTION) or {}, tree.pop(PIPELINE_SECTION, {}))
    try:
        params = PipelineParams.model_validate(pipeline_raw)
    except ValidationError as err:
        raise ConfigError(f"invalid {PIPELINE_SECTION} section in {path}:\n{err}") from err
    layout = Layout.under(Path(root).resolve() if root else path.parent, params)
    quick = parse_overrides(params.quick) if profile == "quick" else {}

    def build(own: Iterable[str]) -> LlataConfig:
        # Order: the base recipe, the candidate's own overrides, the quick profile, the
        # command line, then the training frame every candidate reads.
        model_tree = merge_trees(merge_trees(parse_overrides(own), quick), tree)
        given = merge_trees(raw.get("data") or {}, model_tree.get("data") or {})
        data = {"data": _pipeline_data(params, layout, given)}
        return config_from_dict(raw, merge_trees(model_tree, data))

    model = build(())
    channels = params.validation.channels
    if model.data.short_term and channels not in (None, (model.data.value_column,)):
        raise ConfigError(
            f"pipeline.validation.channels {list(channels)} in {path}: a long-format file of "
            f"many series has one value column ({model.data.value_column!r}); set it to null"
        )
    candidates = {}
    for name, own in params.candidates.items():
        try:
            candidates[name] = build(own)
        except ConfigError as err:
            raise ConfigError(f"candidate {name!r} in {path}: {err}") from err
    return PipelineConfig(
        params=params,
        model=model,
        layout=layout,
        profile=profile,
        overrides=overrides,
        candidates=candidates,
    )
