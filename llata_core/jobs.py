"""The library's units of work: train an artifact, calibrate, evaluate and forecast with one.

The command line, the DVC stages (which call the command line) and the Prefect tasks all
call these functions, so there is exactly one training path.
"""

from __future__ import annotations

import logging
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import PartialState

from llata_core.backbone import prepare_backbone
from llata_core.checkpoint import EpochLog
from llata_core.config import DataConfig, LlataConfig
from llata_core.data import SeriesFrame, Splits, WindowDataset, load_series, make_splits
from llata_core.evaluate import Metrics, calibrate, evaluate
from llata_core.forecaster import Forecaster, add_intervals, save_artifact
from llata_core.intervals import DEFAULT_LEVELS, ConformalScores, aci_step, level_name
from llata_core.shortterm import ShortTermSplit, ShortTermSplits
from llata_core.tasks import ForecastTask, LongTermTask, ShortTermTask, load_task
from llata_core.timestamps import extend_timestamps
from llata_core.train import FitResult, fit

log = logging.getLogger(__name__)


def git_revision(cwd: Path | None = None) -> str:
    """The current commit (with `-dirty` when the tree has changes), or `unknown`."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_description() -> str:
    """CPU/GPU of this host, for benchmark and lineage records."""
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def provenance(module: str | None = None) -> dict[str, str]:
    """Where and how a benchmark result was produced, for its JSON record.

    Args:
        module: the module name when the script runs as `python -m module`, so that the
            recorded command is the one that reruns it (`sys.argv[0]` is then a file path).

    Returns:
        machine, torch version, git revision, the exact command and the UTC finish time.
    """
    argv = ["-m", module, *sys.argv[1:]] if module else sys.argv
    return {
        "machine": machine_description(),
        "torch": torch.__version__,
        "git_revision": git_revision(),
        "command": shlex.join([sys.executable, *argv]),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@dataclass
class TrainOutcome:
    """What a training job produced.

    Attributes:
        artifact: the saved model directory.
        fit: how training went.
        task: the data it was trained and scored on.
        metrics: what metrics.json holds; None on the non-main ranks of a distributed run.
    """

    artifact: Path
    fit: FitResult
    task: ForecastTask
    metrics: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The headline of a finished run, as the command lines print it."""
        metrics = self.metrics or {}
        return {
            "artifact": str(self.artifact),
            **{f"test_{k}": metrics[k] for k in self.task.reported if k in metrics},
            "epochs": len(self.fit.history),
            "best_epoch": self.fit.best_epoch,
            "device": self.fit.device,
            "seconds": round(self.fit.seconds, 1),
        }


