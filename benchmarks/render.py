"""Render `benchmarks/RESULTS.md` from the committed result files.

Reads every cell of `benchmarks/accuracy/results/*.json` and assembles the page from its
sections: the accuracy tables, our numbers next to the published ones
(`../shared/reference/RESULTS.md`, copied into `accuracy_tables.PUBLISHED`) with the
difference (`benchmarks/accuracy_tables.py`); the lookback validation picks
(`benchmarks/lookback_pick.py`); the speed measurements under `benchmarks/results/` (speed,
training and inference cost, backbone probe: `benchmarks/measurements.py`); then the notes
and the short-term page. Also draws forecast-vs-actual and learning-curve plots for the
ETTh1-96 cells whose model and history are still on disk.

The tables, pairs and plots hold lookback-96 cells (the published setting); cells at other
lookbacks (`_L<n>` in the run matrix) appear only in the lookback section, where validation
picks a lookback and test is reported beside it.

    python benchmarks/render.py [--no-plots]
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

if not __package__:
    # Run as `python benchmarks/render.py`: the repository root makes this script's sibling
    # modules importable as `benchmarks.*`.
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks.accuracy_tables import (  # noqa: E402
    DEFAULT_LOOKBACK,
    PUBLISHED_FEW_SHOT_AVG,
    PUBLISHED_ZERO_SHOT_AVG,
    ablation_section,
    llm_pairs_section,
    lookback,
    table,
)
from benchmarks.combination import combination_section, load_ensembles  # noqa: E402
from benchmarks.lookback_pick import lookback_section  # noqa: E402
from benchmarks.measurements import (  # noqa: E402
    inference_section,
    probe_section,
    speed_section,
    train_cost_section,
)

HERE = Path(__file__).resolve().parent
ACCURACY = HERE / "accuracy" / "results"
# Cells' run directories: LLATA_BENCH_RUNS (where long cells are kept across checkouts) and
# the in-tree default; a cell is looked up in that order.
RUNS_DIRS = tuple(
    dict.fromkeys(
        Path(p) for p in (os.environ.get("LLATA_BENCH_RUNS"), HERE / "accuracy" / "runs") if p
    )
)
SEED_STYLES = ("-", "--", ":")  # learning curves: one line style per seed
PLOTS = HERE / "plots"
OUT = HERE / "RESULTS.md"
SHORT_TERM = HERE / "shortterm" / "RESULTS.md"


def load_cells() -> list[dict]:
    """Finished cells, plus snapshots of unfinished ones (`status: partial`) that have no
    final result yet."""
    done = [json.loads(p.read_text()) for p in sorted(ACCURACY.glob("*.json"))]
    finished = {c["cell"] for c in done}
    partial = [json.loads(p.read_text()) for p in sorted((ACCURACY / "partial").glob("*.json"))]
    return done + [c for c in partial if c["cell"] not in finished]


def plots(cells: list[dict]) -> list[str]:
    """Forecast vs actual (ETTh1-96, first seed) for llata and dlinear; learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llata_core.checkpoint import EpochLog
    from llata_core.jobs import evaluate_job
    from llata_core.tasks.longterm import plot_forecasts

    made = []
    PLOTS.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 5))
    colours: dict[str, str] = {}
    seed_order: dict[int, int] = {}
    lowest = math.inf
    for c in sorted(cells, key=lambda c: (c["variant"], c["seed"])):
        if c["dataset"] != "ETTh1" or c["horizon"] != 96 or c["few_shot_percent"] != 100:
            continue
        if c["zero_shot_to"]:
            continue
        run = next((d / c["cell"] for d in RUNS_DIRS if (d / c["cell"]).is_dir()), None)
        if run is None:
            continue
        history = run / "run" / "history.jsonl"
        if history.is_file():
            rows = [json.loads(line) for line in history.read_text().splitlines()]
            val_mse = [EpochLog.validation_of(r)["mse"] for r in rows]
            # One colour per variant, one line style per seed: 6 variants x 3 seeds stay legible.
            colour = colours.setdefault(c["variant"], f"C{len(colours)}")
            ax.plot(
                [r["epoch"] for r in rows],
                val_mse,
                color=colour,
                linestyle=SEED_STYLES[seed_order.setdefault(c["seed"], len(seed_order)) % 3],
                linewidth=1.2,
                label=f"{c['variant']} s{c['seed']}",
            )
            lowest = min(lowest, min(val_mse))
        model = run / "model" if (run / "model").is_dir() else run / "partial_model"
        if c["variant"] in ("llata", "dlinear") and c["seed"] == 2024 and model.is_dir():
            _, fc, splits = evaluate_job(model)
            path = PLOTS / f"forecast_ETTh1_96_{c['variant']}.png"
            plot_forecasts(fc, splits, path)
            made.append(f"![{c['variant']} forecast]({path.relative_to(HERE)})")
    for variant in ("dlinear", "llata"):
        # A forecast drawn where that cell's model was on disk stays linked where it is not.
        path = PLOTS / f"forecast_ETTh1_96_{variant}.png"
        link = f"![{variant} forecast]({path.relative_to(HERE)})"
        if path.is_file() and link not in made:
            made.append(link)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation MSE (scaled)")
    ax.set_title("ETTh1, horizon 96: learning curves (first epochs above the top edge)")
    if math.isfinite(lowest):
        ax.set_ylim(lowest - 0.01, lowest + 0.09)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(PLOTS / "learning_curves_ETTh1_96.png", dpi=90)
    plt.close(fig)
    made.append(f"![learning curves]({(PLOTS / 'learning_curves_ETTh1_96.png').relative_to(HERE)})")
    return made


