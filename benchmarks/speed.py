"""Training speed of the LLaTA model, fp32 vs bf16 autocast, on ETTh1 windows.

Times full optimizer steps (teacher + student forward, distillation loss, backward, Adam) at
the paper's batch size, alternating the two precisions so that both see the same machine
load, and extrapolates seconds per epoch from the number of steps in one ETTh1 epoch. Also
times the cross-modal match with the published per-sample repetition of the principal
embeddings against projecting them once.

    python benchmarks/speed.py --steps 4 --out benchmarks/results/speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from llata_core.backbone import prepare_backbone
from llata_core.config import load_params
from llata_core.data import Window, load_series, make_splits
from llata_core.jobs import provenance
from llata_core.model import LlataModel
from llata_core.train import make_optimizer, train_step, training_objective


def _step_times(model: LlataModel, batch: Window, bf16: bool, steps: int) -> list[float]:
    loss_fn, distill = training_objective(model.cfg, model)
    opt = make_optimizer(model.cfg, model)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        train_step(model, batch, loss_fn, opt, torch.Tensor.backward, bf16=bf16, distill=distill)
        times.append(time.perf_counter() - t0)
    return times


def _match_times(model: LlataModel, batch_size: int, channels: int, reps: int) -> dict:
    """Cross-modal match: project P once (ours) vs repeat P per sample (published code)."""
    d = model.principal.shape[1]
    h = torch.randn(batch_size, channels, d)
    mha = nn.MultiheadAttention(d, model.cfg.model.encoder_heads, batch_first=True)
    out = {}
    with torch.no_grad():
        for name, fn in {
            "project_once": lambda: model.match(h, model.principal),
            "repeat_per_sample": lambda: mha(
                h,
                model.principal.expand(batch_size, -1, -1),
                model.principal.expand(batch_size, -1, -1),
            ),
        }.items():
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            out[name] = (time.perf_counter() - t0) / reps
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--steps", type=int, default=4, help="timed steps per precision and round")
    ap.add_argument("--rounds", type=int, default=2, help="alternations fp32/bf16")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed_cpu.json"))
    args = ap.parse_args(argv)
    cfg = load_params(args.params)
    torch.manual_seed(cfg.train.seed)
    splits = make_splits(load_series(cfg.data), cfg.data)
    idx = torch.randperm(len(splits.train))[: cfg.train.batch_size].tolist()
    xs, ys = zip(*(splits.train[i] for i in idx), strict=True)
    batch = Window(torch.stack(xs), torch.stack(ys))
    model = LlataModel(cfg, prepare_backbone(cfg.model)).train()
    _step_times(model, batch, True, 1)  # warm-up (allocator, kernels)
    _step_times(model, batch, False, 1)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    load = []
    for _ in range(args.rounds):
        for name in ("fp32", "bf16"):
            load.append(os.getloadavg()[0])
            times[name] += _step_times(model, batch, name == "bf16", args.steps)
    steps_per_epoch = math.ceil(len(splits.train) / cfg.train.batch_size)
    result = {
        "what": "one optimizer step (teacher+student forward, loss, backward, Adam), ETTh1, "
        f"batch {cfg.train.batch_size}, input {cfg.data.input_size}, horizon "
        f"{cfg.data.horizon}, {cfg.model.backbone} x{cfg.model.n_layers} layers",
        "median_step_seconds": {k: statistics.median(v) for k, v in times.items()},
        "all_step_seconds": times,
        "steps_per_epoch": steps_per_epoch,
        "train_seconds_per_epoch_extrapolated": {
            k: statistics.median(v) * steps_per_epoch for k, v in times.items()
        },
        "bf16_speedup": statistics.median(times["fp32"]) / statistics.median(times["bf16"]),
        "cross_modal_match_seconds": _match_times(
            model, cfg.train.batch_size, len(splits.series.channels), reps=5
        ),
        "load_average_1min_during": load,
        "cpu_count": os.cpu_count(),
        **provenance(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "median_step_seconds",
                    "bf16_speedup",
                    "train_seconds_per_epoch_extrapolated",
                    "cross_modal_match_seconds",
                )
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