def train_job(
    cfg: LlataConfig,
    *,
    out_dir: Path,
    run_dir: Path,
    resume: bool = False,
    allow_synthetic: bool = False,
    series: SeriesFrame | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Load data, prepare the backbone, train, evaluate on the test split, save the artifact.

    The data is a forecasting task (`load_task`), which decides how the model validates
    and is scored: long-term windows by MSE/MAE on the scaled axis, short-term series (M4
    and the like, `cfg.data.short_term`) by SMAPE, MASE and OWA against Naive2. The
    artifact's metrics name the task's headline metric (`metric`, `score`).

    Args:
        cfg: the validated configuration.
        out_dir: the artifact directory to write (replaced atomically when it exists).
        run_dir: checkpoint and history of this run (resumable).
        resume: continue from `run_dir`'s checkpoint.
        allow_synthetic: train on generated data when the benchmark is unreachable.
        series: use this series instead of loading `cfg.data.dataset` (e.g. the frame the
            feature store returned); long-term data only.
        extra_metadata: lineage to record in the artifact (e.g. the pipeline's data hash).

    Returns:
        The artifact path, the fit result, the task and the recorded metrics.
    """
    state = PartialState()  # one process, or one rank of `accelerate launch`
    task = load_task(cfg.data, seed=cfg.train.seed, series=series, allow_synthetic=allow_synthetic)
    lineage = task.lineage
    log.info("data %s (%s): %s", cfg.data.dataset, lineage.source, task.describe())
    backbone = None
    if cfg.model.kind == "llata":
        with state.main_process_first():  # rank 0 builds the backbone cache, others read it
            backbone = prepare_backbone(cfg.model)
    result = fit(cfg, task, backbone, run_dir=run_dir, resume=resume)
    if not state.is_main_process:
        # Under DDP every rank holds the same weights; rank 0 alone evaluates and saves.
        state.wait_for_everyone()
        return TrainOutcome(out_dir, result, task)
    inference = result.model.to_inference()
    evaluation = task.evaluate(inference, batch_size=cfg.train.eval_batch_size)
    metrics = {
        **evaluation.metrics,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": result.seconds,
        "precision": result.precision,
        "eval_split_hash": task.fingerprint(),
        "eval_targets_hash": task.targets_fingerprint(),
        **task.headline.record(evaluation.metrics),
    }
    metadata = {
        "model_kind": cfg.model.kind,
        "backbone": cfg.model.backbone if backbone else None,
        "backbone_revision": backbone.revision if backbone else None,
        "data_source": lineage.source,
        "data_origin": lineage.origin,
        "data_sha256": lineage.sha256,
        "synthetic_data": lineage.source == "synthetic",
        "git_revision": git_revision(),
        "trained_at": datetime.now(UTC).isoformat(),
        "machine": machine_description(),
        "device": result.device,
        **(extra_metadata or {}),
    }
    artifact = save_artifact(
        out_dir,
        inference,
        task.scaler,
        metrics,
        metadata=metadata,
        overwrite=True,
        intervals=evaluation.intervals,
    )
    state.wait_for_everyone()
    return TrainOutcome(artifact, result, task, metrics)


def evaluate_job(
    model_dir: Path,
    data: DataConfig | None = None,
    *,
    split: str = "test",
    allow_synthetic: bool = False,
) -> tuple[Metrics, Forecaster, Splits]:
    """Score an artifact on a dataset's split with the model's own scaler.

    A dataset other than the training one is a zero-shot evaluation: windows are cut with
    the model's input size and horizon, and the model's scaler is reused only when the
    channels match; otherwise the target data's own training rows fit the scaler (the
    convention of the zero-shot literature, which scores each dataset on its own scale).
    """
    fc = Forecaster.load(model_dir)
    metrics, splits = evaluate_forecaster(fc, data, split=split, allow_synthetic=allow_synthetic)
    return metrics, fc, splits


def evaluate_forecaster(
    fc: Forecaster,
    data: DataConfig | None = None,
    *,
    split: str = "test",
    allow_synthetic: bool = False,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> tuple[Metrics, Splits]:
    """`evaluate_job` on a loaded long-term artifact.

    A calibrated artifact is scored on its intervals too (coverage, width and interval
    score per level, `Metrics.intervals`) whenever the data has the model's channels (its
    scores are per named channel, so other channels get point metrics only) and the split
    is not the one it was calibrated on (coverage there says nothing).
    """
    task = LongTermTask.for_model(fc, data, allow_synthetic=allow_synthetic)
    return task.metrics(fc.model, split, levels=levels), task.splits


@dataclass(frozen=True)
class CalibrationOutcome:
    """What `calibrate_job` / `recalibrate_job` stored and measured."""

    artifact: Path
    scores: ConformalScores
    checked: dict[str, Any]  # interval metrics on the windows that checked the scores
    n_checked: int  # how many windows (long-term) or series (short-term) those were
    checked_on: str = "test"  # which: the test split, or a recent holdout
    # Recalibration: what the scores it replaced gave on the same windows (None: it had none).
    replaced: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What `llata calibrate` prints."""
        return {
            "artifact": str(self.artifact),
            "calibration_split": self.scores.split,
            "calibration_windows": self.scores.n,
            **self.checked,
            f"{self.checked_on}_windows": self.n_checked,
            **({"replaced_scores": self.replaced} if self.replaced is not None else {}),
        }


