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
- `aci-<d>d`: `rolling-<d>d` with Adaptive Conformal Inference on top: each daily
  recalibration reads the rolling scores' quantile at an effective level, moved by the
  miscoverage of the windows whose targets arrived since the last one (`aci_levels`). Its
  step size `gamma` is chosen on validation only (`choose_gamma`), then test is scored once.

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
from llata_core.intervals import aci_step, coverage, effective_rank, interval_score
from llata_core.jobs import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LEVELS = (80.0, 95.0)
STEPS_PER_DAY = {"ETTh1": 24, "ETTh2": 24, "ETTm1": 96, "ETTm2": 96}
RECENT_DAYS = (30, 60)
ROLLING_DAYS = (30, 90)
ACI_DAYS = 30
ACI_GAMMAS = (0.001, 0.005, 0.01, 0.02, 0.05)
log = logging.getLogger("bench.coverage")


def _half_widths(scores: np.ndarray, level: float) -> np.ndarray:
    """`[H, M]` conformal half-width of unsorted absolute residuals `[n, H, M]`.

    A level whose rank is beyond `n` (an ACI level near 100) takes the largest score."""
    k = effective_rank(scores.shape[0], level)
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


def schemes(
    val: np.ndarray, test: np.ndarray, per_day: int, gamma: float
) -> dict[str, dict[str, float]]:
    """Every scheme's test metrics from validation and test residuals `[n, H, M]` (time
    order), ACI with step size `gamma`. The point forecast is 0 on the residual axis:
    `y - y_hat` inside `+-q`."""
    zero = np.zeros_like(test)
    a_val = np.abs(val)
    out = {"split": _score(test, zero, {lv: _half_widths(a_val, lv) for lv in LEVELS})}
    for days in RECENT_DAYS:
        recent = a_val[-days * per_day :]
        out[f"recent-{days}d"] = _score(test, zero, {lv: _half_widths(recent, lv) for lv in LEVELS})
    for days in ROLLING_DAYS:
        half, _ = aci_levels(val, test, per_day, days, gamma=0.0)
        out[f"rolling-{days}d"] = _score(test, zero, half)
    half, issued = aci_levels(val, test, per_day, ACI_DAYS, gamma)
    out[f"aci-{ACI_DAYS}d"] = _score(test, zero, half)
    for lv in LEVELS:
        out[f"aci-{ACI_DAYS}d"][f"level_{lv:g}_range"] = [
            float(issued[lv].min()),
            float(issued[lv].max()),
        ]
    return out


