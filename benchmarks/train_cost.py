"""Training cost per window of every accuracy-benchmark variant, on ETTh1-96 windows.

Each variant's training model, objective, optimizer, batch size and precision are built from
`params.yaml` plus the variant's overrides, as `benchmarks/accuracy/run.py` trains it, and
one optimizer step is the one `llata_core.train.fit` takes (`train_step`). The cost depends
on the architecture and the objective, not on the weights, so `llata-random` is timed as
`llata` and `llata-random-12l` as `llata-12l`. Steps on one real ETTh1 training batch are
timed with all variants interleaved round by round, so that machine drift hits them alike.
Seconds per epoch are extrapolated from the steps in one ETTh1-96 training epoch (the
validation pass is not included).

    python -m benchmarks.train_cost --out benchmarks/results/train_cost_cpu.json  # repo root
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.accuracy.run import VARIANTS
from llata_core.atomic import write_json
from llata_core.backbone import prepare_backbone
from llata_core.config import load_params, resolve_precision
from llata_core.data import load_series, make_splits
from llata_core.jobs import provenance
from llata_core.train import build_training_model, make_optimizer, train_step, training_objective

# One entry per distinct training cost; the variants it stands for.
COSTS = {
    "llata": ("llata", "llata-random"),
    "llata-no-distill": ("llata-no-distill",),
    "llata-no-llm": ("llata-no-llm",),
    "llata-12l": ("llata-12l", "llata-random-12l"),
    "patchtst": ("patchtst",),
    "dlinear": ("dlinear",),
}


def build_step(variant: str, params: Path, seed: int) -> tuple[Callable[[], object], dict]:
    """A function taking one training step of `variant`, and what describes the case."""
    cfg = load_params(params, ["data.dataset=ETTh1", "data.horizon=96", *VARIANTS[variant]])
    torch.manual_seed(seed)
    backbone = prepare_backbone(cfg.model) if cfg.model.kind == "llata" else None
    model = build_training_model(cfg, backbone).train()
    optimizer = make_optimizer(cfg, model)
    criterion, distill = training_objective(cfg, model)
    bf16 = resolve_precision(cfg.train.precision, torch.device("cpu")) == "bf16"
    train = make_splits(load_series(cfg.data), cfg.data).train
    loader = DataLoader(
        train,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    batch = next(iter(loader))

    def step() -> object:
        return train_step(
            model, batch, criterion, optimizer, torch.Tensor.backward, bf16=bf16, distill=distill
        )

    info = {
        "batch": cfg.train.batch_size,
        "precision": "bf16" if bf16 else "fp32",
        "distill": distill,
        "steps_per_epoch": math.ceil(len(train) / cfg.train.batch_size),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return step, info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/train_cost_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    steps: dict[str, Callable[[], object]] = {}
    infos: dict[str, dict] = {}
    for name, (variant, *_) in COSTS.items():
        steps[name], infos[name] = build_step(variant, args.params, args.seed)
    for step in steps.values():  # warm-up: allocator, kernels, Adam state
        step()
        step()

    times: dict[str, list[float]] = {name: [] for name in steps}
    load = []
    names = list(steps)
    for r in range(args.rounds):
        load.append(os.getloadavg()[0])
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)

    rows = []
    for name, values in times.items():
        info = infos[name]
        median = statistics.median(values)
        rows.append(
            {
                "cost": name,
                "variants": list(COSTS[name]),
                **info,
                "median_step_seconds": round(median, 4),
                "all_step_seconds": [round(v, 4) for v in values],
                "ms_per_window": round(median * 1e3 / info["batch"], 4),
                "seconds_per_epoch": round(median * info["steps_per_epoch"], 1),
            }
        )
    write_json(
        args.out,
        {
            "what": "one training step (forward, objective, backward, Adam) of each variant's "
            "own recipe on an ETTh1-96 training batch",
            "rows": rows,
            "rounds": args.rounds,
            "torch_threads": args.threads,
            "seed": args.seed,
            "load_average_1min_during": load,
            "wall_s": round(time.monotonic() - started, 1),
            **provenance("benchmarks.train_cost"),
        },
    )
    for row in rows:
        print(
            f"{row['cost']:16s} {row['precision']} batch {row['batch']:3d}: "
            f"{row['median_step_seconds']:.3f} s/step, {row['ms_per_window']:.2f} ms/window, "
            f"{row['seconds_per_epoch']:.0f} s/epoch"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
