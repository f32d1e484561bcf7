"""Run by test_train under `accelerate launch`: two CPU ranks train one tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from llata_core.backbone import prepare_backbone
from llata_core.config import config_from_dict
from llata_core.data import load_series, make_splits
from llata_core.train import fit, make_accelerator
from tests.conftest import tiny_overrides


def main(csv: str, out: str) -> None:
    cfg = config_from_dict(tiny_overrides("tiny-llama", data__dataset=csv))
    acc = make_accelerator(cfg)
    splits = make_splits(load_series(cfg.data), cfg.data)
    # Rank 0 builds the cache first so both ranks do not race on it.
    with acc.main_process_first():
        backbone = prepare_backbone(cfg.model)
    result = fit(cfg, splits, backbone, run_dir=Path(out) / "run", accelerator=acc, progress=False)
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters() if p.requires_grad])
    gathered = [torch.zeros_like(flat) for _ in range(acc.num_processes)]
    dist.all_gather(gathered, flat)
    if acc.is_main_process:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "report.json").write_text(
            json.dumps(
                {
                    "num_processes": acc.num_processes,
                    "epochs": len(result.history),
                    "val_mse": result.best_val_score,
                    "params_equal_across_ranks": all(torch.equal(gathered[0], g) for g in gathered),
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
