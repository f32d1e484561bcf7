"""Resumable short-term (M4) run matrix: one JSON result per finished cell.

A cell is (M4 subset, model, seed). Trained models (`llata`, `dlinear`) go through
`llata_core.jobs.train_job`, the same path as `llata train`, with checkpoints under
`benchmarks/shortterm/runs/<cell>/` (or `$LLATA_BENCH_RUNS/shortterm/<cell>/`; a killed
cell resumes); the no-training benchmarks (`naive2`, `seasonal_naive`) forecast each series
from its history. Every cell is scored by
the same function (SMAPE, MASE, OWA against Naive2 on the M4 test file) and written to
`benchmarks/shortterm/results/<cell>.json` with epochs, wall time, machine, git revision and
the exact command. A rerun skips finished cells.

    python benchmarks/shortterm/run.py --cells benchmarks          # seconds
    python benchmarks/shortterm/run.py --cells dlinear             # minutes
    python benchmarks/shortterm/run.py --cells dlinear_snaive      # minutes
    python benchmarks/shortterm/run.py --cells llata               # the slow part
    python benchmarks/shortterm/run.py --table                     # markdown of the results

Needs `LLATA_DATA_MIRROR` pointing at the mirror that holds `m4/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llata_core.atomic import write_json
from llata_core.config import LlataConfig, ShortTermIntervals, load_params
from llata_core.forecaster import Forecaster, is_artifact
from llata_core.jobs import evaluate_short_term, provenance, train_job
from llata_core.shortterm import (
    ShortTermSplits,
    benchmark_calibration_forecasts,
    benchmark_forecasts,
    bounds_scores,
    calibrate_forecasts,
    interval_scores,
    load_short_term_splits,
    model_calibration_forecasts,
    model_forecasts,
    random_walk_intervals,
    score_forecasts,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# Checkpoints and models of the cells. LLATA_BENCH_RUNS moves them out of the work tree (as
# for the accuracy benchmark), into its `shortterm/` folder.
RUNS = (
    Path(os.environ["LLATA_BENCH_RUNS"]) / "shortterm"
    if os.environ.get("LLATA_BENCH_RUNS")
    else HERE / "runs"
)
log = logging.getLogger("bench.shortterm")

SUBSETS = {"Hourly": 48, "Weekly": 13}  # horizon of each measured subset

# Overrides on params.yaml (the long-term paper recipe) for each trained model.
TRAINED: dict[str, list[str]] = {
    # CALF's M4 script (scripts/short_term_forecasting/m4.sh): SMAPE task loss, MASE output
    # consistency, smooth L1 feature loss; batch 512, lr 1e-3, patience 20, cosine T_max 20
    # (run.py default); 200 epochs there, capped at 100 here for CPU time. One window per
    # series per epoch, so an epoch is a single optimizer step on Hourly (414 series) and
    # Weekly (359). bf16 autocast (precision auto on the CPU).
    "llata": [
        "loss.task=smape",
        "loss.consistency=mase",
        "loss.feature=smooth_l1",
        "train.batch_size=512",
        "train.lr=0.001",
        "train.epochs=100",
        "train.patience=20",
        "train.t_max=20",
    ],
    # Time-Series-Library's DLinear M4 script: SMAPE loss, batch 16, lr 1e-3, 10 epochs,
    # patience 3 (TSL halves the lr each epoch; the harness anneals it by cosine over 10).
    # fp32: DLinear has no instance norm, and bf16 would round raw M4 values (~1e4).
    "dlinear": [
        "model.kind=dlinear",
        "loss.task=smape",
        "train.batch_size=16",
        "train.lr=0.001",
        "train.epochs=10",
        "train.patience=3",
        "train.t_max=10",
        "train.precision=fp32",
    ],
    # DLinear as a correction to seasonal naive (`validation_sweep.py`'s
    # `sbase_norm_lr3e-4_e200_b64` at input 7 x horizon, chosen on validation): the last
    # season repeated plus DLinear on the standardised window, its maps starting at zero;
    # SMAPE loss, batch 64, lr 3e-4 annealed by cosine over 200 epochs, patience 40, fp32.
    "dlinear_snaive": [
        "model.kind=dlinear",
        "model.seasonal_base=true",
        "model.baseline.dlinear_norm=true",
        "loss.task=smape",
        "train.batch_size=64",
        "train.lr=0.0003",
        "train.epochs=200",
        "train.patience=40",
        "train.t_max=200",
        "train.precision=fp32",
    ],
}
# Input length in horizons where a model does not take the CALF/N-BEATS 2 x horizon: seven
# horizons are two weeks of M4 Hourly (336 points), where the weekly cycle shows.
INPUT_HORIZONS = {"dlinear_snaive": 7}
BENCHMARKS = ("naive1", "naive2", "seasonal_naive")
# The M4 interval metrics are for the 95% interval; 80% coverage is reported beside them.
LEVELS = (80.0, 95.0)


@dataclass(frozen=True)
class Cell:
    subset: str
    model: str
    seed: int | None = None  # None for the no-training benchmarks

    @property
    def key(self) -> str:
        parts = [f"M4-{self.subset}", self.model]
        if self.seed is not None:
            parts.append(f"s{self.seed}")
        return "_".join(parts)

    def overrides(self, extra: list[str]) -> list[str]:
        h = SUBSETS[self.subset]
        return [
            f"data.dataset=M4-{self.subset}",
            f"data.horizon={h}",
            f"data.input_size={INPUT_HORIZONS.get(self.model, 2) * h}",
            f"train.seed={self.seed}",
            *TRAINED[self.model],
            *extra,
        ]


GROUPS: dict[str, list[Cell]] = {
    "benchmarks": [Cell(s, m) for s in SUBSETS for m in BENCHMARKS],
    "dlinear": [Cell(s, "dlinear", 2024) for s in SUBSETS],
    "dlinear_snaive": [Cell(s, "dlinear_snaive", 2024) for s in SUBSETS],
    "llata": [Cell(s, "llata", 2024) for s in SUBSETS],
}


def interval_method(scheme: ShortTermIntervals) -> str:
    """How a cell's conformal intervals were made, as its result records it: a result
    holding another method's (or none, from before this was recorded: `seasonal-mae`, one
    window per series) is scored again."""
    n = scheme.calibration_horizons
    return f"{scheme.normalizer}, {n} window{'' if n == 1 else 's'} per series"


def cell_config(cell: Cell, params: Path, extra: list[str]) -> LlataConfig:
    """The configuration a cell trains (a trained model) or is scored (a benchmark) with;
    its `data.intervals` is the subset's interval scheme unless `--set` changes it."""
    if cell.model in TRAINED:
        return load_params(params, cell.overrides(extra))
    return load_params(None, [f"data.dataset=M4-{cell.subset}"])


