"""One thin training function on Hugging Face `accelerate`.

The same loop runs on the CPU (optionally under bf16 autocast), on one CUDA GPU (bf16) and
in several processes (`accelerate launch`, DDP). The paper's recipe by default: Adam at 5e-4
(1e-4 for the feature projections), cosine annealing over `t_max` epochs, early stopping on
the task's validation score with the best weights restored. Every epoch writes a
checkpoint, so a killed run continues with `resume=True` exactly where it stopped.

`fit` trains any `ForecastTask` the same way: the task gives the training samples, the
loss's seasonality and the validation score (MSE for long-term windows, SMAPE for M4-style
series). Short-term batches also carry the masks and input windows that the M4 losses
take (`WindowContext`), and each epoch draws fresh training cut points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from llata_core.atomic import swap_directory
from llata_core.backbone import PreparedBackbone
from llata_core.baselines import Baseline, build_baseline
from llata_core.config import LlataConfig, resolve_precision
from llata_core.data import Splits
from llata_core.losses import DistillationLoss, LossBreakdown, WindowContext
from llata_core.model import LlataModel
from llata_core.shortterm import ShortTermSample, ShortTermSplits
from llata_core.tasks import ForecastTask, as_task

log = logging.getLogger(__name__)

TrainingModel = LlataModel | Baseline


@dataclass
class EpochLog:
    """One line of the training history.

    Attributes:
        val_metric: the validation metric early stopping minimises (the task's).
        val_score: its value after this epoch.
        val_extra: the other validation metrics the task computes (MAE for long-term).
    """

    epoch: int
    train_loss: float
    task_loss: float
    consistency_loss: float
    feature_loss: float
    val_metric: str
    val_score: float
    lr: float
    seconds: float
    steps: int
    val_extra: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def validation_of(row: Mapping[str, Any]) -> dict[str, float]:
        """Every validation metric of a history line by name, the monitored one first.

        Lines of earlier versions carried `val_mse`/`val_mae` (long-term) or `val_smape`
        (short-term, with the other two None) instead of the metric's name and score.
        """
        if "val_score" in row:
            return {row["val_metric"]: row["val_score"], **row.get("val_extra", {})}
        if row.get("val_smape") is not None:
            return {"smape": row["val_smape"]}
        return {"mse": row["val_mse"], "mae": row["val_mae"]}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> EpochLog:
        """A history line as this or an earlier version wrote it."""
        (metric, score), *extra = cls.validation_of(row).items()
        rest = {k: v for k, v in row.items() if not k.startswith("val_")}
        return cls(**rest, val_metric=metric, val_score=score, val_extra=dict(extra))

    def validation(self) -> dict[str, float]:
        """Every validation metric of the epoch, the monitored one first."""
        return self.validation_of(vars(self))


def read_history(path: Path) -> list[EpochLog]:
    """The epochs of a run's `history.jsonl`, in any version's format."""
    lines = path.read_text().splitlines()
    return [EpochLog.from_dict(json.loads(line)) for line in lines if line.strip()]


@dataclass
class FitResult:
    """The trained model (best weights restored) and how training went.

    Attributes:
        val_metric: the validation metric early stopping minimised.
        best_val_score: its best value, the one of the restored weights.
    """

    model: TrainingModel
    val_metric: str
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_val_score: float = math.inf
    stopped_early: bool = False
    seconds: float = 0.0
    precision: str = "fp32"
    device: str = "cpu"


def make_accelerator(cfg: LlataConfig) -> Accelerator:
    """An accelerator for this config: CUDA when present, DDP when launched that way.

    Mixed precision is not handed to accelerate: its state is a process-wide singleton that
    refuses a second precision in the same process (a benchmark timing fp32 and bf16, a
    test suite). `fit` applies bf16 autocast itself, which is what accelerate would do.
    """
    # Without distillation the teacher, match and projections get no gradient: DDP must
    # be told, or it waits forever for their buckets.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=not cfg.loss.distills)
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp])


def build_training_model(cfg: LlataConfig, backbone: PreparedBackbone | None) -> TrainingModel:
    """The model `cfg.model.kind` names: LLaTA over a prepared backbone, or a baseline."""
    if cfg.model.kind == "llata":
        if backbone is None:
            raise ValueError("the llata model needs a prepared backbone")
        return LlataModel(cfg, backbone)
    return build_baseline(cfg)


# Settings added to the config after checkpoints had been written with it, in the order they
# were added. At its default a setting reproduces the behaviour from before it existed, so it
# enters the digest only when it differs from the default, and checkpoints written by each
# earlier version of this rule (which left the newer settings in) still resume.
_LATER_SETTINGS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"data": ("series_column", "value_column", "seasonality")},  # short-term data
    {"model": ("kind", "baseline")},  # baselines in the same harness
    {"train": ("lr_schedule",)},  # the baselines' own learning-rate schedules
)


def _digest(cfg: LlataConfig, later: tuple[dict[str, tuple[str, ...]], ...]) -> str:
    raw, defaults = cfg.to_dict(), LlataConfig().to_dict()
    for group in later:
        for section, keys in group.items():
            for key in keys:
                if raw[section][key] == defaults[section][key]:
                    del raw[section][key]
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def config_digest(cfg: LlataConfig) -> str:
    """Identifies a training setup; a checkpoint from another setup is never resumed."""
    return _digest(cfg, _LATER_SETTINGS)


def resumable_digests(cfg: LlataConfig) -> frozenset[str]:
    """The digests under which this setup's checkpoints were written by any version."""
    return frozenset(_digest(cfg, _LATER_SETTINGS[:n]) for n in range(len(_LATER_SETTINGS) + 1))


def _unpack(
    batch: tuple[torch.Tensor, torch.Tensor] | ShortTermSample,
) -> tuple[torch.Tensor, torch.Tensor, WindowContext]:
    """A batch as (input `[B, L, M]`, target `[B, H, M]`, what the losses may also need)."""
    if isinstance(batch, ShortTermSample):
        return (
            batch.insample,
            batch.target,
            WindowContext(batch.insample, batch.insample_mask, batch.target_mask),
        )
    x, y = batch
    return x, y, WindowContext(x)


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's trainable parameters (`best.safetensors`, `current.safetensors`)
    into a freshly built training model; frozen weights come from the backbone itself.

    Raises:
        RuntimeError: the checkpoint lacks a trainable parameter of this model.
    """
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise RuntimeError(f"checkpoint lacks trainable parameters: {missing[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


@dataclass
class CheckpointState:
    """Where a run stands after its last finished epoch (`state.json`).

    Attributes:
        config_digest: the setup that wrote it (`config_digest`).
        epoch: the last finished epoch, counted from 0.
        val_metric: the validation metric early stopping minimises.
        best_val_score: its best value so far.
        bad_epochs: epochs since it last improved.
        best_epoch: the epoch (from 1) of the best weights.
        history: every finished epoch.
    """

    config_digest: str
    epoch: int
    val_metric: str
    best_val_score: float
    bad_epochs: int
    best_epoch: int
    history: list[EpochLog]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CheckpointState:
        """A state as this or an earlier version wrote it: earlier states kept the best
        score under `best_val_mse` whatever the metric, which their history names."""
        history = [EpochLog.from_dict(h) for h in raw["history"]]
        return cls(
            config_digest=raw["config_digest"],
            epoch=raw["epoch"],
            val_metric=raw.get("val_metric", history[-1].val_metric),
            best_val_score=raw["best_val_score" if "best_val_score" in raw else "best_val_mse"],
            bad_epochs=raw["bad_epochs"],
            best_epoch=raw["best_epoch"],
            history=history,
        )


class Checkpoint:
    """A run's resumable state in `run_dir/checkpoint/`, replaced atomically every epoch.

    Weights are safetensors; optimizer and scheduler state are plain tensors and numbers,
    read back with `torch.load(weights_only=True)`, so resuming never unpickles code.
    """

    def __init__(self, run_dir: Path):
        self.dir = run_dir / "checkpoint"

    def exists(self) -> bool:
        return (self.dir / "state.json").is_file()

    def save(
        self,
        *,
        model: nn.Module,
        best: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        state: CheckpointState,
    ) -> None:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.dir.parent, prefix=".checkpoint."))
        try:
            save_file(_trainable_state(model), str(tmp / "current.safetensors"))
            save_file(best, str(tmp / "best.safetensors"))
            torch.save(
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                },
                tmp / "optim.pt",
            )
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1))
            swap_directory(tmp, self.dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def state(self) -> CheckpointState:
        """The run's progress, in any version's format."""
        return CheckpointState.from_dict(json.loads((self.dir / "state.json").read_text()))

    def load(
        self,
    ) -> tuple[CheckpointState, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        """Progress, current and best trainable weights, and optimizer/scheduler/RNG state."""
        current = load_file(str(self.dir / "current.safetensors"))
        best = load_file(str(self.dir / "best.safetensors"))
        optim = torch.load(self.dir / "optim.pt", weights_only=True)
        return self.state(), current, best, optim


def _log_history(run_dir: Path, entry: EpochLog) -> None:
    with open(run_dir / "history.jsonl", "a") as fh:
        fh.write(json.dumps(asdict(entry)) + "\n")


def make_optimizer(cfg: LlataConfig, model: TrainingModel) -> torch.optim.Adam:
    """The recipe's Adam: `train.lr`, and `train.proj_lr` for the feature projections."""
    projections = {id(p) for p in model.projection_parameters()}
    main_params = [p for p in model.parameters() if p.requires_grad and id(p) not in projections]
    return torch.optim.Adam(
        [
            {"params": main_params, "lr": cfg.train.lr},
            {"params": model.projection_parameters(), "lr": cfg.train.proj_lr},
        ],
        weight_decay=cfg.train.weight_decay,
    )


def make_scheduler(
    cfg: LlataConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-epoch learning-rate schedule `train.lr_schedule` names (stepped after each
    epoch): cosine annealing over `t_max` epochs, or halving after every epoch."""
    if cfg.train.lr_schedule == "halve":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.train.t_max, eta_min=1e-8
    )


def training_objective(
    cfg: LlataConfig, model: TrainingModel, seasonality: int = 1
) -> tuple[DistillationLoss, bool]:
    """The loss `fit` minimises, and whether the model runs its teacher branch for it.

    Without a teacher (baselines, or `w_out = w_feat = 0`) only the task loss applies.
    """
    distill = cfg.loss.distills and isinstance(model, LlataModel)
    loss_cfg = cfg.loss if distill else cfg.loss.model_copy(update={"w_out": 0.0, "w_feat": 0.0})
    return DistillationLoss(loss_cfg, seasonality=seasonality), distill


def train_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor] | ShortTermSample,
    criterion: DistillationLoss,
    optimizer: torch.optim.Optimizer,
    backward: Callable[[torch.Tensor], None],
    *,
    bf16: bool,
    distill: bool,
) -> LossBreakdown:
    """One optimizer step on one batch, as `fit` takes it; returns the loss terms.

    Args:
        backward: how to back-propagate the total loss (`Accelerator.backward` in `fit`).
        bf16: run the forward pass and the loss under bf16 autocast.
        distill: run the teacher branch too (see `training_objective`).
    """
    x, y, context = _unpack(batch)
    device = next(model.parameters()).device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, distill=distill)
        losses = criterion(out, y, context)
    optimizer.zero_grad(set_to_none=True)
    backward(losses.total)
    optimizer.step()
    return losses


def fit(
    cfg: LlataConfig,
    task: ForecastTask | Splits | ShortTermSplits,
    backbone: PreparedBackbone | None,
    *,
    run_dir: Path,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train the forecaster with the distillation objective; return the best model.

    Args:
        cfg: the whole configuration (data sizes, model, loss, recipe).
        task: the forecasting task (`ForecastTask`), or the splits of one (`as_task`); only
            its training data and validation are used (the test split is not touched here).
        backbone: the prepared backbone the model wraps.
        run_dir: where the checkpoint and `history.jsonl` go.
        resume: continue from `run_dir`'s checkpoint when it exists for the same config.
        accelerator: reuse one (e.g. under `accelerate launch`); default builds one.
        progress: show a progress bar; default only on an interactive terminal.

    Returns:
        The model with the best validation weights restored, its history and timing.
    """
    start = time.perf_counter()
    run = _setup(cfg, as_task(task), backbone, run_dir, accelerator or make_accelerator(cfg))
    if resume and run.ckpt.exists():
        _resume(run)
    elif (run_dir / "history.jsonl").exists():
        (run_dir / "history.jsonl").unlink()
    run.model, run.optimizer, run.train_loader = run.acc.prepare(
        run.model, run.optimizer, run.train_loader
    )
    validate = run.task.validator(cfg.train, run.acc)
    raw_model: TrainingModel = run.acc.unwrap_model(run.model)
    result = FitResult(raw_model, run.task.val_metric, device=str(run.acc.device))
    result.precision = resolve_precision(cfg.train.precision, run.acc.device)
    show = progress if progress is not None else sys.stderr.isatty()
    state = run.state
    for epoch in range(state.epoch + 1, cfg.train.epochs):
        if state.bad_epochs >= cfg.train.patience:
            break
        t0 = time.perf_counter()
        means, steps = _train_epoch(run, epoch, result.precision == "bf16", show)
        scores = validate(run.model, result.precision == "bf16")
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        entry = EpochLog(
            epoch=epoch + 1,
            train_loss=means[0],
            task_loss=means[1],
            consistency_loss=means[2],
            feature_loss=means[3],
            val_metric=run.task.val_metric,
            val_score=scores.pop(run.task.val_metric),
            lr=lr,
            seconds=time.perf_counter() - t0,
            steps=steps,
            val_extra=scores,
        )
        _end_epoch(run, raw_model, entry)
        if state.bad_epochs >= cfg.train.patience:
            result.stopped_early = True
            log.info("early stop: no validation improvement for %d epochs", state.bad_epochs)
            break
    load_trainable(raw_model, run.best_weights)
    raw_model.eval()
    result.history, result.best_epoch = state.history, state.best_epoch
    result.best_val_score = state.best_val_score
    result.seconds = time.perf_counter() - start
    return result


@dataclass
class _Run:
    """What one `fit` call trains with, and where it stands (`state`, `best_weights`)."""

    cfg: LlataConfig
    task: ForecastTask
    acc: Accelerator
    model: nn.Module  # wrapped for the processes after `prepare`
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    train_loader: Any  # a DataLoader; after `prepare` accelerate's, which has `set_epoch`
    criterion: DistillationLoss
    distill: bool
    run_dir: Path
    ckpt: Checkpoint
    state: CheckpointState
    best_weights: dict[str, torch.Tensor]


def _setup(
    cfg: LlataConfig,
    task: ForecastTask,
    backbone: PreparedBackbone | None,
    run_dir: Path,
    acc: Accelerator,
) -> _Run:
    """Seed, then build the model, optimizer, schedule, training loader and loss."""
    run_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.train.seed)
    model = build_training_model(cfg, backbone)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(
        task.train, batch_size=cfg.train.batch_size, shuffle=True, generator=generator
    )
    criterion, distill = training_objective(cfg, model, task.seasonality)
    fresh = CheckpointState(config_digest(cfg), -1, task.val_metric, math.inf, 0, 0, [])
    return _Run(
        cfg=cfg,
        task=task,
        acc=acc,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        train_loader=train_loader,
        criterion=criterion,
        distill=distill,
        run_dir=run_dir,
        ckpt=Checkpoint(run_dir),
        state=fresh,
        best_weights=_trainable_state(model),
    )


def _resume(run: _Run) -> None:
    """Restore weights, optimizer, schedule, RNG and progress from the run's checkpoint.

    Raises:
        RuntimeError: the checkpoint was written for another configuration.
    """
    state, current, run.best_weights, optim = run.ckpt.load()
    if state.config_digest not in resumable_digests(run.cfg):
        raise RuntimeError(
            f"checkpoint in {run.ckpt.dir} was written for another configuration "
            f"({state.config_digest} != {run.state.config_digest}); use a new run directory"
        )
    load_trainable(run.model, current)
    run.optimizer.load_state_dict(optim["optimizer"])
    run.scheduler.load_state_dict(optim["scheduler"])
    torch.set_rng_state(optim["rng"])
    state.config_digest = run.state.config_digest  # saved from now on under today's digest
    run.state = state
    log.info("resuming from epoch %d (best validation %.4f)", state.epoch + 1, state.best_val_score)


def _train_epoch(run: _Run, epoch: int, bf16: bool, show: bool) -> tuple[list[float], int]:
    """One pass over the training data (at most `max_steps_per_epoch` steps).

    Returns:
        The mean total, task, consistency and feature losses, and the number of steps.
    """
    train = run.cfg.train
    run.generator.manual_seed(train.seed + epoch)  # the epoch's order, also after resume
    # Short-term windows draw fresh cut points each epoch. Through the loader, not the
    # dataset: accelerate's loader re-sets the dataset's epoch to its own counter (which
    # restarts at 0 on resume) whenever it starts iterating.
    run.train_loader.set_epoch(epoch)
    run.model.train()
    sums = torch.zeros(4, dtype=torch.float64)
    steps = 0
    cap = train.max_steps_per_epoch
    n_batches = len(run.train_loader) if cap is None else min(cap, len(run.train_loader))
    hide = not (show and run.acc.is_main_process)
    bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}", disable=hide, leave=False)
    for batch in run.train_loader:
        losses = train_step(
            run.model,
            batch,
            run.criterion,
            run.optimizer,
            run.acc.backward,
            bf16=bf16,
            distill=run.distill,
        )
        if not torch.isfinite(losses.total):
            raise FloatingPointError(
                f"training loss became {losses.total.item()} at epoch {epoch + 1}"
            )
        terms = (losses.total, losses.task, losses.consistency, losses.feature)
        sums += torch.tensor([t.item() for t in terms], dtype=torch.float64)
        steps += 1
        bar.update()
        if steps % train.log_every == 0:
            bar.set_postfix(loss=f"{sums[0].item() / steps:.4f}")
        if cap is not None and steps >= cap:
            break
    bar.close()
    return (sums / max(steps, 1)).tolist(), steps


def _end_epoch(run: _Run, raw_model: TrainingModel, entry: EpochLog) -> None:
    """Keep the best weights, log the epoch and checkpoint the run (main process)."""
    state = run.state
    state.history.append(entry)
    state.epoch = entry.epoch - 1
    if entry.val_score < state.best_val_score:
        state.best_val_score, state.bad_epochs, state.best_epoch = entry.val_score, 0, entry.epoch
        run.best_weights = _trainable_state(raw_model)
    else:
        state.bad_epochs += 1
    if run.acc.is_main_process:
        log.info(
            "epoch %d: loss %.4f (task %.4f, cons %.4f, feat %.4f) | val %s | lr %.2e | %.1fs%s",
            entry.epoch,
            entry.train_loss,
            entry.task_loss,
            entry.consistency_loss,
            entry.feature_loss,
            " ".join(f"{k.upper()} {v:.4f}" for k, v in entry.validation().items()),
            entry.lr,
            entry.seconds,
            " *" if state.bad_epochs == 0 else "",
        )
        _log_history(run.run_dir, entry)
        run.ckpt.save(
            model=raw_model,
            best=run.best_weights,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            state=state,
        )
    run.acc.wait_for_everyone()
