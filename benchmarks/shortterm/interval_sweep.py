"""Choose an interval method on validation only, from `interval_forecasts.py`'s file.

Every method is split conformal around the same point forecasts; they differ in the
calibration windows (`K` horizons per series before the interval-validation window), the
score (`sym`: absolute residual, `asym`: signed residual with separate lower and upper
quantiles), the scale a residual is divided by (`mae`: the input window's seasonal MAE;
`rmse`: the root mean squared seasonal difference of the same window; `hist-mae`: the
whole history's seasonal MAE, which a served model does not see and is listed only as a
reference) and the pooling (`step`: one quantile per
horizon step; `pool<r>`: steps `j - r .. j + r` pooled). They are scored on each series'
last training horizon (MSIS, ACD, coverage), beside seasonal naive's normal and
conformal intervals on the same window. The test file is not read. The last row runs
the library (`calibrate_forecasts`) with the subset's configured scheme
(`data.intervals`), which must reproduce its row of the grid.

    python benchmarks/shortterm/interval_sweep.py --subset Weekly [--seed 2025]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from benchmarks.shortterm.interval_forecasts import SEED, forecasts_path, one_horizon_back
from benchmarks.shortterm.run import INPUT_HORIZONS, SUBSETS
from llata_core.atomic import write_json
from llata_core.config import load_params
from llata_core.intervals import window_scale
from llata_core.shortterm import (
    ShortTermWindows,
    calibrate_forecasts,
    calibration_backs,
    interval_bounds,
    load_short_term_splits,
    random_walk_intervals,
)
from llata_core.shortterm.metrics import absolute_coverage_difference, interval_score, msis

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "validation"
LEVELS = (80.0, 95.0)
# Paired comparisons reported with a bootstrap over series: (forecaster, method) pairs.
COMPARE = (
    (("model", "K1_sym_rmse_step"), ("model", "K1_sym_mae_step")),
    (("model", "K3_sym_rmse_step"), ("model", "K3_sym_mae_step")),
    (("model", "K2_sym_mae_step"), ("model", "K1_sym_mae_step")),
    (("model", "K3_sym_mae_step"), ("model", "K1_sym_mae_step")),
    (("model", "K3_sym_rmse_step"), ("model", "K1_sym_rmse_step")),
    (("model", "K3_asym_rmse_step"), ("model", "K3_sym_rmse_step")),
    (("model", "K3_asym_rmse_step"), ("model", "K1_sym_rmse_step")),
    (("model", "K1_sym_rmse_pool2"), ("model", "K1_sym_rmse_step")),
    (("model", "K1_sym_mae_step"), ("seasonal_naive", "normal")),
    (("model", "K3_sym_mae_step"), ("seasonal_naive", "normal")),
    (("model", "K1_sym_rmse_step"), ("seasonal_naive", "normal")),
    (("model", "K3_sym_rmse_step"), ("seasonal_naive", "normal")),
    (("model", "K3_asym_rmse_step"), ("seasonal_naive", "normal")),
)
log = logging.getLogger("bench.shortterm.intervals")


def upper_rank(n: int, level: float) -> int:
    """1-based rank of the upper `(1 - alpha / 2)` conformal quantile among `n` signed scores."""
    return min(n, math.ceil(Fraction(n + 1) * (1 - (1 - Fraction(repr(level)) / 100) / 2)))


def sym_rank(n: int, level: float) -> int:
    return min(n, math.ceil(Fraction(n + 1) * Fraction(repr(level)) / 100))


def scales(histories: list[np.ndarray], input_size: int, m: int) -> dict[str, np.ndarray]:
    inputs = ShortTermWindows(histories, 1, input_size=input_size).test_inputs()
    x, mask = inputs.insample.numpy(), inputs.insample_mask.numpy()
    full = [np.mean(np.abs(h[m:] - h[:-m])) for h in histories]
    return {
        "mae": window_scale(x, m, mask)[:, 0, 0],
        "rmse": window_scale(x, m, mask, "seasonal-rmse")[:, 0, 0],
        "hist-mae": np.maximum(np.array(full), 1e-8),
    }


def pooled(scores: np.ndarray, r: int) -> list[np.ndarray]:
    """Per step `j`, the scores of steps `j - r .. j + r` (clipped), flattened."""
    h = scores.shape[1]
    return [scores[:, max(0, j - r) : j + r + 1].ravel() for j in range(h)]


def conformal_bounds(
    point: np.ndarray, scale: np.ndarray, cal: np.ndarray, level: float, kind: str, r: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds `[N, H]` around `point` from calibration scaled residuals `cal` `[n, H]`."""
    lo_q, hi_q = [], []
    for s in pooled(cal, r):
        n = s.shape[0]
        if kind == "sym":
            q = np.sort(np.abs(s))[sym_rank(n, level) - 1]
            lo_q.append(-q)
            hi_q.append(q)
        else:
            k = upper_rank(n, level)
            srt = np.sort(s)
            lo_q.append(srt[n - k])
            hi_q.append(srt[k - 1])
    lo, hi = np.array(lo_q), np.array(hi_q)  # [H]
    return point + lo[None] * scale[:, None], point + hi[None] * scale[:, None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", default="Hourly", choices=sorted(SUBSETS))
    ap.add_argument("--seed", type=int, default=SEED, help="the forecasts' training seed")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    h = SUBSETS[args.subset]
    size = INPUT_HORIZONS["dlinear_snaive"] * h
    cfg = load_params(None, [f"data.dataset=M4-{args.subset}", f"data.input_size={size}"])
    w = load_short_term_splits(cfg.data).windows
    m = w.seasonality
    data = np.load(forecasts_path(args.subset, args.seed))
    y = data["targets"][0]
    hist0 = [s[: len(s) - h] for s in w.train]  # the interval-validation window's history
    sc = [scales([s[: len(s) - (k + 1) * h] for s in w.train], size, m) for k in range(4)]

    seasonal_mae = np.array([np.mean(np.abs(x[m:] - x[:-m])) for x in hist0])
    per_series: dict[tuple[str, str], np.ndarray] = {}

    def score(lo: dict, hi: dict) -> dict[str, float]:
        per_series[key] = interval_score(y, lo[95.0], hi[95.0], 95.0).mean(1) / seasonal_mae
        out = {f"coverage_{lv:g}": float(np.mean((y >= lo[lv]) & (y <= hi[lv]))) for lv in lo}
        out["msis_95"] = msis(y, lo[95.0], hi[95.0], hist0, m)
        out["acd_95"] = absolute_coverage_difference(y, lo[95.0], hi[95.0])
        return out

    rows = []
    normal = [[random_walk_intervals(x, h, lv, m) for x in hist0] for lv in LEVELS]
    lo = {lv: np.stack([b[1] for b in bands]) for lv, bands in zip(LEVELS, normal, strict=True)}
    hi = {lv: np.stack([b[2] for b in bands]) for lv, bands in zip(LEVELS, normal, strict=True)}
    key = ("seasonal_naive", "normal")
    rows.append({"forecaster": key[0], "method": key[1], **score(lo, hi)})
    grid = itertools.product(
        ("seasonal_naive", "model"), (1, 2, 3), ("sym", "asym"), ("mae", "rmse", "hist-mae"), (0, 2)
    )
    for fc, k_cal, kind, scale, r in grid:
        point = data[fc][0]
        residuals = [data["targets"][k] - data[fc][k] for k in range(1, k_cal + 1)]
        cal = np.concatenate([r_ / sc[k][scale][:, None] for k, r_ in enumerate(residuals, 1)])
        lo, hi = {}, {}
        for lv in LEVELS:
            lo[lv], hi[lv] = conformal_bounds(point, sc[0][scale], cal, lv, kind, r)
        key = (fc, f"K{k_cal}_{kind}_{scale}_{'step' if r == 0 else f'pool{r}'}")
        rows.append({"forecaster": fc, "method": key[1], **score(lo, hi)})
    # What `llata calibrate` does (`calibrate_forecasts`, `interval_bounds`) with the
    # subset's configured scheme on the same forecasts, one horizon back: it must reproduce
    # its row of the grid.
    back = one_horizon_back(load_short_term_splits(cfg.data))
    backs = calibration_backs(back.windows, back.intervals.calibration_horizons)
    windows = [data["model"][k] for k in backs]
    scores = calibrate_forecasts(windows, back)
    key = ("model", f"library (calibrate_forecasts: {scores.normalizer}, {scores.n} windows)")
    rows.append(
        {
            "forecaster": "model",
            "method": key[1],
            **score(*interval_bounds(data["model"][0], scores, back, LEVELS)),
        }
    )
    suffix = "" if args.seed == SEED else f"_s{args.seed}"
    write_json(OUT / f"interval_sweep_{args.subset}{suffix}.json", rows, trailing_newline=False)
    print("| forecaster | method | MSIS 95 | ACD 95 | coverage 95 | coverage 80 |")
    print("|---|---|---|---|---|---|")
    for r_ in rows:
        print(
            f"| {r_['forecaster']} | {r_['method']} | {r_['msis_95']:.3f} | {r_['acd_95']:.3f} "
            f"| {r_['coverage_95']:.3f} | {r_['coverage_80']:.3f} |"
        )
    # Paired bootstrap over series (2000 resamples): the calibration set is held fixed, so
    # this is the spread from which series land in the validation window, not all of it.
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(y), (2000, len(y)))
    print("\n| comparison | MSIS difference | 95 % bootstrap interval |\n|---|---|---|")
    for a, b in COMPARE:
        diff = per_series[a] - per_series[b]
        lo_ci, hi_ci = np.quantile(diff[idx].mean(1), (0.025, 0.975))
        name = f"{' '.join(a)} - {' '.join(b)}"
        print(f"| {name} | {diff.mean():+.3f} | {lo_ci:+.3f} .. {hi_ci:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