def parse_cell(text: str) -> Cell:
    subset, model, *seed = text.split(":")
    return Cell(subset, model, int(seed[0]) if seed else None)


def _train_and_score(cell: Cell, params: Path, extra: list[str]) -> dict:
    model_dir, run_dir = RUNS / cell.key / "model", RUNS / cell.key / "run"
    overrides = cell.overrides(extra)
    cfg = load_params(params, overrides)
    info_path = RUNS / cell.key / "train_info.json"
    if not is_artifact(model_dir):
        outcome = train_job(cfg, out_dir=model_dir, run_dir=run_dir, resume=True)
        fit = outcome.fit
        write_json(
            info_path,
            {
                "epochs": len(fit.history),
                "best_epoch": fit.best_epoch,
                "stopped_early": fit.stopped_early,
                "best_val_smape": fit.best_val_score,  # the task validates by SMAPE
                "train_seconds": fit.seconds,
                "seconds_per_epoch": fit.seconds / max(len(fit.history), 1),
                "precision": fit.precision,
            },
            trailing_newline=False,
        )
    scores, _ = evaluate_short_term(Forecaster.load(model_dir))
    sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
    return {
        **scores,
        **json.loads(info_path.read_text()),
        "overrides": overrides,
        "llata_command": f"llata train --params {params} {sets} --out {model_dir} "
        f"--run-dir {run_dir} --resume",
    }


