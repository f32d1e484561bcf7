"""Does split conformal's coverage hold on the test split, and do recalibration schemes fix
what drift breaks? One JSON result per benchmark model.

For a trained cell of the accuracy matrix (its saved model under `$LLATA_BENCH_RUNS`), the
residuals of every validation and test window are computed once, in time order, and the
test windows' 80% and 95% intervals are formed by each scheme:

- `split`: the sorted residuals of every validation window (what training stores today);
- `recent-<d>d`: only the last `d` days of validation windows (darts' `cal_length`, fixed);
- `rolling-<d>d`: recalibrated once a day on the last `d` days of windows whose targets are
  already observed at that time (validation, then test windows as their futures arrive),
  as a daily `llata calibrate` on fresh data would be.

Coverage, mean width and interval score are pooled over every test window, step and
channel, on the scaled axis like MSE.

    LLATA_DATA_MIRROR=../shared/data LLATA_BENCH_RUNS=~/.cache/llata/bench-runs \\
        python benchmarks/intervals/coverage.py ETTh1_96_dlinear_s2024_L512 ...
    python benchmarks/intervals/coverage.py --table

A forecast combination's cell (`benchmarks/accuracy/ensemble.py` names them) has no saved model
of its own: `--members FIRST SECOND` writes it first, through the library's one way to make a
combination artifact (`llata_core.combination_job.combine_job`: weight on validation, the
combination's own conformal scores), from the two member cells' saved models:

    python benchmarks/intervals/coverage.py ETTh1_96_ens_dlinear-L512+llata-no-llm-L96_s2024 \\
        --members ETTh1_96_dlinear_s2024_L512 ETTh1_96_llata-no-llm_s2024
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from llata_core.atomic import write_json
from llata_core.data import load_series, make_splits
from llata_core.evaluate import residuals
from llata_core.forecaster import Forecaster
from llata_core.intervals import conformal_rank, coverage, interval_score
from llata_core.jobs import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LEVELS = (80.0, 95.0)
STEPS_PER_DAY = {"ETTh1": 24, "ETTh2": 24, "ETTm1": 96, "ETTm2": 96}
RECENT_DAYS = (30, 60)
ROLLING_DAYS = (30, 90)
log = logging.getLogger("bench.coverage")


def _half_widths(scores: np.ndarray, level: float) -> np.ndarray:
    """`[H, M]` conformal half-width of unsorted absolute residuals `[n, H, M]`."""
    k = conformal_rank(scores.shape[0], level)
    return np.partition(scores, k - 1, axis=0)[k - 1]


def _score(y: np.ndarray, point: np.ndarray, half: dict[float, np.ndarray]) -> dict[str, float]:
    """Pooled coverage, width and interval score of `point +- half[level]` (`[N, H, M]`)."""
    out: dict[str, float] = {}
    for level in LEVELS:
        lo, hi = point - half[level], point + half[level]
        out[f"coverage_{level:g}"] = coverage(y, lo, hi)
        out[f"width_{level:g}"] = float(np.mean(hi - lo))
        out[f"winkler_{level:g}"] = float(np.mean(interval_score(y, lo, hi, level)))
    return out


def schemes(val: np.ndarray, test: np.ndarray, per_day: int) -> dict[str, dict[str, float]]:
    """Every scheme's test metrics from validation and test residuals `[n, H, M]` (time
    order). The point forecast is 0 on the residual axis: `y - y_hat` inside `+-q`."""
    horizon = test.shape[1]
    zero = np.zeros_like(test)
    a_val, a_test = np.abs(val), np.abs(test)
    out = {"split": _score(test, zero, {lv: _half_widths(a_val, lv) for lv in LEVELS})}
    for days in RECENT_DAYS:
        recent = a_val[-days * per_day :]
        out[f"recent-{days}d"] = _score(test, zero, {lv: _half_widths(recent, lv) for lv in LEVELS})
    stream = np.concatenate([a_val, a_test])  # [n_val + n_test, H, M]
    for days in ROLLING_DAYS:
        k = days * per_day
        half = {lv: np.empty_like(test) for lv in LEVELS}
        for start in range(0, len(test), per_day):
            # Windows whose whole target is observed before test window `start` begins: all
            # validation windows and the test windows at least `horizon` steps earlier.
            known = len(val) + max(start - horizon + 1, 0)
            window = stream[max(known - k, 0) : known]
            for lv in LEVELS:
                half[lv][start : start + per_day] = _half_widths(window, lv)
        out[f"rolling-{days}d"] = _score(test, zero, half)
    return out


def run(key: str, runs: Path) -> dict:
    """Measure one cell (`<dataset>_<horizon>_<variant>_s<seed>[_L<n>]`)."""
    t0 = time.perf_counter()
    fc = Forecaster.load(runs / key / "model")
    data = fc.config.data
    splits = make_splits(load_series(data), data, scaler=fc.scaler)
    val = residuals(fc.model, splits.val)
    test = residuals(fc.model, splits.test)
    payload = {
        "cell": key,
        "dataset": data.dataset,
        "lookback": data.input_size,
        "horizon": data.horizon,
        "n_val": len(val),
        "n_test": len(test),
        "test_mse": float(np.mean(test**2)),
        "schemes": schemes(val, test, STEPS_PER_DAY.get(data.dataset, 24)),
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
    }
    write_json(RESULTS / f"{key}.json", payload, trailing_newline=False)
    return payload


def table() -> str:
    """Coverage at 80 / 95 and the 95% interval score per scheme, one row per cell."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        return ""
    names = list(rows[0]["schemes"])
    head = " | ".join(f"{n} 80 / 95 (IS95)" for n in names)
    lines = [f"| cell | test MSE | {head} |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = []
        for n in names:
            s = r["schemes"][n]
            cells.append(f"{s['coverage_80']:.3f} / {s['coverage_95']:.3f} ({s['winkler_95']:.2f})")
        lines.append(f"| {r['cell']} | {r['test_mse']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def combine_members(key: str, members: list[str], runs: Path) -> None:
    """Write the combination cell `key`'s model from its two members' saved models."""
    from llata_core.combination_job import combine_job

    pair = tuple((name, runs / name / "model") for name in members)
    outcome = combine_job((pair[0], pair[1]), out_dir=runs / key / "model")
    if outcome.artifact is None:
        raise SystemExit(f"{key}: validation puts all the weight on one member; no combination")
    log.info("%s: weight %.1f, validation %.4f", key, outcome.choice.weight, outcome.choice.score)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", nargs="*", help="accuracy-matrix cell keys with a saved model")
    ap.add_argument("--table", action="store_true")
    ap.add_argument(
        "--members",
        nargs=2,
        metavar=("FIRST", "SECOND"),
        help="one combination cell: write its model from these two member cells' models first",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    runs = Path(os.environ.get("LLATA_BENCH_RUNS", HERE.parent / "accuracy" / "runs"))
    if args.members:
        if len(args.cells) != 1:
            ap.error("--members needs exactly one (combination) cell")
        combine_members(args.cells[0], args.members, runs)
    for key in args.cells:
        if (RESULTS / f"{key}.json").is_file():
            log.info("skip %s (done)", key)
            continue
        r = run(key, runs)
        split = r["schemes"]["split"]
        log.info(
            "%s: split coverage 80 %.3f 95 %.3f", key, split["coverage_80"], split["coverage_95"]
        )
    if args.table:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