def _flat(metrics: Metrics) -> dict[str, Any]:
    return {k: v for item in metrics.intervals for k, v in item.to_dict().items()}


def calibrate_job(
    model_dir: Path,
    *,
    allow_synthetic: bool = False,
    series: SeriesFrame | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> CalibrationOutcome:
    """Add split-conformal scores to an existing artifact, without retraining.

    The model forecasts every window of the validation split of the data it was trained on
    (cut with its own scaler and borders); its absolute residuals per step and channel are
    stored in the artifact (`calibrate`, `add_intervals`), and the test split's coverage,
    width and interval score per level are merged into its metrics.json. The artifact is
    rewritten atomically with a new manifest.

    Args:
        model_dir: the artifact directory.
        allow_synthetic: calibrate on generated data when the benchmark is unreachable
            (only sensible for a model that was trained on it).
        series: the series the model was trained on, when it is in memory (e.g. the
            feature store's frame); default: load the model's `data.dataset`.
        levels: the levels whose test metrics are recorded; the stored scores answer any.

    Raises:
        ValueError: data that is not the data the model was trained on. A short-term model
            is calibrated on its own series, as its config's `data.intervals` says.
    """
    fc = Forecaster.load(model_dir)
    data = fc.config.data
    if data.short_term:
        return _calibrate_short_term(fc, Path(model_dir))
    series = series or load_series(data, allow_synthetic=allow_synthetic)
    trained_on = fc.metadata.get("data_sha256")
    if trained_on and trained_on != series.sha256:
        raise ValueError(
            f"{data.dataset} now has SHA-256 {series.sha256[:12]}..., but {model_dir} was "
            f"trained on {str(trained_on)[:12]}...: its validation split would not be the "
            "held-out data the model was selected on"
        )
    splits = make_splits(series, data, scaler=fc.scaler)
    scores = calibrate(fc.model, splits.val, split="val", data_fingerprint=splits.fingerprint())
    test = evaluate(fc.model, splits.test, batch_size=512, intervals=scores, levels=levels)
    log.info(
        "calibrated on %d validation windows; test %s",
        scores.n,
        ", ".join(f"coverage {m.level:g}% {m.coverage:.3f}" for m in test.intervals),
    )
    checked = _flat(test)
    add_intervals(model_dir, scores, {"calibration_windows": scores.n, **checked})
    return CalibrationOutcome(Path(model_dir), scores, checked, test.n_windows)


def _calibrate_short_term(fc: Forecaster, model_dir: Path) -> CalibrationOutcome:
    """`calibrate_job` for a model of many series: normalised scores from each series' last
    training horizons (`data.intervals`: the artifact's config, filled with its dataset's
    scheme when it predates the setting), checked on the test targets (coverage, MSIS and
    ACD at 95 %)."""
    task = ShortTermTask.for_model(fc)
    if task.fingerprint() != fc.metrics.get("eval_split_hash", task.fingerprint()):
        raise ValueError(
            f"{fc.config.data.dataset} is not the data {model_dir} was trained on: its "
            "held-out horizons would not be the ones the model was selected on"
        )
    scores, _, checked = task.calibrated(fc.model)
    n_series = len(task.splits.windows.ids)
    log.info("calibrated on %d windows of %d series; test %s", scores.n, n_series, checked)
    add_intervals(model_dir, scores, {"calibration_windows": scores.n, **checked})
    return CalibrationOutcome(model_dir, scores, checked, n_series, "test_series")


def recalibrate_job(
    model_dir: Path,
    data_path: Path,
    *,
    recent_windows: int,
    holdout_windows: int,
    levels: Sequence[float] = DEFAULT_LEVELS,
    aci_gamma: float = 0.0,
) -> CalibrationOutcome:
    """Recalibrate an artifact's intervals on the newest windows of fresh data, after drift.

    Split conformal on the validation split assumes the future's errors look like the
    validation period's. When they drift, recalibrating on the most recent windows (daily,
    say) restores coverage; `benchmarks/intervals/coverage.py` measures this on the ETT
    test splits. The scheme is checked before it is stored: scores from the `recent_windows`
    complete windows before the file's last `holdout_windows` windows are scored on those
    holdout windows, and that coverage is what metrics.json records (and the registry's
    coverage gate reads). The stored scores then come from the last `recent_windows`
    windows of the file, holdout included: the newest errors are the best guide. The
    scores the artifact held before are scored on the same holdout (`replaced`), so a
    recalibration can be compared with the intervals it replaces.

    With `aci_gamma > 0`, the recalibration carries Adaptive Conformal Inference's state:
    the trial is read at the artifact's effective levels (nominal the first time), and its
    miss rate on the holdout moves each of `levels` (`aci_step`); the stored scores carry
    the new levels, so serving answers a nominal level with the quantile at its effective
    level. Daily recalibration on 30 days with ACI on top, fed back this way, met +-3
    points of nominal where the plain scheme missed on ETTh2 (benchmarks/NOTES.md).
    `aci_gamma = 0` stores no state: every level read at itself, as before.

    Args:
        model_dir: the artifact directory.
        data_path: a wide CSV / parquet file with the model's channels, its newest rows last
            (the data policy of `read_table` applies).
        recent_windows: how many of the newest complete windows calibrate.
        holdout_windows: how many of the newest windows check the scheme's coverage.
        levels: the levels whose holdout coverage is recorded (and, with ACI, adapted).
        aci_gamma: ACI's step size (0: off).

    Raises:
        ValueError: a short-term model, window counts below 1, a negative `aci_gamma`, or a
            file with too few rows.
        DataError: the file breaks the data policy or lacks one of the model's channels.
    """
    fc = Forecaster.load(model_dir)
    data = fc.config.data
    if data.short_term:
        raise ValueError(f"{model_dir} is a short-term model; recalibrate long-term models")
    if recent_windows < 1 or holdout_windows < 1:
        raise ValueError(
            f"recent and holdout windows must be >= 1, got {recent_windows}, {holdout_windows}"
        )
    if not aci_gamma >= 0:
        raise ValueError(f"the ACI step size must be >= 0, got {aci_gamma}")
    series = load_series(
        data.model_copy(update={"dataset": str(data_path), "channels": fc.channels})
    )
    length = data.input_size + data.horizon - 1  # rows beyond the windows' first row
    rows = recent_windows + holdout_windows + length
    if series.values.shape[0] < rows:
        raise ValueError(
            f"{data_path} has {series.values.shape[0]} rows; {recent_windows} calibration and "
            f"{holdout_windows} holdout windows of {data.input_size} + {data.horizon} steps "
            f"need {rows}"
        )
    scaled = fc.scaler.transform(series.values)

    def windows(end: int, count: int) -> WindowDataset:
        """`count` complete windows ending at row `end` (exclusive; 0 = the last row)."""
        stop = scaled.shape[0] - end
        return WindowDataset(scaled[stop - count - length : stop], data.input_size, data.horizon)

    fingerprint = series.sha256[:16]
    # ACI's state so far: the artifact's effective levels (none: every level at itself).
    state = dict(fc.intervals.effective_levels) if fc.intervals is not None and aci_gamma else {}
    # The trial's calibration targets all end before the first holdout forecast begins:
    # `horizon - 1` windows between them straddle that origin and are left out.
    trial = calibrate(fc.model, windows(holdout_windows + data.horizon - 1, recent_windows))
    trial = trial.with_levels({lv: v for lv, v in state.items() if lv in levels})
    held = evaluate(fc.model, windows(0, holdout_windows), intervals=trial, levels=levels)
    # The artifact's own scores on the same holdout: whether recalibrating improves on them
    # is the registry's question for a recalibrated version (serving.registry_gates).
    replaced = None
    if fc.intervals is not None and fc.intervals.answerable(levels):
        before = evaluate(
            fc.model,
            windows(0, holdout_windows),
            intervals=fc.intervals,
            levels=fc.intervals.answerable(levels),
        )
        replaced = _flat(before)
    checked = _flat(held)
    # ACI's feedback is the trial's miss rate: scores fitted before the holdout, read at the
    # current levels, judged on windows they never saw. Production's own scores were
    # fitted on most of the holdout; their miss rate would understate a drift.
    effective: dict[float, float] = {}
    for level in levels if aci_gamma else ():
        miss = 1.0 - checked[f"coverage_{level_name(level)}"]
        effective[float(level)] = aci_step(state.get(level, level), level, miss, aci_gamma)
    scores = calibrate(
        fc.model, windows(0, recent_windows), split="recent", data_fingerprint=fingerprint
    ).with_levels(effective)
    log.info(
        "recalibrated on the last %d windows of %s; holdout %s",
        scores.n,
        data_path,
        ", ".join(f"coverage {m.level:g}% {m.coverage:.3f}" for m in held.intervals),
    )
    extra: dict[str, Any] = {
        "calibration_windows": scores.n,
        "calibration_data": str(data_path),
        "calibration_data_sha256": series.sha256,
        "coverage_split": "recent-holdout",
        "coverage_windows": held.n_windows,
    }
    if aci_gamma:
        named = {level_name(k): v for k, v in effective.items()}
        extra |= {"aci_gamma": aci_gamma, "effective_levels": named}
    add_intervals(model_dir, scores, extra | checked)
    return CalibrationOutcome(Path(model_dir), scores, checked, held.n_windows, "holdout", replaced)


def evaluate_short_term(
    fc: Forecaster, data: DataConfig | None = None, *, split: ShortTermSplit = "test"
) -> tuple[dict[str, float], ShortTermSplits]:
    """SMAPE, MASE and OWA (against Naive2) of a short-term artifact on its test data.

    Args:
        fc: the loaded artifact.
        data: other short-term data with the model's input size and horizon (e.g. the same
            series in another file); default the data it was trained on.
        split: `test` (the test targets), or `val` (each series' held-out last horizon).
    """
    task = ShortTermTask.for_model(fc, data)
    return task.score(fc.model, split), task.splits


def forecast_frame(
    fc: Forecaster,
    frame: pd.DataFrame,
    timestamp_column: str | None,
    horizon: int | None = None,
    levels: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Forecast after the end of a wide frame; future timestamps follow its frequency.

    With `levels` (percent), each channel's conformal bounds follow the point columns as
    `<channel>_lo_<level>` and `<channel>_hi_<level>` (see `IntervalForecast.to_frame`).
    """
    if levels is None:
        out = pd.DataFrame(fc.predict(frame, horizon), columns=list(fc.channels))
    else:
        out = fc.predict(frame, horizon, levels=levels).to_frame()
    if timestamp_column and timestamp_column in frame.columns:
        ts = pd.DatetimeIndex(pd.to_datetime(frame[timestamp_column]))
        try:  # the spacing of the last 64 rows: an irregular early stretch does not matter
            future = extend_timestamps(ts[-64:], len(out))
        except ValueError:  # irregular: the forecast goes out without timestamps
            return out
        out.insert(0, timestamp_column, future)
    return out


def plot_loss_curve(history: Path, path: Path) -> Path:
    """Training loss and validation error per epoch from a run's `history.jsonl`, as PNG.

    Two panels because the scales differ: the training objective (total and task loss, l1
    by default) and the validation scores (the one early stopping watches first). Markers keep a
    one-epoch run (the quick profile) visible.
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    lines = [line for line in history.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{history} holds no epochs")
    rows = [json.loads(line) for line in lines]
    epochs = [r["epoch"] for r in rows]
    validation = [EpochLog.validation_of(r) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train (total)")
    top.plot(epochs, [r["task_loss"] for r in rows], marker="o", label="train (task)")
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    for name, color in zip(validation[0], ("tab:red", "tab:purple"), strict=False):
        values = [v[name] for v in validation]
        bottom.plot(epochs, values, marker="o", color=color, label=f"val {name.upper()}")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("validation error")
    bottom.legend(fontsize=8)
    top.set_title("training history")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
