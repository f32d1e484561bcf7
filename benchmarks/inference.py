"""Inference cost per window of every accuracy-benchmark variant, on ETTh1-96 windows.

Each variant's inference model (what an artifact holds and the server runs: the student
alone for LLaTA, LoRA merged) is built from `params.yaml` plus the variant's overrides, as
`benchmarks/accuracy/run.py` builds it. Speed depends on the architecture, not on the
weights, so no trained model is needed; `llata`, `llata-random` and `llata-no-distill`
share one architecture and are timed once. Forward passes over real ETTh1 test windows are
timed at batch 1 (one request) and batch 256 (bulk scoring), in fp32 and, for the LLaTA
models, with the weights in bf16 (the serving default on CPUs with AVX512-BF16/AMX;
baselines are always served in fp32), all variants interleaved round by
round so that machine drift hits them alike.

    python -m benchmarks.inference --out benchmarks/results/inference_cpu.json  # from the repo root
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.accuracy.run import VARIANTS
from llata_core.atomic import write_json
from llata_core.backbone import prepare_backbone
from llata_core.config import load_params
from llata_core.data import load_series, make_splits
from llata_core.jobs import provenance
from llata_core.model import ForecastModel
from llata_core.train import build_training_model

# One entry per distinct inference architecture; the variants it stands for.
ARCHITECTURES = {
    "llata": ("llata", "llata-random", "llata-no-distill"),
    "llata-no-llm": ("llata-no-llm",),
    "patchtst": ("patchtst",),
    "dlinear": ("dlinear",),
}


def build(variant: str, params: Path) -> torch.nn.Module:
    cfg = load_params(params, ["data.dataset=ETTh1", "data.horizon=96", *VARIANTS[variant]])
    backbone = prepare_backbone(cfg.model) if cfg.model.kind == "llata" else None
    return build_training_model(cfg, backbone).eval().to_inference().eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--rounds", type=int, default=30, help="timed calls per case")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/inference_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    cfg = load_params(args.params, ["data.dataset=ETTh1", "data.horizon=96"])
    test = make_splits(load_series(cfg.data), cfg.data).test
    windows = torch.stack([test[i][0] for i in range(256)])  # [256, 96, 7], scaled

    cases: dict[str, Callable[[], object]] = {}
    params: dict[str, int] = {}
    for name, (variant, *_) in ARCHITECTURES.items():
        fp32 = build(variant, args.params)
        params[name] = sum(p.numel() for p in fp32.parameters())
        models = {"fp32": fp32}
        if isinstance(fp32, ForecastModel):  # baselines are served in fp32 (`Forecaster.load`)
            models["bf16"] = build(variant, args.params).to(torch.bfloat16)
        for precision, model in models.items():
            for batch in (1, 256):
                x = windows[:batch]
                cases[f"{name}|{precision}|{batch}"] = lambda m=model, x=x: m(x)

    times: dict[str, list[float]] = {key: [] for key in cases}
    with torch.inference_mode():
        for fn in cases.values():  # warm-up
            fn()
            fn()
        keys = list(cases)
        for r in range(args.rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                t0 = time.perf_counter()
                cases[key]()
                times[key].append(time.perf_counter() - t0)

    rows = []
    for key, values in times.items():
        name, precision, batch = key.split("|")
        median = statistics.median(values)
        rows.append(
            {
                "architecture": name,
                "variants": list(ARCHITECTURES[name]),
                "precision": precision,
                "batch": int(batch),
                "median_ms_per_call": round(median * 1e3, 3),
                "ms_per_window": round(median * 1e3 / int(batch), 4),
                "parameters": params[name],
            }
        )
    write_json(
        args.out,
        {
            "what": "inference-model forward pass on ETTh1 test windows (96 x 7 in, 96 x 7 out)",
            "rows": rows,
            "rounds": args.rounds,
            "torch_threads": args.threads,
            "wall_s": round(time.monotonic() - started, 1),
            **provenance("benchmarks.inference"),
        },
    )
    for row in rows:
        print(
            f"{row['architecture']:13s} {row['precision']} batch {row['batch']:3d}: "
            f"{row['ms_per_window']:.3f} ms/window"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