def aci_levels(
    val: np.ndarray,
    test: np.ndarray,
    per_day: int,
    days: int,
    gamma: float,
    holdout: int | None = None,
) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray]]:
    """Daily recalibration on the last `days` days of observed windows, with ACI's level.

    Once a day (every `per_day` test windows) the scores are the absolute residuals of the
    windows whose whole target is observed by then: all of `val`, and the test windows at
    least `horizon` steps earlier. For each nominal level `p`, the effective level `p_t` is
    updated before the quantile is read (`llata_core.intervals.aci_step`):

        p_{t+1} = p_t + 100 gamma (err_t - alpha),   alpha = 1 - p / 100,

    where `err_t` is the miscoverage of the test windows whose targets arrived since the
    last update, pooled over those windows, their steps and channels, each judged by the
    half-width it was issued with (delayed feedback: a window counts `horizon` steps after
    it is issued). Pooled, not per step: the per-step, per-channel widths already carry the
    shape of the error over the horizon, drift on ETT moves all steps' errors together,
    and one pooled rate from `per_day x horizon x channels` indicators is a far less noisy
    signal than 96 per-step ones that would each move their own level. `p_t` is clipped to
    `llata_core.intervals.ACI_LEVEL_RANGE`; a rank beyond the number of scores takes the
    largest score.
    `gamma = 0` is the plain rolling scheme, exactly (the level is never touched).

    With `holdout`, the feedback is production's instead (`llata_core.jobs.recalibrate_job`):
    `err_t` is the miss rate of its trial, on the newest `holdout` observed windows
    (validation ones too, early on), of half-widths from the `days` of windows before
    them read at the current level. Consecutive holdouts overlap, so each window's miss
    is fed back on several days.

    Args:
        val, test: residuals `[n, horizon, channels]` in time order; `val` seeds the
            scores, the scheme issues intervals for `test`.
        per_day: windows per day (one recalibration each).
        days: the rolling window's length in days.
        gamma: ACI's step size.
        holdout: judge the newest `holdout` windows by a trial calibrated before them (as
            production does) rather than each arrived window by its own half-width.

    Returns:
        Half-widths `[n_test, horizon, channels]` per nominal level, and the effective level
        each test window was issued with (`[n_test]`) per nominal level.

    References:
        Gibbs & Candes, "Adaptive Conformal Inference Under Distribution Shift" (NeurIPS
        2021), the update `alpha_{t+1} = alpha_t + gamma (alpha - err_t)`.
    """
    horizon = test.shape[1]
    k = days * per_day
    a_test = np.abs(test)
    stream = np.concatenate([np.abs(val), a_test])  # [n_val + n_test, H, M]
    half = {lv: np.empty_like(a_test) for lv in LEVELS}
    issued = {lv: np.empty(len(test)) for lv in LEVELS}
    level = {lv: lv for lv in LEVELS}
    scored = 0  # test windows whose miscoverage has been fed back
    for start in range(0, len(test), per_day):
        # Windows whose whole target is observed before test window `start` begins: all
        # validation windows and the test windows at least `horizon` steps earlier.
        known = len(val) + max(start - horizon + 1, 0)
        arrived = slice(scored, known - len(val))
        window = stream[max(known - k, 0) : known]
        for lv in LEVELS:
            if gamma and holdout is not None:
                # The trial: scores of the `days` before the holdout (less the windows
                # that straddle its first origin), read at the current level.
                end = known - holdout - horizon + 1
                trial = _half_widths(stream[max(end - k, 0) : end], level[lv])
                err = float(np.mean(stream[known - holdout : known] > trial))
                level[lv] = aci_step(level[lv], lv, err, gamma)
            elif gamma and arrived.stop > arrived.start:
                err = float(np.mean(a_test[arrived] > half[lv][arrived]))
                level[lv] = aci_step(level[lv], lv, err, gamma)
            half[lv][start : start + per_day] = _half_widths(window, level[lv])
            issued[lv][start : start + per_day] = level[lv]
        scored = known - len(val)
    return half, issued


def choose_gamma(val: np.ndarray, per_day: int, holdout: int | None = None) -> dict:
    """ACI's `gamma`, from validation alone.

    The first `ACI_DAYS` days of validation windows seed the scores and the scheme rolls
    over the rest of validation, once per `ACI_GAMMAS` value. The rule: the gamma whose
    larger miss, `max(|coverage_80 - 0.80|, |coverage_95 - 0.95|)`, is smallest; on a tie
    the smaller gamma (the less the level moves, the narrower its swings). `holdout`:
    production's feedback (`aci_levels`).

    Returns:
        `gamma`, and `validation`: per gamma, its coverage at each level.
    """
    seed = ACI_DAYS * per_day
    if len(val) <= seed:
        raise ValueError(f"{len(val)} validation windows do not exceed the {seed}-window seed")
    head, rest = val[:seed], val[seed:]
    grid: dict[str, dict[str, float]] = {}
    for gamma in ACI_GAMMAS:
        half, _ = aci_levels(head, rest, per_day, ACI_DAYS, gamma, holdout)
        grid[f"{gamma:g}"] = {
            f"coverage_{lv:g}": coverage(rest, -half[lv], half[lv]) for lv in LEVELS
        }

    def miss(gamma: float) -> float:
        c = grid[f"{gamma:g}"]
        return max(abs(c[f"coverage_{lv:g}"] - lv / 100.0) for lv in LEVELS)

    best = min(ACI_GAMMAS, key=lambda g: (miss(g), g))
    return {
        "gamma": best,
        "rule": "min max-level |coverage - nominal| on validation",
        "validation": grid,
    }


