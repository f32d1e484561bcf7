"""The pipeline's typed parameters: the `pipeline:` section of `params.yaml`, validated once.

`params.yaml` is the one configuration of LLaTA. `llata_core` validates its `data`, `model`,
`loss` and `train` sections; this module validates the `pipeline` section (where the raw
data lives, how it is split and checked, where artifacts and reports go, the registry, the
schedule, the quick profile). `flows.config.load_pipeline_config` reads both and resolves
every path against the project root.

The same file feeds `dvc.yaml` (through its `params` and `${pipeline.*}` templating), so a
path or threshold changed here moves the DVC stages and the Prefect flow together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from llata_core.catalog import M4Subset, m4_subset
from llata_core.config import (
    M4_PREFIX,
    ConfigError,
    LlataConfig,
    parse_overrides,
)

SplitRule = Literal["ett_hour", "ett_minute", "ratio"]
Profile = Literal["full", "quick"]

PIPELINE_SECTION = "pipeline"
DEFAULT_PARAMS_FILE = "params.yaml"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidationParams(_Frozen):
    """Thresholds of the Great Expectations suite on the raw frame.

    Attributes:
        channels: Channel columns the raw frame must hold, numeric, in model order (unless
            `data.channels` names them). None accepts every numeric column; a channel that
            pandas read as text (one stray token) is then left out with a warning instead
            of failing the suite, so production data should name its channels.
        frequency: Expected pandas offset alias of the timestamps (`h` for ETTh1); None
            infers it from the data, which must still be regular.
        max_nan_fraction: Largest share of NaN allowed in any channel. The features stage
            and training fill what passes (forward, then backward: the one NaN rule,
            `llata_core.data.fill_gaps`).
        constant_channels: `error` (default) fails the suite on a constant or near-constant
            channel (a dead sensor); `warn` reports it as a warning and lets the data pass.
    """

    channels: tuple[str, ...] | None = None
    frequency: str | None = "h"
    max_nan_fraction: float = Field(0.01, ge=0.0, lt=1.0)
    constant_channels: Literal["error", "warn"] = "error"


class FeatureParams(_Frozen):
    """How the training frame is read back from the Feast offline store.

    Feast 0.67's file offline store answers a point-in-time join by merging every entity
    row with every observation of its series, which needs rows^2 memory: ETTh1's 17,420
    rows were killed at 22 GB. Frames up to `pit_max_rows` rows go through that join whole;
    longer ones are read from the offline store with the same as-of semantics, and
    `pit_check_rows` evenly spaced rows are cross-checked against Feast's own join.

    Attributes:
        pit_max_rows: Longest frame answered entirely by `get_historical_features`.
        pit_check_rows: Rows of a longer frame cross-checked against Feast's join.
    """

    pit_max_rows: int = Field(2000, ge=1)
    pit_check_rows: int = Field(64, ge=1)


class RegistryParams(_Frozen):
    """Where trained models are registered and how promotion decides.

    Attributes:
        model_name: BentoML model name.
        dir: Aliases/history directory, relative to the project root; None keeps the
            registry's default (`$BENTOML_HOME/llata_registry`), which is where the
            service and `llata registry` look.
        margin: Relative test-MSE improvement a candidate needs over production.
        coverage_tolerance: How far (a fraction: 0.05 = five points) the candidate's 80 %
            interval coverage on the holdout may fall below nominal; None skips the check.
        coverage_over_tolerance: How far it may rise above nominal; None (the default)
            lets conservative intervals pass. Split conformal calibrated on ETTh1's
            validation months over-covers its test months (0.88-0.90 at 80 %: the test
            period is easier), so a two-sided check would refuse every model there until
            calibration adapts to the shift (benchmarks/NOTES.md).
    """

    model_name: str = "llata-forecaster"
    dir: Path | None = None
    margin: float = Field(0.0, ge=0.0, lt=1.0)
    coverage_tolerance: float | None = Field(0.05, ge=0.0, lt=1.0)
    coverage_over_tolerance: float | None = Field(None, ge=0.0, lt=1.0)


RunnerKind = Literal["process", "thread", "dask"]


class RunnerParams(_Frozen):
    """The Prefect task runner that trains the candidates.

    Attributes:
        kind: `process` (a local process pool: each candidate in its own process, so seeds
            and torch threads do not interfere), `thread` (one process; for debugging), or
            `dask` (prefect-dask's DaskTaskRunner).
        max_workers: Parallel candidates for `process`/`thread`; None = one per candidate,
            at most the machine's cores.
        address: `dask` only: the scheduler address (`tcp://host:8786`) of a running
            cluster; None starts a local cluster for the run.
    """

    kind: RunnerKind = "process"
    max_workers: int | None = Field(None, ge=1)
    address: str | None = None

    def shares(self, n_candidates: int, cores: int) -> tuple[int, int | None]:
        """How many candidates train at once on this machine, and the torch threads each
        gets (None: torch's default, as in `thread`, or a remote cluster's to decide).

        The DVC stage trains the candidates one after another with the same threads, so its
        numbers are the flow's: bf16 reductions round differently with other thread counts.
        """
        workers = self.max_workers or max(1, min(n_candidates, cores))
        if self.kind == "thread" or (self.kind == "dask" and self.address):
            return workers, None
        return workers, max(1, cores // workers)


class SelectionParams(_Frozen):
    """How the winner is chosen among the candidates.

    Attributes:
        tolerance: Relative slack on the best validation score: candidates within it are
            treated as level, and the cheapest to serve of them wins. The default, 0.5 %,
            is one seed's spread of the score it is applied to: the standard deviation of
            validation MSE over three seeds, 0.14-0.50 % of it on ETTh1 (the default
            dataset; 0.05-0.25 % on ETTm1, 1.4-3.6 % on ETTh2; benchmarks/NOTES.md,
            twelfth session).
        runner: The task runner that trains the candidates in parallel.
        combine: Whether the two best candidates by validation also compete as their
            combination, the weighted mean of their forecasts with the weight chosen on
            validation (`llata_core.combination`); none is added when a member alone is
            best.
    """

    tolerance: float = Field(0.005, ge=0.0, lt=1.0)
    combine: bool = True
    runner: RunnerParams = RunnerParams()


class ScheduleParams(_Frozen):
    """When the scheduled deployment retrains.

    Attributes:
        cron: Five-field cron expression (minute hour day month weekday).
        timezone: IANA time zone the cron is read in.
    """

    cron: str = "0 3 * * 1"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        # Prefect validates the expression itself when the deployment is built; this only
        # catches the common slip (a six-field or empty cron) at the edge.
        if len(value.split()) != 5:
            raise ValueError(f"cron {value!r} must have five fields (minute hour dom month dow)")
        return value


class SeriesSelection(_Frozen):
    """Which series of an M4 subset the raw file holds (`pipeline.dataset: M4-Hourly`).

    Attributes:
        count: The first `count` series of the subset, in file order.
        ids: These series (`[H1, H7]`), in file order. Neither set: every series.
    """

    count: int | None = Field(None, ge=1)
    ids: tuple[str, ...] | None = None

    @field_validator("ids")
    @classmethod
    def _some_ids(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("ids must name at least one series, each once")
        return value

    def describe(self) -> dict[str, object]:
        """The selection as lineage records it."""
        if self.ids is not None:
            return {"ids": list(self.ids)}
        return {"count": self.count} if self.count is not None else {"all": True}


class RecalibrationParams(_Frozen):
    """The scheduled recalibration of the production model's intervals (`recalibrate` flow).

    The production model forecasts the newest complete windows of the raw file; scores from
    the `recent_windows` before the last `holdout_windows` are checked on those, and the
    recalibrated copy (scores from the newest `recent_windows`) is registered and gated
    like any version (`llata_core.jobs.recalibrate_job`, `serving.registry_gates`).

    Attributes:
        schedule: Cron of the scheduled deployment; None deploys no recalibration.
        recent_windows: How many of the newest complete windows calibrate (720 hourly
            windows = 30 days: daily recalibration on them met +-3 points of nominal on
            every ETT test split, benchmarks/NOTES.md).
        holdout_windows: How many of the newest windows check the scheme's coverage.
        aci_gamma: Adaptive Conformal Inference's step size: each recalibration moves the
            level a nominal level is read at by `100 aci_gamma` times the holdout's miss
            rate minus the nominal one (`llata_core.intervals.aci_step`); 0 turns it off.
            0.05 is what validation chose for the production family on ETTh1 and ETTh2
            (ETTm1's chose 0.01), and it met +-3 points on ETTh2 where the plain scheme
            missed (benchmarks/NOTES.md).
    """

    schedule: ScheduleParams | None = ScheduleParams(cron="0 5 * * *")
    recent_windows: int = Field(720, ge=1)
    holdout_windows: int = Field(168, ge=1)
    aci_gamma: float = Field(0.05, ge=0.0, le=1.0)


def _llata_alone() -> dict[str, tuple[str, ...]]:
    """The candidates when `params.yaml` lists none: LLaTA as configured, no overrides."""
    return {"llata": ()}


class PipelineParams(_Frozen):
    """The `pipeline:` section of `params.yaml`.

    Attributes:
        dataset: Benchmark the raw file holds (`ETTh1`); names its canonical URL, checksum
            and mirror file for `llata data pull`. An M4 subset (`M4-Hourly`, any case)
            makes the run short-term: `llata data pull` writes the `series_selection` of
            the subset's mirror files as a long-format raw file (`data.series_column`,
            `data.timestamp_column`, `data.value_column`), and the horizon and seasonality
            are the subset's. Any other name means "own data": only a DVC remote can supply
            it (a long-format file of many series when `data.series_column` is set).
        raw_data: The raw CSV, relative to the project root; its folder is tracked by
            `data.dvc`.
        series_id: Id of the series in the feature store (one wide series; a long-format
            file names its series in `data.series_column`).
        series_selection: Which series of an M4 subset to train on (M4 datasets only).
        split: Split rule of the raw file (`ett_hour` for ETTh1's 12/4/4 months); the
            training frame from the feature store is cut with the same borders.
        artifacts_dir: Models, runs, the feature repo and the training frame.
        reports_dir: Validation reports, metrics and plots.
        feature_repo: The run's Feast repo, relative to the project root.
        validation: Thresholds of the data suite.
        features: Training-frame retrieval settings.
        registry: Model registry and promotion gate.
        schedule: Cron of the scheduled retraining.
        recalibration: The scheduled recalibration of production's intervals.
        quick: `section.key=value` overrides of the quick profile (the main job), applied
            over `data/model/loss/train` before any command-line override.
        candidates: The models the retrain flow trains and chooses among, by name: each is
            a list of `section.key=value` overrides of the base recipe (model family,
            lookback, its own training recipe). The quick profile and command-line
            overrides apply to every candidate, after its own.
        selection: How the winner is chosen (validation score, tolerance, task runner).
    """

    dataset: str = "ETTh1"
    raw_data: Path = Path("data/raw/ETTh1.csv")
    series_id: str = "ETTh1"
    series_selection: SeriesSelection = SeriesSelection()
    split: SplitRule = "ett_hour"
    artifacts_dir: Path = Path("artifacts")
    reports_dir: Path = Path("reports")
    feature_repo: Path = Path("artifacts/feature_repo")
    validation: ValidationParams = ValidationParams()
    features: FeatureParams = FeatureParams()
    registry: RegistryParams = RegistryParams()
    schedule: ScheduleParams = ScheduleParams()
    recalibration: RecalibrationParams = RecalibrationParams()
    quick: tuple[str, ...] = ()
    candidates: dict[str, tuple[str, ...]] = Field(default_factory=_llata_alone)
    selection: SelectionParams = SelectionParams()

    @field_validator("dataset")
    @classmethod
    def _m4_spelling(cls, value: str) -> str:
        # `m4-hourly` and `M4-Hourly` name one subset; lineage records one spelling.
        if value.upper().startswith(M4_PREFIX):
            return M4_PREFIX + m4_subset(value[len(M4_PREFIX) :]).frequency_name
        return value

    @model_validator(mode="after")
    def _selection_of_m4(self) -> PipelineParams:
        chosen = self.series_selection
        if chosen.count is not None and chosen.ids is not None:
            raise ValueError("series_selection: set count or ids, not both")
        if (chosen.count is not None or chosen.ids is not None) and self.m4_subset is None:
            raise ValueError(
                f"series_selection picks series of an M4 subset; dataset {self.dataset!r} "
                "is not one (a long-format file holds the series it holds)"
            )
        return self

    @property
    def m4_subset(self) -> M4Subset | None:
        """The M4 subset `dataset` names, else None."""
        if not self.dataset.startswith(M4_PREFIX):
            return None
        return m4_subset(self.dataset[len(M4_PREFIX) :])

    @field_validator("raw_data", "artifacts_dir", "reports_dir", "feature_repo")
    @classmethod
    def _relative(cls, value: Path) -> Path:
        # Paths are relative so that params.yaml (and dvc.yaml, which templates them) mean
        # the same thing in every clone.
        if value.is_absolute() or ".." in value.parts:
            raise ValueError(f"{value} must be a path inside the project (relative, no '..')")
        return value

    @field_validator("quick")
    @classmethod
    def _overrides_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _model_overrides(value, "quick")
        return value

    @field_validator("candidates")
    @classmethod
    def _candidates_parse(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if not value:
            raise ValueError("at least one candidate is needed")
        for name, overrides in value.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(
                    f"candidate name {name!r} must be letters, digits, '.', '_' or '-' "
                    "(it names a directory)"
                )
            _model_overrides(overrides, f"candidate {name!r}")
        return value


def _model_overrides(value: Iterable[str], what: str) -> None:
    try:
        tree = parse_overrides(value)
    except ConfigError as err:
        raise ValueError(f"{what}: {err}") from err
    stray = set(tree) - set(LlataConfig.model_fields)
    if stray:
        raise ValueError(f"{what} overrides may only set data/model/loss/train, not {stray}")
