"""A training run's record: the history it logs and the checkpoint it resumes from.

`run_dir/history.jsonl` holds one `EpochLog` per finished epoch; `run_dir/checkpoint/`
(`Checkpoint`) holds the trainable weights (current and best), the optimizer, scheduler
and RNG state and the progress (`CheckpointState`), replaced atomically after every epoch,
so a killed run continues exactly where it stopped. A checkpoint resumes only under the
configuration that wrote it (`config_digest`); the readers here also take what earlier
versions wrote.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llata_core.atomic import swap_directory
from llata_core.config import LlataConfig


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


# Settings added to the config after checkpoints had been written with it, in the order they
# were added. At its default a setting reproduces the behaviour from before it existed, so it
# enters the digest only when it differs from the default, and checkpoints written by each
# earlier version of this rule (which left the newer settings in) still resume.
_LATER_SETTINGS: tuple[dict[str, tuple[str, ...]], ...] = (
    {"data": ("series_column", "value_column", "seasonality")},  # short-term data
    {"model": ("kind", "baseline")},  # baselines in the same harness
    {"train": ("lr_schedule",)},  # the baselines' own learning-rate schedules
)
# Settings that came after every rule above: no digest ever held them, so each version of
# the rule leaves them out at their default (a dotted key is inside a subsection).
_NEWER_SETTINGS: dict[str, tuple[str, ...]] = {
    "model": ("seasonal_base", "baseline.dlinear_norm"),  # a seasonal naive base
}
# Settings that do not change what training does: never in the digest, at any value, so a
# checkpoint resumes whatever calibration the finished model will get.
_NOT_TRAINING: dict[str, tuple[str, ...]] = {"data": ("intervals",)}


def _digest(cfg: LlataConfig, later: tuple[dict[str, tuple[str, ...]], ...]) -> str:
    raw, defaults = cfg.to_dict(), LlataConfig().to_dict()
    for group in (*later, _NEWER_SETTINGS):
        for section, keys in group.items():
            for dotted in keys:
                *parents, key = dotted.split(".")
                node, default = raw[section], defaults[section]
                for parent in parents:
                    node, default = node.get(parent, {}), default[parent]
                if key in node and node[key] == default[key]:
                    del node[key]
    for section, keys in _NOT_TRAINING.items():
        for key in keys:
            raw[section].pop(key, None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def config_digest(cfg: LlataConfig) -> str:
    """Identifies a training setup; a checkpoint from another setup is never resumed."""
    return _digest(cfg, _LATER_SETTINGS)


def resumable_digests(cfg: LlataConfig) -> frozenset[str]:
    """The digests under which this setup's checkpoints were written by any version."""
    return frozenset(_digest(cfg, _LATER_SETTINGS[:n]) for n in range(len(_LATER_SETTINGS) + 1))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's trainable parameters: what a checkpoint stores (the
    frozen backbone weights are rebuilt from the backbone itself)."""
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
            save_file(trainable_state(model), str(tmp / "current.safetensors"))
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


def append_history(run_dir: Path, entry: EpochLog) -> None:
    """Add one epoch to the run's `history.jsonl` (`read_history` reads it back)."""
    with open(run_dir / "history.jsonl", "a") as fh:
        fh.write(json.dumps(asdict(entry)) + "\n")