def run(key: str, runs: Path, holdout_days: int | None = None) -> dict:
    """Measure one cell (`<dataset>_<horizon>_<variant>_s<seed>[_L<n>]`); with
    `holdout_days`, also ACI with production's feedback (`_production_aci`)."""
    t0 = time.perf_counter()
    fc = Forecaster.load(runs / key / "model")
    data = fc.config.data
    splits = make_splits(load_series(data), data, scaler=fc.scaler)
    val = residuals(fc.model, splits.val)
    test = residuals(fc.model, splits.test)
    per_day = STEPS_PER_DAY.get(data.dataset, 24)
    aci = choose_gamma(val, per_day)
    payload = {
        "cell": key,
        "dataset": data.dataset,
        "lookback": data.input_size,
        "horizon": data.horizon,
        "n_val": len(val),
        "n_test": len(test),
        "test_mse": float(np.mean(test**2)),
        "schemes": schemes(val, test, per_day, aci["gamma"]),
        "aci": aci,
        **(_production_aci(val, test, per_day, holdout_days * per_day) if holdout_days else {}),
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
    }
    write_json(RESULTS / f"{key}.json", payload, trailing_newline=False)
    return payload


def _production_aci(val: np.ndarray, test: np.ndarray, per_day: int, holdout: int) -> dict:
    """ACI fed back as production's recalibration does: gamma on validation, then test."""
    choice = choose_gamma(val, per_day, holdout)
    half, _ = aci_levels(val, test, per_day, ACI_DAYS, choice["gamma"], holdout)
    return {
        "aci_holdout": {**choice, "holdout": holdout},
        "aci_holdout_test": _score(test, np.zeros_like(test), half),
    }


def table() -> str:
    """Coverage at 80 / 95 and the 95% interval score per scheme, one row per cell."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        return ""
    names = list(dict.fromkeys(n for r in rows for n in r["schemes"]))
    head = " | ".join(f"{n} 80 / 95 (IS95)" for n in names)
    lines = [f"| cell | test MSE | {head} |", "|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = [_cell(r["schemes"].get(n)) for n in names]
        lines.append(f"| {r['cell']} | {r['test_mse']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(s: dict | None) -> str:
    """`coverage 80 / 95 (IS95)` of one scheme, `-` where a cell was not measured with it."""
    if s is None:
        return "-"
    return f"{s['coverage_80']:.3f} / {s['coverage_95']:.3f} ({s['winkler_95']:.2f})"


def _within(s: dict, points: float = 3.0) -> bool:
    """Whether a scheme's coverage is within `points` of nominal at every level."""
    return all(abs(s[f"coverage_{lv:g}"] - lv / 100) <= points / 100 for lv in LEVELS)


def aci_table() -> str:
    """rolling-30d against aci-30d per cell, with the gamma validation chose."""
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    lines = [
        "| cell | test MSE | rolling-30d 80 / 95 (IS95) | aci-30d 80 / 95 (IS95) "
        "| gamma (validation 80 / 95) | +-3 rolling / aci |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "aci" not in r:
            continue
        rolling, aci = r["schemes"]["rolling-30d"], r["schemes"][f"aci-{ACI_DAYS}d"]
        gamma = r["aci"]["gamma"]
        v = r["aci"]["validation"][f"{gamma:g}"]
        met = " / ".join("yes" if _within(s) else "no" for s in (rolling, aci))
        lines.append(
            f"| {r['cell']} | {r['test_mse']:.4f} | {_cell(rolling)} | {_cell(aci)} "
            f"| {gamma:g} ({v['coverage_80']:.3f} / {v['coverage_95']:.3f}) | {met} |"
        )
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
    ap.add_argument("--aci-table", action="store_true", help="rolling-30d against aci-30d")
    ap.add_argument(
        "--holdout-days",
        type=int,
        metavar="D",
        help="also ACI fed back as production's recalibration does: its trial's miss rate "
        "on the newest D days of windows (`aci_holdout*` in the result)",
    )
    ap.add_argument("--redo", action="store_true", help="measure cells that have a result again")
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
        if (RESULTS / f"{key}.json").is_file() and not args.redo:
            log.info("skip %s (done)", key)
            continue
        r = run(key, runs, args.holdout_days)
        split = r["schemes"]["split"]
        log.info(
            "%s: split coverage 80 %.3f 95 %.3f", key, split["coverage_80"], split["coverage_95"]
        )
    if args.table:
        print(table())
    if args.aci_table:
        print(aci_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
