"""One thin training function on Hugging Face `accelerate`.

The same loop runs on the CPU (optionally under bf16 autocast), on one CUDA GPU (bf16) and
in several processes (`accelerate launch`, DDP). The paper's recipe by default: Adam at 5e-4
(1e-4 for the feature projections), cosine annealing over `t_max` epochs, early stopping on
validation MSE with the best weights restored. Every epoch writes a checkpoint, so a killed
run continues with `resume=True` exactly where it stopped.

The short-term (M4) setting runs through the same loop: its batches also carry the masks
and input windows that the M4 losses take (`WindowContext`), each epoch draws fresh
training cut points, and early stopping watches the validation SMAPE instead of the MSE.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from llata_core.atomic import swap_directory
from llata_core.backbone import PreparedBackbone
from llata_core.baselines import Baseline, build_baseline
from llata_core.config import LlataConfig, resolve_precision
from llata_core.data import Splits
from llata_core.losses import DistillationLoss, LossBreakdown, WindowContext
from llata_core.model import LlataModel
from llata_core.shortterm import ShortTermSample, ShortTermSplits, validation_smape

log = logging.getLogger(__name__)

TrainingModel = LlataModel | Baseline


@dataclass
class EpochLog:
    """One line of the training history.

    Long-term runs validate with MSE/MAE on scaled windows; short-term runs with the SMAPE
    of each series' held-out horizon (`val_mse`/`val_mae` are None there).
    """

    epoch: int
    train_loss: float
    task_loss: float
    consistency_loss: float
    feature_loss: float
    val_mse: float | None
    val_mae: float | None
    lr: float
    seconds: float
    steps: int
    val_smape: float | None = None

    @property
    def val_score(self) -> float:
        """What early stopping minimises: the SMAPE when there is one, else the MSE."""
        score = self.val_smape if self.val_smape is not None else self.val_mse
        assert score is not None
        return score


@dataclass
class FitResult:
    """The trained model (best weights restored) and how training went."""

    model: TrainingModel
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_val_mse: float = math.inf  # long-term runs
    best_val_smape: float | None = None  # short-term runs
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
        state: dict,
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
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
            swap_directory(tmp, self.dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        state = json.loads((self.dir / "state.json").read_text())
        current = load_file(str(self.dir / "current.safetensors"))
        best = load_file(str(self.dir / "best.safetensors"))
        optim = torch.load(self.dir / "optim.pt", weights_only=True)
        return state, current, best, optim


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
    splits: Splits | ShortTermSplits,
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
        splits: training and validation windows (the test split is not touched here):
            long-term `Splits`, or short-term `ShortTermSplits` (M4 and the like).
        backbone: the prepared backbone the model wraps.
        run_dir: where the checkpoint and `history.jsonl` go.
        resume: continue from `run_dir`'s checkpoint when it exists for the same config.
        accelerator: reuse one (e.g. under `accelerate launch`); default builds one.
        progress: show a progress bar; default only on an interactive terminal.

    Returns:
        The model with the best validation weights restored, its history and timing.
    """
    start = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    acc = accelerator or make_accelerator(cfg)
    set_seed(cfg.train.seed)
    model = build_training_model(cfg, backbone)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = DataLoader(
        splits.train, batch_size=cfg.train.batch_size, shuffle=True, generator=generator
    )
    # Short-term data validates on each series' held-out horizon, without a loader.
    val_loader, seasonality = None, 1
    if isinstance(splits, ShortTermSplits):
        seasonality = splits.seasonality
    else:
        val_set = splits.val
        if cfg.train.max_eval_windows is not None and cfg.train.max_eval_windows < len(val_set):
            val_set = Subset(val_set, range(cfg.train.max_eval_windows))  # type: ignore[assignment]
        val_loader = DataLoader(val_set, batch_size=cfg.train.eval_batch_size, shuffle=False)
    criterion, distill = training_objective(cfg, model, seasonality)

    digest = config_digest(cfg)
    ckpt = Checkpoint(run_dir)
    first_epoch, best_score, bad_epochs = 0, math.inf, 0  # score: val MSE, or SMAPE
    best_state = _trainable_state(model)
    result = FitResult(model=model)
    if resume and ckpt.exists():
        state, current, best_state, optim = ckpt.load()
        if state["config_digest"] not in resumable_digests(cfg):
            raise RuntimeError(
                f"checkpoint in {ckpt.dir} was written for another configuration "
                f"({state['config_digest']} != {digest}); use a new run directory"
            )
        load_trainable(model, current)
        optimizer.load_state_dict(optim["optimizer"])
        scheduler.load_state_dict(optim["scheduler"])
        torch.set_rng_state(optim["rng"])
        first_epoch, best_score, bad_epochs = (
            state["epoch"] + 1,
            state["best_val_mse"],  # the best monitored score; the key predates short-term
            state["bad_epochs"],
        )
        result.history = [EpochLog(**h) for h in state["history"]]
        result.best_epoch = state["best_epoch"]
        log.info("resuming from epoch %d (best validation %.4f)", first_epoch, best_score)
    elif (run_dir / "history.jsonl").exists():
        (run_dir / "history.jsonl").unlink()

    if val_loader is not None:
        model, optimizer, train_loader, val_loader = acc.prepare(
            model, optimizer, train_loader, val_loader
        )
    else:
        model, optimizer, train_loader = acc.prepare(model, optimizer, train_loader)
    raw_model: TrainingModel = acc.unwrap_model(model)
    result.precision = resolve_precision(cfg.train.precision, acc.device)
    bf16 = result.precision == "bf16"
    result.device = str(acc.device)
    show = progress if progress is not None else sys.stderr.isatty()
    steps_cap = cfg.train.max_steps_per_epoch
    done = first_epoch >= cfg.train.epochs or bad_epochs >= cfg.train.patience

    for epoch in range(first_epoch, cfg.train.epochs):
        if done:
            break
        t0 = time.perf_counter()
        generator.manual_seed(cfg.train.seed + epoch)  # the epoch's order, also after resume
        # Short-term windows draw fresh cut points each epoch. Through the loader, not the
        # dataset: accelerate's loader re-sets the dataset's epoch to its own counter
        # (which restarts at 0 on resume) whenever it starts iterating.
        train_loader.set_epoch(epoch)
        model.train()
        sums = torch.zeros(4, dtype=torch.float64)
        steps = 0
        n_batches = len(train_loader) if steps_cap is None else min(steps_cap, len(train_loader))
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {epoch + 1}",
            disable=not (show and acc.is_main_process),
            leave=False,
        )
        for batch in train_loader:
            losses = train_step(
                model, batch, criterion, optimizer, acc.backward, bf16=bf16, distill=distill
            )
            if not torch.isfinite(losses.total):
                raise FloatingPointError(
                    f"training loss became {losses.total.item()} at epoch {epoch + 1}"
                )
            sums += torch.tensor(
                [
                    losses.total.item(),
                    losses.task.item(),
                    losses.consistency.item(),
                    losses.feature.item(),
                ],
                dtype=torch.float64,
            )
            steps += 1
            bar.update()
            if steps % cfg.train.log_every == 0:
                bar.set_postfix(loss=f"{sums[0].item() / steps:.4f}")
            if steps_cap is not None and steps >= steps_cap:
                break
        bar.close()
        val_mse = val_mae = val_smape = None
        if val_loader is not None:
            val_mse, val_mae = _validate(model, val_loader, acc, bf16)
        else:
            assert isinstance(splits, ShortTermSplits)
            val_smape = _validate_short_term(model, splits, acc, bf16, cfg.train.eval_batch_size)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        means = (sums / max(steps, 1)).tolist()
        entry = EpochLog(
            epoch=epoch + 1,
            train_loss=means[0],
            task_loss=means[1],
            consistency_loss=means[2],
            feature_loss=means[3],
            val_mse=val_mse,
            val_mae=val_mae,
            lr=lr,
            seconds=time.perf_counter() - t0,
            steps=steps,
            val_smape=val_smape,
        )
        result.history.append(entry)
        if entry.val_score < best_score:
            best_score, bad_epochs, result.best_epoch = entry.val_score, 0, epoch + 1
            best_state = _trainable_state(raw_model)
        else:
            bad_epochs += 1
        if acc.is_main_process:
            log.info(
                "epoch %d: loss %.4f (task %.4f, cons %.4f, feat %.4f) | val %s | lr %.2e "
                "| %.1fs%s",
                entry.epoch,
                *means,
                f"SMAPE {val_smape:.4f}"
                if val_smape is not None
                else f"MSE {val_mse:.4f} MAE {val_mae:.4f}",
                lr,
                entry.seconds,
                " *" if bad_epochs == 0 else "",
            )
            _log_history(run_dir, entry)
            ckpt.save(
                model=raw_model,
                best=best_state,
                optimizer=optimizer,
                scheduler=scheduler,
                state={
                    "config_digest": digest,
                    "epoch": epoch,
                    "best_val_mse": best_score,
                    "bad_epochs": bad_epochs,
                    "best_epoch": result.best_epoch,
                    "history": [asdict(h) for h in result.history],
                },
            )
        acc.wait_for_everyone()
        if bad_epochs >= cfg.train.patience:
            result.stopped_early = True
            log.info("early stop: no validation improvement for %d epochs", bad_epochs)
            break

    load_trainable(raw_model, best_state)
    raw_model.eval()
    result.model = raw_model
    if val_loader is None:
        result.best_val_smape = best_score
    else:
        result.best_val_mse = best_score
    result.seconds = time.perf_counter() - start
    return result


def _validate_short_term(
    model: torch.nn.Module, splits: ShortTermSplits, acc: Accelerator, bf16: bool, batch_size: int
) -> float:
    """Validation SMAPE of the student; every process scores all series (they are few)."""
    model.eval()
    score = validation_smape(
        lambda x: model(x, distill=False).y_time,
        splits,
        batch_size=batch_size,
        device=acc.device,
        bf16=bf16,
    )
    model.train()
    return score


@torch.no_grad()
def _validate(
    model: torch.nn.Module, loader: DataLoader, acc: Accelerator, bf16: bool
) -> tuple[float, float]:
    """Validation MSE/MAE of the student, summed across processes."""
    model.eval()
    sq = torch.zeros((), dtype=torch.float64, device=acc.device)
    ab = torch.zeros((), dtype=torch.float64, device=acc.device)
    count = torch.zeros((), dtype=torch.float64, device=acc.device)
    for x, y in loader:
        with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(x, distill=False).y_time
        pred, y = acc.gather_for_metrics((pred.float(), y))
        err = pred.double() - y.double()
        sq += (err**2).sum()
        ab += err.abs().sum()
        count += err.numel()
    model.train()
    return float(sq / count), float(ab / count)