def _benchmark_scores(cell: Cell) -> dict:
    cfg = load_params(None, [f"data.dataset=M4-{cell.subset}"])
    splits = load_short_term_splits(cfg.data)
    forecasts = benchmark_forecasts(cell.model, splits)  # type: ignore[arg-type]
    return {**score_forecasts(forecasts, splits), "epochs": 0}


def conformal_interval_scores(
    calibration_forecasts: list[np.ndarray], test_forecasts: np.ndarray, splits: ShortTermSplits
) -> dict[str, float]:
    """Split-conformal intervals (`llata_core.shortterm.calibrate_forecasts`: calibrated on
    each series' last training horizons) around `[N, H]` test forecasts, scored on the M4
    test file: what a trained short-term artifact stores and records."""
    scores = calibrate_forecasts(calibration_forecasts, splits)
    return interval_scores(test_forecasts, scores, splits, LEVELS)


def normal_interval_scores(method: str, splits: ShortTermSplits) -> dict[str, float]:
    """The textbook normal intervals of naive1 / seasonal naive (`random_walk_intervals`),
    the M4 guide's Naive1 benchmark, under the `normal_` prefix."""
    w = splits.windows
    lag = 1 if method == "naive1" else w.seasonality
    lower, upper = {}, {}
    for level in LEVELS:
        bands = [random_walk_intervals(h, w.horizon, level, lag) for h in w.train]
        lower[level] = np.stack([lo for _, lo, _ in bands])
        upper[level] = np.stack([hi for _, _, hi in bands])
    return {f"normal_{k}": v for k, v in bounds_scores(lower, upper, splits).items()}


def cell_interval_scores(cell: Cell, params: Path, extra: list[str], stored: dict) -> dict:
    """The interval metrics of a finished cell (retraining a trained cell whose model is
    gone; its SMAPE is checked against the stored one), calibrated as the cell's
    `data.intervals` says."""
    splits = load_short_term_splits(cell_config(cell, params, extra).data)
    if cell.model in TRAINED:
        again = _train_and_score(cell, params, extra)
        fc = Forecaster.load(RUNS / cell.key / "model")
        val = model_calibration_forecasts(fc.model, splits)
        test = model_forecasts(fc.model, splits, "test")
        out = {
            **conformal_interval_scores(val, test, splits),
            "interval_model_smape": again["smape"],
        }
        if abs(again["smape"] - stored["smape"]) > 1e-6:
            log.warning(
                "%s: the retrained model scores SMAPE %.4f, the stored result %.4f",
                cell.key,
                again["smape"],
                stored["smape"],
            )
        return out
    val = benchmark_calibration_forecasts(cell.model, splits)  # type: ignore[arg-type]
    test = benchmark_forecasts(cell.model, splits, "test")  # type: ignore[arg-type]
    out = conformal_interval_scores(val, test, splits)
    if cell.model in ("naive1", "seasonal_naive"):
        out |= normal_interval_scores(cell.model, splits)
    return out


def add_intervals(cell: Cell, params: Path, extra: list[str], again: bool = False) -> dict:
    """Add the interval metrics to a cell's result file (running the cell first if needed);
    `again` rescores intervals already made by the cell's current method."""
    stored = run_cell(cell, params, extra)
    method = interval_method(cell_config(cell, params, extra).data.intervals)
    if stored.get("interval_method") == method and not again:
        log.info("skip intervals of %s (done)", cell.key)
        return stored
    t0 = time.perf_counter()
    scores = cell_interval_scores(cell, params, extra, stored)
    updated = {
        **stored,
        **scores,
        "interval_method": method,
        "interval_wall_seconds": time.perf_counter() - t0,
        "interval_provenance": provenance(),
    }
    write_json(RESULTS / f"{cell.key}.json", updated, trailing_newline=False)
    log.info(
        "%s: 95%% coverage %.3f ACD %.3f MSIS %.3f",
        cell.key,
        scores["coverage_95"],
        scores["acd_95"],
        scores["msis_95"],
    )
    return updated


