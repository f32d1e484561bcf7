"""Forecast combination as a candidate: a weighted mean of two trained cells, weight chosen on
validation.

    python benchmarks/accuracy/ensemble.py ETTh1:96:dlinear:2024:L512 ETTh1:96:llata-no-llm:2024

Each member is an accuracy-matrix cell (`run.py`'s `DATASET:H:VARIANT:SEED[:L<n>]`). Its model
is the one `run.py` trains under `$LLATA_BENCH_RUNS/<cell>/model`; a member not trained yet is
trained here by the same function (`run.train_cell`); its result file stays `run.py`'s to write.
The members may have different lookbacks: the windows are cut with the longest one and each
member reads the last `input_size` rows of each window. That is the same window it reads on
its own (the splits start `input_size` rows before their border, so every lookback has the same
futures), which this script checks: each member's MSE through the shared windows must equal its
MSE on its own splits.

The combination is `llata_core.combination.Combination`, the model production serves, and the
weight is chosen by its `choose_weight`: the weight `w` of the first member (the second gets
`1 - w`) is the best validation MSE on a grid from 0 to 1 in steps of 0.1, so the combination
can also pick either member alone; test is scored once, with that weight, and never used to
choose. The result file
`results/ensembles/<DATASET>_<H>_ens_<member>+<member>_s<SEED>.json` records the members' own
validation and test MSE beside the combination's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.accuracy import run as matrix  # noqa: E402
from benchmarks.accuracy.run import Cell, parse_cell, train_cell  # noqa: E402
from llata_core.atomic import write_json  # noqa: E402
from llata_core.combination import Combination, Member, check_members, choose_weight  # noqa: E402
from llata_core.config import load_params  # noqa: E402
from llata_core.evaluate import evaluate  # noqa: E402
from llata_core.forecaster import Forecaster  # noqa: E402
from llata_core.jobs import provenance  # noqa: E402
from llata_core.tasks.longterm import LongTermTask  # noqa: E402

log = logging.getLogger("ensemble")


def combine(first: Cell, second: Cell, params: Path) -> dict:
    if (first.dataset, first.horizon, first.seed) != (second.dataset, second.horizon, second.seed):
        raise ValueError("members must share the dataset, the horizon and the seed")
    t0 = time.perf_counter()
    members = [
        Forecaster.load(train_cell(c, load_params(params, c.overrides([]))))
        for c in (first, second)
    ]
    cells = (first, second)
    pair = [Member(c.key, fc.model, fc.scaler) for c, fc in zip(cells, members, strict=True)]
    check_members(pair)  # same horizon, channels and scaler, or a message naming both
    own = {
        c.key: LongTermTask.for_model(fc).splits
        for c, fc in zip((first, second), members, strict=True)
    }
    longest = max(members, key=lambda fc: fc.input_size)
    shared = LongTermTask.for_model(longest).splits  # windows of the longest lookback
    scores: dict[str, dict[str, float]] = {}
    for cell, fc, member in zip((first, second), members, pair, strict=True):
        mine = {s: evaluate(fc.model, getattr(own[cell.key], s)).mse for s in ("val", "test")}
        alone = Combination([member], (1.0,))  # the member through the shared windows
        through = {s: evaluate(alone, getattr(shared, s)).mse for s in mine}
        for split in mine:  # the same futures, whatever the lookback
            if not np.isclose(mine[split], through[split], rtol=1e-6, atol=0.0):
                raise AssertionError(
                    f"{cell.key}: {split} MSE {mine[split]} on its own windows but "
                    f"{through[split]} through the shared ones: the targets differ"
                )
        scores[cell.key] = mine
    choice = choose_weight(*pair, lambda model: evaluate(model, shared.val).mse)
    val_by_weight, best = choice.by_weight, choice.weight
    test = evaluate(Combination(pair, choice.weights).eval(), shared.test)
    name = f"ens_{first.variant}-L{first.lookback}+{second.variant}-L{second.lookback}"
    payload = {
        "cell": f"{first.dataset}_{first.horizon}_{name}_s{first.seed}",
        "dataset": first.dataset,
        "horizon": first.horizon,
        "variant": name,
        "seed": first.seed,
        "members": [first.key, second.key],
        "member_scores": scores,
        "weight_first": best,
        "val_mse_by_weight": {f"{w:.1f}": v for w, v in val_by_weight.items()},
        "best_val_mse": val_by_weight[best],
        "mse": test.mse,
        "mae": test.mae,
        "n_windows": test.n_windows,
        "precision": [fc.precision for fc in members],
        "wall_seconds": time.perf_counter() - t0,
        **provenance(),
    }
    out = matrix.RESULTS / "ensembles" / f"{payload['cell']}.json"
    write_json(out, payload, trailing_newline=False)
    log.info(
        "%s: weight %.1f, val %.4f, test MSE %.4f (members: %s)",
        payload["cell"],
        best,
        val_by_weight[best],
        test.mse,
        json.dumps(scores),
    )
    return payload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", help="DATASET:H:VARIANT:SEED[:L<n>]")
    ap.add_argument("second", help="DATASET:H:VARIANT:SEED[:L<n>]")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        first, second = parse_cell(args.first), parse_cell(args.second)
    except ValueError as exc:
        ap.error(str(exc))
    if first.few_shot < 100 or first.zero_shot_to or second.few_shot < 100 or second.zero_shot_to:
        ap.error("members are full-data cells")
    combine(first, second, args.params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