def main() -> int:
    cells = load_cells()
    # The published setting: every table but the lookback section holds lookback-96 cells.
    at_96 = [c for c in cells if lookback(c) == DEFAULT_LOOKBACK]
    full = [c for c in at_96 if c["few_shot_percent"] == 100 and not c["zero_shot_to"]]
    few = [c for c in at_96 if c["few_shot_percent"] < 100]
    zero = [c for c in at_96 if c["zero_shot_to"]]
    unshown = sorted(
        c["cell"]
        for c in cells
        if lookback(c) != DEFAULT_LOOKBACK and (c["few_shot_percent"] < 100 or c["zero_shot_to"])
    )
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/render.py` from the JSON files under "
        "`benchmarks/accuracy/results/` (one per finished cell, each with its exact command, "
        "machine, git revision and wall time) and `benchmarks/results/`. Published numbers "
        "are from `../shared/reference/RESULTS.md` (CALF = the method LLaTA implements, with "
        "GPT-2; ours runs on SmolLM2-135M unless stated). MSE / MAE on scaled values over every "
        "test window, input length (lookback) 96 except in the lookback section. CALF's "
        "published numbers drop the test split's last incomplete batch of 256 (2,560 of "
        "ETTh1-96's 2,785 windows), so a difference to them is not like for like (notes).",
        "",
        "## Long-term forecasting",
        "",
        *table(
            full,
            "Full training data",
            "Mean ± sample std over seeds where several ran. ΔMSE is our mean minus the "
            "published MSE; ours scores every test window, CALF's code (and much of the "
            "published literature) drops the last incomplete test batch (2,560 of ETTh1-96's "
            "2,785 windows at batch 256), so ΔMSE is not like for like (notes).",
        ),
        *table(
            few,
            "Few-shot (first 10% of training windows), horizon 96",
            "Published few-shot numbers are averages over four horizons "
            f"(CALF ETTh1: {PUBLISHED_FEW_SHOT_AVG['ETTh1'][0]} / "
            f"{PUBLISHED_FEW_SHOT_AVG['ETTh1'][1]}); ours is horizon 96 only, so no "
            "difference is shown.",
        ),
        *table(
            zero,
            "Zero-shot (train on ETTh1, test on ETTm1), horizon 96",
            "Published CALF ETTh1→ETTm1 is an average over four horizons "
            f"({PUBLISHED_ZERO_SHOT_AVG[('ETTh1', 'ETTm1')][0]} / "
            f"{PUBLISHED_ZERO_SHOT_AVG[('ETTh1', 'ETTm1')][1]}).",
        ),
        *ablation_section(at_96),
        *llm_pairs_section(cells),
        *lookback_section(cells),
        *combination_section(load_ensembles()),
    ]
    if unshown:
        lines += [
            f"Few- and zero-shot cells at lookbacks other than 96 are not tabled yet: "
            f"{', '.join(unshown)}.",
            "",
        ]
    if "--no-plots" not in sys.argv:
        lines += ["## Plots", "", *plots(at_96), ""]
    lines += speed_section()
    lines += train_cost_section()
    lines += inference_section()
    lines += probe_section()
    notes = HERE / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    if SHORT_TERM.is_file():
        # The short-term runner writes its own page; its body goes here one level down.
        body = SHORT_TERM.read_text().split("\n", 1)[1].replace("\n## ", "\n### ")
        lines += [
            "## Short-term forecasting (M4)",
            "",
            f"From [`shortterm/RESULTS.md`]({SHORT_TERM.relative_to(HERE)}), written by "
            "`benchmarks/shortterm/run.py`.",
            body.strip(),
            "",
        ]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({len(cells)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