def run_cell(cell: Cell, params: Path, extra: list[str]) -> dict:
    out = RESULTS / f"{cell.key}.json"
    if out.is_file():
        log.info("skip %s (done)", cell.key)
        return json.loads(out.read_text())
    t0 = time.perf_counter()
    if cell.model in TRAINED:
        scores = _train_and_score(cell, params, extra)
    elif cell.model in BENCHMARKS:
        scores = _benchmark_scores(cell)
    else:
        raise SystemExit(f"unknown model {cell.model!r}; expected {[*TRAINED, *BENCHMARKS]}")
    payload = {
        "cell": cell.key,
        "subset": cell.subset,
        "model": cell.model,
        "seed": cell.seed,
        **scores,
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
    }
    write_json(out, payload, trailing_newline=False)
    log.info(
        "%s: SMAPE %.3f MASE %.3f OWA %.3f",
        cell.key,
        scores["smape"],
        scores["mase"],
        scores["owa"],
    )
    return payload


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def table() -> str:
    """The finished cells as a markdown table, one row per subset and model."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = {m: i for i, m in enumerate([*TRAINED, *BENCHMARKS])}
    rows.sort(key=lambda r: (list(SUBSETS).index(r["subset"]), order.get(r["model"], 99)))
    lines = [
        "| subset | model | seed | SMAPE | MASE | OWA | epochs (best) | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        epochs = f"{r['epochs']} ({r['best_epoch']})" if r.get("best_epoch") else "-"
        lines.append(
            f"| {r['subset']} | {r['model']} | {r['seed'] if r['seed'] is not None else '-'} "
            f"| {r['smape']:.3f} | {r['mase']:.3f} | {r['owa']:.3f} | {epochs} "
            f"| {_duration(r['wall_seconds'])} |"
        )
    return "\n".join(lines)


def interval_table() -> str:
    """The cells with interval metrics: conformal (every model) and normal (naive1 and
    seasonal naive), as markdown."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    order = {m: i for i, m in enumerate([*TRAINED, *BENCHMARKS])}
    rows = [r for r in rows if "msis_95" in r]
    rows.sort(key=lambda r: (list(SUBSETS).index(r["subset"]), order.get(r["model"], 99)))
    lines = [
        "| subset | model | intervals | OWA | MSIS 95 | ACD 95 | coverage 95 | coverage 80 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for kind, prefix in (("conformal", ""), ("normal", "normal_")):
            if f"{prefix}msis_95" not in r:
                continue
            lines.append(
                f"| {r['subset']} | {r['model']} | {kind} | {r['owa']:.3f} "
                f"| {r[prefix + 'msis_95']:.3f} | {r[prefix + 'acd_95']:.3f} "
                f"| {r[prefix + 'coverage_95']:.3f} | {r[prefix + 'coverage_80']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="*", default=[], choices=sorted(GROUPS))
    ap.add_argument(
        "--only", nargs="*", default=[], help="SUBSET:MODEL[:SEED], e.g. Hourly:llata:2024"
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--set", action="append", default=[], help="extra overrides for trained cells")
    ap.add_argument("--table", action="store_true", help="print the results as markdown")
    ap.add_argument(
        "--intervals",
        action="store_true",
        help="add M4 interval metrics (95%% MSIS, ACD; 80%% coverage) to the cells' results",
    )
    ap.add_argument(
        "--again",
        action="store_true",
        help="with --intervals: rescore cells whose intervals are already the current method's",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cells = [c for g in args.cells for c in GROUPS[g]] + [parse_cell(t) for t in args.only]
    for cell in cells:
        if args.intervals:
            add_intervals(cell, args.params, args.set, again=args.again)
        else:
            run_cell(cell, args.params, args.set)
    if args.table:
        print(table())
        print()
        print(interval_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
