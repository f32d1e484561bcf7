"""One thin training function on Hugging Face `accelerate`.

The same loop runs on the CPU (optionally under bf16 autocast), on one CUDA GPU (bf16) and
in several processes (`accelerate launch`, DDP). The paper's recipe by default: Adam at 5e-4
(1e-4 for the feature projections), cosine annealing over `t_max` epochs, early stopping on
the task's validation score with the best weights restored. Every epoch writes a
checkpoint, so a killed run continues with `resume=True` exactly where it stopped.

`fit` trains any `ForecastTask` the same way: the task gives the training samples, the
loss's seasonality and the validation score (MSE for long-term windows, SMAPE for M4-style
series). Every kind of batch has one shape (`TrainingBatch`): input, target and the masks
of padded points that the M4 losses take (none for long-term windows). Short-term tasks
draw fresh training cut points each epoch.

The run's record (history and checkpoint) is `llata_core.checkpoint`; its names are
re-exported here for the callers of `fit` that resume or read runs.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from llata_core.backbone import PreparedBackbone
from llata_core.baselines import Baseline, build_baseline
from llata_core.checkpoint import (
    Checkpoint,
    CheckpointState,
    EpochLog,
    append_history,
    config_digest,
    load_trainable,
    read_history,
    resumable_digests,
    trainable_state,
)
from llata_core.config import LlataConfig, resolve_precision
from llata_core.data import Splits
from llata_core.losses import DistillationLoss, LossBreakdown, WindowContext
from llata_core.model import LlataModel
from llata_core.shortterm import ShortTermSplits
from llata_core.tasks import ForecastTask, TrainingBatch, as_task

__all__ = [
    "Checkpoint",
    "CheckpointState",
    "EpochLog",
    "FitResult",
    "TrainingModel",
    "build_training_model",
    "config_digest",
    "fit",
    "load_trainable",
    "make_accelerator",
    "make_optimizer",
    "make_scheduler",
    "read_history",
    "resumable_digests",
    "train_step",
    "training_objective",
]

log = logging.getLogger(__name__)

TrainingModel = LlataModel | Baseline


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
    batch: TrainingBatch,
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
    x, y = batch.insample, batch.target  # [B, L, M], [B, H, M]
    context = WindowContext(x, batch.insample_mask, batch.target_mask)
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
        best_weights=trainable_state(model),
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
        run.best_weights = trainable_state(raw_model)
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
        append_history(run.run_dir, entry)
        run.ckpt.save(
            model=raw_model,
            best=run.best_weights,
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            state=state,
        )
    run.acc.wait_for_everyone()
