"""Forecasts for choosing an interval method on validation only (M4, `dlinear_snaive`).

The production model trains on each training series without its last horizon and is
calibrated on that horizon. To compare interval methods without the test file, this
script moves everything one horizon back: the last horizon of each training series
becomes the interval-validation window, and a model with the `dlinear_snaive` recipe is
trained on the series without it (so it holds out and early-stops on the horizon before,
exactly as the production model does one horizon later). It saves that model's forecasts
of the interval-validation window and of the `K_MAX` horizons before it (the candidate
calibration windows), with seasonal naive's, to `forecasts_path(subset, seed)` (not
committed: about 40 s to remake on Hourly, 20 s on Weekly). `interval_sweep.py` scores the
methods from that file.

    python benchmarks/shortterm/interval_forecasts.py --subset Weekly [--seed 2025]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.shortterm.run import INPUT_HORIZONS, SUBSETS, TRAINED
from llata_core.config import load_params
from llata_core.shortterm import (
    ShortTermSplits,
    ShortTermWindows,
    forecast_series,
    identity_scaler,
    load_short_term_splits,
    seasonal_naive,
)
from llata_core.train import fit

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "validation"
K_MAX = 3  # calibration windows per series, at most
SEED = 2024  # the seed of the production cells (`run.py`)
log = logging.getLogger("bench.shortterm.intervals")


def forecasts_path(subset: str, seed: int = SEED) -> Path:
    """Where the forecasts of one subset and training seed go (the production seed's file
    keeps its old name)."""
    suffix = "" if seed == SEED else f"_s{seed}"
    return OUT / f"interval_forecasts_{subset}{suffix}.npz"


def one_horizon_back(full: ShortTermSplits, seed: int = 0) -> ShortTermSplits:
    """The splits with each training series' last horizon as the test target (and the
    same interval scheme)."""
    w, h = full.windows, full.windows.horizon
    windows = ShortTermWindows(
        [s[:-h] for s in w.train],
        h,
        seasonality=w.seasonality,
        ids=w.ids,
        test=[s[-h:] for s in w.train],
        input_size=w.input_size,
        history_size=w.history_size,
    )
    return ShortTermSplits(
        windows,
        windows.training_dataset(seed=seed),
        identity_scaler(),
        full.source,
        full.origin,
        full.sha256,
        full.intervals,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subset", default="Hourly", choices=sorted(SUBSETS))
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    h = SUBSETS[args.subset]
    overrides = [
        f"data.dataset=M4-{args.subset}",
        f"data.horizon={h}",
        f"data.input_size={INPUT_HORIZONS['dlinear_snaive'] * h}",
        f"train.seed={args.seed}",
        *TRAINED["dlinear_snaive"],
    ]
    cfg = load_params(args.params, overrides)
    full = load_short_term_splits(cfg.data, seed=args.seed)
    w = full.windows
    splits = one_horizon_back(full, args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(cfg, splits, None, run_dir=Path(run_dir), progress=False)
    train_seconds = time.perf_counter() - t0
    model = result.model.to_inference().eval()
    # Window k = 0 is the interval-validation window (the training file's last horizon);
    # k = 1..K_MAX the horizons before it, k = 1 being the model's own held-out horizon.
    histories, targets, model_fc, snaive_fc = [], [], [], []
    for k in range(K_MAX + 1):
        hist = [s[: len(s) - (k + 1) * h] for s in w.train]
        target = np.stack([s[len(s) - (k + 1) * h : len(s) - k * h] for s in w.train])
        inputs = ShortTermWindows(hist, 1, input_size=w.input_size).test_inputs()
        model_fc.append(forecast_series(model, inputs))
        snaive_fc.append(np.stack([seasonal_naive(x, h, w.seasonality) for x in hist]))
        targets.append(target)
        histories.append(hist)
    lengths = np.array([len(s) for s in w.train])
    OUT.mkdir(parents=True, exist_ok=True)
    out = forecasts_path(args.subset, args.seed)
    np.savez_compressed(
        out,
        model=np.stack(model_fc),  # [K_MAX + 1, N, H]
        seasonal_naive=np.stack(snaive_fc),  # [K_MAX + 1, N, H]
        targets=np.stack(targets),  # [K_MAX + 1, N, H]
        lengths=lengths,
        train_seconds=train_seconds,
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        best_val_smape=result.best_val_score,
    )
    log.info(
        "%s: %d epochs (best %d), %.1f s; wrote %s",
        args.subset,
        len(result.history),
        result.best_epoch,
        train_seconds,
        out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
