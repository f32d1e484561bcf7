"""Resumable accuracy run matrix: one JSON result per finished cell.

A cell is (dataset, horizon, variant, seed[, few-shot %][, zero-shot target][, lookback]). Each cell
trains through `llata_core.jobs.train_job` (the same path as production), writes its
checkpoint under `benchmarks/accuracy/runs/<cell>/` (so a killed cell resumes) and, when
done, `benchmarks/accuracy/results/<cell>.json` with metrics, epochs, wall time, machine,
git revision and the exact command. A rerun skips finished cells.

    python benchmarks/accuracy/run.py --cells etth1-96          # the priority-1 cells
    python benchmarks/accuracy/run.py --only ETTh1:96:llata:2024
    python benchmarks/accuracy/run.py --only ETTh1:96:llata-no-llm:2024:L336   # lookback 336

Every lookback scores the same test targets: the validation and test splits start
`input_size` rows before their border (`llata_core.data.split_borders`), so a longer lookback
reaches further back for its history while the windows' futures stay the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from llata_core.atomic import replace_directory, write_json
from llata_core.checkpoint import config_digest, resumable_digests
from llata_core.config import LlataConfig, load_params
from llata_core.forecaster import is_artifact
from llata_core.jobs import evaluate_job, provenance, train_job

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Checkpoints and models of the cells. Point LLATA_BENCH_RUNS outside the work tree (e.g.
# under ~/.cache/llata) to keep a half-trained cell across fresh checkouts of the repo.
RUNS = Path(os.environ.get("LLATA_BENCH_RUNS", HERE / "runs"))
# A cell longer than a session is parked in the repository: `--park` copies its run (the
# checkpoint and history, about 1.3 MB for PatchTST) here, a commit carries it to the next
# machine, whose LLATA_BENCH_RUNS starts empty, and the cell's next run resumes from it. The
# parked copy is deleted when the cell finishes (commit that too).
PARKED = HERE / "parked"
log = logging.getLogger("bench")

# Each variant is a set of overrides on the paper recipe (params.yaml).
VARIANTS: dict[str, list[str]] = {
    "llata": [],
    "llata-random": ["model.init=random"],
    "llata-no-llm": ["model.n_layers=0"],
    "llata-no-distill": ["loss.w_out=0", "loss.w_feat=0"],
    # Depth probe: does keeping more pretrained blocks (12 of SmolLM2's 30, where the paper
    # keeps 6 of GPT-2's 12) widen the gap between pretrained and random weights?
    "llata-12l": ["model.n_layers=12"],
    "llata-random-12l": ["model.init=random", "model.n_layers=12"],
    # Baselines with their published recipes (DLinear: MSE loss, lr 5e-3 halved after every
    # epoch for at most 10 epochs, batch 32 -- with the paper recipe's cosine schedule it
    # scored 0.02 worse on ETTh1, see the notes; PatchTST ETTh: MSE loss, lr 1e-4, batch
    # 128), in the same harness, splits, early stopping and evaluation.
    "dlinear": [
        "model.kind=dlinear",
        "loss.task=mse",
        "train.lr=0.005",
        "train.batch_size=32",
        "train.patience=3",
        "train.epochs=10",
        "train.lr_schedule=halve",
    ],
    "patchtst": ["model.kind=patchtst", "loss.task=mse", "train.lr=0.0001", "train.batch_size=128"],
    # A recipe for long lookbacks: the LLM-free model's input projection (lookback x d) overfit
    # at 336 and 512 (best epoch 4, validation rising after). Weight decay on every trained
    # weight, the regulariser that reaches that projection (dropout sits after it).
    "llata-no-llm-wd": ["model.n_layers=0", "train.weight_decay=0.01"],
}


DEFAULT_LOOKBACK = 96  # the paper's input_size; cells at other lookbacks carry `_L<n>`
LOOKBACKS = (96, 192, 336, 512)


@dataclass(frozen=True)
class Cell:
    dataset: str
    horizon: int
    variant: str
    seed: int
    few_shot: float = 100.0
    zero_shot_to: str | None = None
    lookback: int = DEFAULT_LOOKBACK

    @property
    def key(self) -> str:
        parts = [self.dataset, str(self.horizon), self.variant, f"s{self.seed}"]
        if self.few_shot < 100:
            parts.append(f"fs{self.few_shot:g}")
        if self.zero_shot_to:
            parts.append(f"to-{self.zero_shot_to}")
        if self.lookback != DEFAULT_LOOKBACK:  # cells made before the axis keep their names
            parts.append(f"L{self.lookback}")
        return "_".join(parts)

    @property
    def train_key(self) -> str:
        """Zero-shot cells reuse the source model of the matching full-data cell."""
        return Cell(
            self.dataset, self.horizon, self.variant, self.seed, self.few_shot, None, self.lookback
        ).key

    def record(self) -> dict:
        """The fields that identify this cell in its result JSON."""
        return {
            "cell": self.key,
            "dataset": self.dataset,
            "horizon": self.horizon,
            "variant": self.variant,
            "seed": self.seed,
            "few_shot_percent": self.few_shot,
            "zero_shot_to": self.zero_shot_to,
            "lookback": self.lookback,
        }

    def overrides(self, extra: list[str]) -> list[str]:
        lookback = [f"data.input_size={self.lookback}"] if self.lookback != DEFAULT_LOOKBACK else []
        return [
            f"data.dataset={self.dataset}",
            f"data.horizon={self.horizon}",
            f"data.few_shot_percent={self.few_shot}",
            f"train.seed={self.seed}",
            *lookback,
            *VARIANTS[self.variant],
            *extra,
        ]


SEEDS = (2024, 2025, 2026)
GROUPS: dict[str, list[Cell]] = {
    "etth1-96": [
        Cell("ETTh1", 96, v, s)
        for s in SEEDS
        for v in (
            "llata",
            "llata-random",
            "llata-no-llm",
            "llata-no-distill",
            "dlinear",
            "patchtst",
        )
    ],
    "few-zero": [
        Cell("ETTh1", 96, v, s, few_shot=10.0)
        for s in SEEDS
        for v in ("llata", "llata-random", "dlinear")
    ]
    + [
        Cell("ETTh1", 96, v, s, zero_shot_to="ETTm1")
        for s in SEEDS
        for v in ("llata", "llata-random", "dlinear")
    ],
    # With the LLM-free ablation too: does "no LLM, same accuracy" hold at long horizons?
    "horizons": [
        Cell(d, h, v, 2024)
        for d in ("ETTh1", "ETTh2")
        for h in (96, 192, 336, 720)
        for v in ("llata", "llata-no-llm", "dlinear")
    ],
    "ettm1": [Cell("ETTm1", 96, "llata", 2024)],
    # Lookback as a selection axis: the LLM-free model at each lookback (its 96 cells exist),
    # then the published long-lookback baselines at 336. LLaTA runs at the lookback that the
    # LLM-free model's validation MSE picks (`--only ...:L<n>`), never one chosen on test.
    "lookback": [
        Cell(d, 96, "llata-no-llm", 2024, lookback=n)
        for d in ("ETTh1", "ETTh2", "ETTm1")
        for n in LOOKBACKS[1:]
    ]
    + [
        Cell("ETTh1", h, "llata-no-llm", 2024, lookback=n)
        for h in (336, 720)
        for n in LOOKBACKS[1:]
    ]
    + [
        Cell(d, 96, v, 2024, lookback=336)
        for d in ("ETTh1", "ETTh2", "ETTm1")
        for v in ("dlinear", "patchtst")
    ],
    # Few-shot, where the pretrained weights helped at 6 blocks, at 12 blocks.
    "depth": [
        Cell("ETTh1", 96, v, s, few_shot=10.0)
        for s in SEEDS
        for v in ("llata-12l", "llata-random-12l")
    ],
}


def parse_cell(text: str) -> Cell:
    """`DATASET:H:VARIANT:SEED[:FEW[:TO]][:L<n>]`, e.g. `ETTh1:96:llata:2024::ETTm1`
    (zero-shot) or `ETTh1:96:llata-no-llm:2024:L336` (lookback 336)."""
    parts = text.split(":")
    lookback = DEFAULT_LOOKBACK
    if len(parts) > 4 and re.fullmatch(r"L\d+", parts[-1]):
        lookback = int(parts.pop()[1:])
        if lookback < 2:
            raise ValueError(f"cell {text!r}: the lookback must be at least 2")
    if not 4 <= len(parts) <= 6 or not all(parts[:4]):
        raise ValueError(f"cell {text!r} is not DATASET:H:VARIANT:SEED[:FEW[:TO]][:L<n>]")
    ds, h, variant, seed, *rest = parts
    if variant not in VARIANTS:
        raise ValueError(f"cell {text!r}: unknown variant {variant!r}; one of {sorted(VARIANTS)}")
    try:
        horizon, seed_value = int(h), int(seed)
        few = float(rest[0]) if rest and rest[0] else 100.0
    except ValueError:
        raise ValueError(
            f"cell {text!r}: horizon and seed must be integers, the few-shot share a number"
        ) from None
    if not 0 < few <= 100:
        raise ValueError(f"cell {text!r}: the few-shot share must be in (0, 100], got {few:g}")
    zs = rest[1] if len(rest) > 1 and rest[1] else None
    return Cell(ds, horizon, variant, seed_value, few, zs, lookback)


class StaleCellError(RuntimeError):
    """A finished result or saved model of a cell was produced by another recipe."""


def _check_recipe(cell: Cell, cfg: LlataConfig, extra: list[str], done: dict | None) -> None:
    """Refuse to skip or reuse a cell whose result or model another recipe produced.

    A cell's key names its dataset, horizon, variant and seed, not the overrides behind the
    variant; when those change (a variant's recipe, `--set`, params.yaml), the old result
    and model must go before the cell runs again. `done` is the cell's finished result.
    """
    if done is not None:
        recorded = done.get("overrides")
        if recorded != cell.overrides(extra):
            raise StaleCellError(
                f"{RESULTS / cell.key}.json was produced with overrides {recorded}, this run "
                f"asks for {cell.overrides(extra)}; delete it (and {RUNS / cell.train_key}) to "
                "rerun"
            )
    state = RUNS / cell.train_key / "run" / "checkpoint" / "state.json"
    if state.is_file():
        digest = json.loads(state.read_text())["config_digest"]
        if digest not in resumable_digests(cfg):
            raise StaleCellError(
                f"the checkpoint in {state.parent} was written for another configuration "
                f"({digest} != {config_digest(cfg)}); delete {RUNS / cell.train_key} to retrain"
            )


def _epochs_done(run_dir: Path) -> int:
    """Finished epochs of the run in `run_dir` by its checkpoint; -1 when it has none."""
    state = run_dir / "checkpoint" / "state.json"
    return len(json.loads(state.read_text())["history"]) if state.is_file() else -1


def park_cell(cell: Cell) -> Path:
    """Copy the cell's half-trained run from RUNS into the repository (`PARKED`).

    The cell may be training: its checkpoint is replaced after every epoch, so a copy that
    an epoch's end overtook (the epoch count moved while copying) is made again.

    Raises:
        FileNotFoundError: the cell has no checkpoint under RUNS.
        RuntimeError: the checkpoint changed during three copies in a row.
    """
    run_dir = RUNS / cell.train_key / "run"
    if _epochs_done(run_dir) < 0:
        raise FileNotFoundError(f"{cell.key}: no checkpoint to park in {run_dir / 'checkpoint'}")
    parked = PARKED / cell.train_key / "run"
    parked.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        done = _epochs_done(run_dir)
        try:
            replace_directory(run_dir, parked)
        except OSError:  # a file of the old checkpoint went during the copy
            continue
        saving = any(p.name.startswith(".") for p in parked.iterdir())  # a save's temporary
        if not saving and _epochs_done(parked) == done == _epochs_done(run_dir):
            log.info("%s: parked after epoch %d in %s (commit it)", cell.key, done, parked)
            return parked
    raise RuntimeError(f"{cell.key}: its checkpoint changed during every copy; park it again")


def _unpark(cell: Cell) -> None:
    """Resume from the parked run when it is further on than this machine's own."""
    parked = PARKED / cell.train_key / "run"
    run_dir = RUNS / cell.train_key / "run"
    if _epochs_done(parked) > _epochs_done(run_dir):
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_directory(parked, run_dir)
        log.info("%s: resuming the run parked after epoch %d", cell.key, _epochs_done(parked))


def train_cell(cell: Cell, cfg: LlataConfig) -> Path:
    """The cell's trained model directory: trained (or resumed) here when it is not there
    yet, with its training record in `train_info.json` beside it."""
    model_dir = RUNS / cell.train_key / "model"
    run_dir = RUNS / cell.train_key / "run"
    if not is_artifact(model_dir):
        outcome = train_job(cfg, out_dir=model_dir, run_dir=run_dir, resume=True)
        # Every epoch's own time, including epochs run by an earlier, interrupted process
        # (`outcome.fit.seconds` is this process's wall time only).
        epoch_seconds = [h.seconds for h in outcome.fit.history]
        train_info = {
            "epochs": len(outcome.fit.history),
            "best_epoch": outcome.fit.best_epoch,
            "train_seconds": sum(epoch_seconds),
            "precision": outcome.fit.precision,
            "seconds_per_epoch": sum(epoch_seconds) / max(len(epoch_seconds), 1),
            "stopped_early": outcome.fit.stopped_early,
            # Selection reads this, never the test scores (the cells' tasks validate by MSE).
            "best_val_mse": outcome.fit.best_val_score,
            "val_mse_by_epoch": [h.validation()["mse"] for h in outcome.fit.history],
        }
        write_json(RUNS / cell.train_key / "train_info.json", train_info, trailing_newline=False)
    return model_dir


def run_cell(cell: Cell, params: Path, extra: list[str]) -> dict:
    out = RESULTS / f"{cell.key}.json"
    cfg = load_params(params, cell.overrides(extra))
    done = json.loads(out.read_text()) if out.is_file() else None
    if done is None:
        _unpark(cell)
    _check_recipe(cell, cfg, extra, done)
    if done is not None:
        log.info("skip %s (done)", cell.key)
        return done
    t0 = time.perf_counter()
    model_dir = train_cell(cell, cfg)
    train_info = json.loads((RUNS / cell.train_key / "train_info.json").read_text())
    data = None
    if cell.zero_shot_to:
        data = load_params(None, [f"data.dataset={cell.zero_shot_to}"]).data
    metrics, _, _ = evaluate_job(model_dir, data)
    payload = {
        **cell.record(),
        "mse": metrics.mse,
        "mae": metrics.mae,
        "n_windows": metrics.n_windows,
        # Conformal intervals (calibrated on validation at training time): coverage, width
        # and interval score per level on these test windows; absent for older models.
        **{k: v for item in metrics.intervals for k, v in item.to_dict().items()},
        **train_info,
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
        "overrides": cell.overrides(extra),
    }
    write_json(out, payload, trailing_newline=False)
    log.info("%s: MSE %.4f MAE %.4f", cell.key, metrics.mse, metrics.mae)
    if (PARKED / cell.train_key).is_dir():
        shutil.rmtree(PARKED / cell.train_key)
        log.info("%s: finished, its parked run is deleted (commit that)", cell.key)
    return payload


def snapshot_cell(cell: Cell, params: Path, extra: list[str]) -> dict:
    """Score an unfinished cell's best checkpoint so far (a run stopped by a time limit).

    Writes `results/partial/<cell>.json` with `status: partial`; the cell itself stays
    unfinished, so a later run resumes its training and replaces this with the final result.
    """
    from safetensors.torch import load_file

    from llata_core.backbone import prepare_backbone
    from llata_core.checkpoint import Checkpoint, load_trainable
    from llata_core.data import load_series, make_splits
    from llata_core.evaluate import evaluate
    from llata_core.forecaster import save_artifact
    from llata_core.train import build_training_model

    checkpoint = Checkpoint(RUNS / cell.train_key / "run")
    ckpt, state = checkpoint.dir, checkpoint.state()
    cfg = load_params(params, cell.overrides(extra))
    backbone = prepare_backbone(cfg.model) if cfg.model.kind == "llata" else None
    model = build_training_model(cfg, backbone)
    load_trainable(model, load_file(str(ckpt / "best.safetensors")))
    data = cfg.data
    if cell.zero_shot_to:
        data = data.model_copy(update={"dataset": cell.zero_shot_to})
    splits = make_splits(load_series(data), data)
    inference = model.eval().to_inference()
    metrics = evaluate(inference, splits.test)
    if not cell.zero_shot_to:  # kept for the plots; a finished cell's `model/` replaces it
        save_artifact(
            RUNS / cell.train_key / "partial_model",
            inference,
            splits.scaler,
            {"mse": metrics.mse, "mae": metrics.mae},
            overwrite=True,
        )
    history = state.history
    payload = {
        **cell.record(),
        "status": "partial",
        "mse": metrics.mse,
        "mae": metrics.mae,
        "n_windows": metrics.n_windows,
        "epochs": len(history),
        "best_epoch": state.best_epoch,
        "best_val_mse": state.best_val_score,
        "val_mse_by_epoch": [h.validation()["mse"] for h in history],
        "seconds_per_epoch": sum(h.seconds for h in history) / max(len(history), 1),
        "train_seconds": sum(h.seconds for h in history),
        "overrides": cell.overrides(extra),
        **provenance(),
    }
    write_json(RESULTS / "partial" / f"{cell.key}.json", payload, trailing_newline=False)
    log.info(
        "%s (partial, epoch %d): MSE %.4f MAE %.4f",
        cell.key,
        len(history),
        metrics.mse,
        metrics.mae,
    )
    return payload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="*", default=[], choices=sorted(GROUPS))
    ap.add_argument(
        "--only", nargs="*", default=[], help="DATASET:H:VARIANT:SEED[:FEW[:TO]][:L<n>]"
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", action="append", default=[], help="extra overrides for every cell")
    ap.add_argument(
        "--snapshot",
        action="store_true",
        help="score the best checkpoint of unfinished cells instead of training",
    )
    ap.add_argument(
        "--park",
        action="store_true",
        help="copy unfinished cells' checkpoints into benchmarks/accuracy/parked/ to commit",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        only = [parse_cell(t) for t in args.only]
    except ValueError as exc:
        ap.error(str(exc))
    cells = [c for g in args.cells for c in GROUPS[g]] + only
    if args.park:
        missing = []
        for cell in cells:
            try:
                park_cell(cell)
            except FileNotFoundError as exc:
                log.error("%s", exc)
                missing.append(cell.key)
        return 1 if missing else 0
    stale = []
    for cell in cells:
        if args.snapshot:
            snapshot_cell(cell, args.params, args.set)
            continue
        try:
            run_cell(cell, args.params, args.set)
        except StaleCellError as exc:  # the other cells still run
            log.error("%s: %s", cell.key, exc)
            stale.append(cell.key)
    if stale:
        log.error("not run, made by another recipe: %s", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
