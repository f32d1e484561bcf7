"""Choose a short-term recipe on validation only: each series' held-out last horizon.

Each recipe is a list of overrides on `params.yaml`, trained with `fit` (the same training
loop as `llata train`, which early-stops on the same held-out horizon) and scored on that
horizon alone (SMAPE, MASE and OWA against Naive2, in-sample = each training part). The
test file is never read into a score here: the chosen recipe is scored on test once, by
`run.py`. Seasonal naive's validation scores come first, as the bar to beat. One JSON per
recipe goes to `results/validation/<subset>_<recipe>_s<seed>.json`; a rerun skips it.

    python benchmarks/shortterm/validation_sweep.py --subset Hourly --recipes dlinear sbase
    python benchmarks/shortterm/validation_sweep.py --subset Hourly --table
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.shortterm.run import TRAINED
from llata_core.atomic import write_json
from llata_core.catalog import m4_subset
from llata_core.config import load_params
from llata_core.jobs import provenance
from llata_core.shortterm import (
    benchmark_forecasts,
    load_short_term_splits,
    score_forecasts,
    score_model,
)
from llata_core.train import fit

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "validation"
log = logging.getLogger("bench.shortterm.sweep")

# Time-Series-Library's DLinear M4 recipe: `run.py`'s `dlinear` cell.
DLINEAR = TRAINED["dlinear"]
# A recipe's name spells its overrides on DLINEAR, one token each, joined by "_":
# `dlinear` (nothing more), `sbase` (model.seasonal_base), `norm` (DLinear's per-window
# normalisation), `L<n>` (input size), `smape` / `mase` / `mse` (task loss), `lr<x>`,
# `b<n>` (batch size), `wd<x>` (weight decay), `e<n>` (n epochs, cosine over n, patience
# n / 5, at least 3). E.g. `sbase_norm_mase_lr1e-4_e50`.
TOKENS: dict[str, list[str]] = {
    "dlinear": [],
    "sbase": ["model.seasonal_base=true"],
    "norm": ["model.baseline.dlinear_norm=true"],
    "smape": ["loss.task=smape"],
    "mase": ["loss.task=mase"],
    "mse": ["loss.task=mse"],
}


def recipe_overrides(name: str) -> list[str]:
    """The overrides a recipe name spells (see `TOKENS`)."""
    out = list(DLINEAR)
    for token in name.split("_"):
        if token in TOKENS:
            out += TOKENS[token]
        elif token.startswith("lr"):
            out.append(f"train.lr={float(token[2:])}")
        elif token.startswith("wd"):
            out.append(f"train.weight_decay={float(token[2:])}")
        elif token[0] == "L" and token[1:].isdigit():
            out.append(f"data.input_size={int(token[1:])}")
        elif token[0] == "b" and token[1:].isdigit():
            out.append(f"train.batch_size={int(token[1:])}")
        elif token[0] == "e" and token[1:].isdigit():
            n = int(token[1:])
            out += [f"train.epochs={n}", f"train.t_max={n}", f"train.patience={max(3, n // 5)}"]
        else:
            raise SystemExit(f"recipe {name!r}: unknown token {token!r}")
    return out


def seasonal_naive_row(subset: str) -> dict:
    cfg = load_params(None, [f"data.dataset=M4-{subset}"])
    splits = load_short_term_splits(cfg.data)
    scores = score_forecasts(benchmark_forecasts("seasonal_naive", splits, "val"), splits, "val")
    return {"recipe": "seasonal_naive", "subset": subset, "seed": None, **scores}


def run_recipe(subset: str, name: str, seed: int, params: Path) -> dict:
    out = OUT / f"{subset}_{name}_s{seed}.json"
    if out.is_file():
        log.info("skip %s (done)", out.name)
        return json.loads(out.read_text())
    h = m4_subset(subset).horizon
    overrides = [
        f"data.dataset=M4-{subset}",
        f"data.horizon={h}",
        f"data.input_size={2 * h}",  # a recipe may set it again, later overrides win
        f"train.seed={seed}",
        *recipe_overrides(name),
    ]
    cfg = load_params(params, overrides)
    splits = load_short_term_splits(cfg.data, seed=seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(cfg, splits, None, run_dir=Path(run_dir), progress=False)
    inference = result.model.to_inference()
    scores = score_model(inference, splits, "val")
    payload = {
        "recipe": name,
        "subset": subset,
        "seed": seed,
        **scores,
        "best_val_smape_fit": result.best_val_score,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "input_size": cfg.data.input_size,
        "overrides": overrides,
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
    }
    write_json(out, payload, trailing_newline=False)
    log.info(
        "%s %s: val SMAPE %.3f MASE %.3f OWA %.3f",
        subset,
        name,
        *(scores[k] for k in ("smape", "mase", "owa")),
    )
    return payload


def table(subset: str) -> str:
    rows = [seasonal_naive_row(subset)]
    runs = [json.loads(p.read_text()) for p in OUT.glob(f"{subset}_*.json")]
    rows += sorted(runs, key=lambda r: r["finished_at"])  # in the order they were tried
    lines = [
        "| recipe | input | seed | val SMAPE | val MASE | val OWA | epochs (best) | wall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        epochs = f"{r['epochs']} ({r['best_epoch']})" if "epochs" in r else "-"
        wall = f"{r['wall_seconds']:.0f} s" if "wall_seconds" in r else "-"
        lines.append(
            f"| {r['recipe']} | {r.get('input_size', '-')} | {r['seed'] or '-'} "
            f"| {r['smape']:.3f} | {r['mase']:.3f} | {r['owa']:.3f} | {epochs} | {wall} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", default="Hourly")
    ap.add_argument("--recipes", nargs="*", default=[], help="recipe names (see TOKENS)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in args.recipes:
        run_recipe(args.subset, name, args.seed, args.params)
    if args.table:
        print(table(args.subset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
