"""Render `benchmarks/RESULTS.md` from the committed result files.

Reads every cell of `benchmarks/accuracy/results/*.json` and the speed measurements
under `benchmarks/results/` (speed, training and inference cost, backbone probe), and puts
our numbers next to the published ones (`../shared/reference/RESULTS.md`, copied into
PUBLISHED below) with the difference.
Also draws forecast-vs-actual and learning-curve plots for the ETTh1-96 cells whose model
and history are still on disk.

The tables, pairs and plots hold lookback-96 cells (the published setting); cells at other
lookbacks (`_L<n>` in the run matrix) appear only in the lookback section, where validation
picks a lookback and test is reported beside it.

    python benchmarks/render.py
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACCURACY = HERE / "accuracy" / "results"
# Cells' run directories: LLATA_BENCH_RUNS (where long cells are kept across checkouts) and
# the in-tree default; a cell is looked up in that order.
SEED_STYLES = ("-", "--", ":")
RUNS_DIRS = tuple(
    dict.fromkeys(
        Path(p) for p in (os.environ.get("LLATA_BENCH_RUNS"), HERE / "accuracy" / "runs") if p
    )
)
SPEED = HERE / "results" / "speed_cpu.json"
INFERENCE = HERE / "results" / "inference_cpu.json"
TRAIN_COST = HERE / "results" / "train_cost_cpu.json"
PROBE = HERE / "results" / "backbone_probe.json"
PLOTS = HERE / "plots"
OUT = HERE / "RESULTS.md"
SHORT_TERM = HERE / "shortterm" / "RESULTS.md"

# Published MSE / MAE at input length 96 (CALF, AAAI 2025 version; DLinear from the
# iTransformer paper, Table 10), as listed in ../shared/reference/RESULTS.md.
PUBLISHED: dict[tuple[str, str, int], tuple[float, float]] = {
    ("calf", "ETTh1", 96): (0.369, 0.389),
    ("calf", "ETTh1", 192): (0.427, 0.423),
    ("calf", "ETTh1", 336): (0.456, 0.436),
    ("calf", "ETTh1", 720): (0.479, 0.467),
    ("calf", "ETTh2", 96): (0.279, 0.331),
    ("calf", "ETTh2", 192): (0.353, 0.380),
    ("calf", "ETTh2", 336): (0.362, 0.394),
    ("calf", "ETTh2", 720): (0.404, 0.426),
    ("calf", "ETTm1", 96): (0.323, 0.349),
    ("dlinear", "ETTh1", 96): (0.386, 0.400),
    ("dlinear", "ETTh1", 192): (0.437, 0.432),
    ("dlinear", "ETTh1", 336): (0.481, 0.459),
    ("dlinear", "ETTh1", 720): (0.519, 0.516),
    ("dlinear", "ETTh2", 96): (0.333, 0.387),
    ("dlinear", "ETTh2", 192): (0.477, 0.476),
    ("dlinear", "ETTh2", 336): (0.594, 0.541),
    ("dlinear", "ETTh2", 720): (0.831, 0.657),
    ("dlinear", "ETTm1", 96): (0.345, 0.372),
}
# A cell without a `lookback` field was made before the run matrix had the axis, at the
# paper's input_size (benchmarks/accuracy/run.py DEFAULT_LOOKBACK).
DEFAULT_LOOKBACK = 96
PUBLISHED_FEW_SHOT_AVG = {"ETTh1": (0.644, 0.541)}  # CALF, 10%, average over horizons
PUBLISHED_ZERO_SHOT_AVG = {("ETTh1", "ETTm1"): (0.755, 0.574)}  # CALF, average over horizons


def _published(variant: str, dataset: str, horizon: int) -> tuple[float, float] | None:
    key = "calf" if variant == "llata" else variant
    return PUBLISHED.get((key, dataset, horizon))


def load_cells() -> list[dict]:
    """Finished cells, plus snapshots of unfinished ones (`status: partial`) that have no
    final result yet."""
    done = [json.loads(p.read_text()) for p in sorted(ACCURACY.glob("*.json"))]
    finished = {c["cell"] for c in done}
    partial = [json.loads(p.read_text()) for p in sorted((ACCURACY / "partial").glob("*.json"))]
    return done + [c for c in partial if c["cell"] not in finished]


def lookback(cell: dict) -> int:
    """The cell's input_size; absent in cells made before the lookback axis."""
    return int(cell.get("lookback", DEFAULT_LOOKBACK))


def _fmt(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _group(cells: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        key = (c["dataset"], c["horizon"], c["variant"], c["few_shot_percent"], c["zero_shot_to"])
        groups[key].append(c)
    return groups


def _order(item: tuple[tuple, list[dict]]) -> tuple:
    """Rows by dataset, then horizon as a number, variant, few-shot share, zero-shot target."""
    dataset, horizon, variant, few, zero_shot_to = item[0]
    return dataset, int(horizon), variant, float(few), str(zero_shot_to)


def table(cells: list[dict], title: str, note: str) -> list[str]:
    if not cells:
        return []
    lines = [
        f"### {title}",
        "",
        note,
        "",
        "| dataset | H | variant | seeds | MSE | MAE | published MSE / MAE | ΔMSE | epochs | "
        "s/epoch | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (ds, h, variant, few, zs), group in sorted(_group(cells).items(), key=_order):
        mse = [c["mse"] for c in group]
        mae = [c["mae"] for c in group]
        pub = _published(variant, ds, h) if few == 100 and not zs else None
        delta = f"{statistics.mean(mse) - pub[0]:+.3f}" if pub else "—"
        pub_s = f"{pub[0]:.3f} / {pub[1]:.3f}" if pub else "—"
        target = f"{ds}→{zs}" if zs else ds
        if any(c.get("status") == "partial" for c in group):
            variant = f"{variant} (partial: stopped at epoch {group[0]['epochs']}, see notes)"
        lines.append(
            f"| {target} | {h} | {variant} | {','.join(str(c['seed']) for c in group)} | "
            f"{_fmt(mse)} | {_fmt(mae)} | {pub_s} | {delta} | "
            f"{_fmt([c['epochs'] for c in group], 1 if len(group) > 1 else 0)} | "
            f"{statistics.mean(c['seconds_per_epoch'] for c in group):.0f} | "
            f"{statistics.mean(c['train_seconds'] for c in group):.0f} |"
        )
    return [*lines, ""]


def ablation_section(cells: list[dict]) -> list[str]:
    """ETTh1-96, each variant against `llata` on the same seeds, beside its measured cost."""
    full = {
        (c["variant"], c["seed"]): c
        for c in cells
        if c["dataset"] == "ETTh1"
        and c["horizon"] == 96
        and c["few_shot_percent"] == 100
        and not c["zero_shot_to"]
        and c.get("status") != "partial"
    }
    train_ms = _train_ms_per_window()
    serve_ms: dict[str, float] = {}
    if INFERENCE.is_file():
        for row in json.loads(INFERENCE.read_text())["rows"]:
            # As served: LLaTA models with bf16 weights, baselines in fp32; one request.
            served = "bf16" if row["architecture"].startswith("llata") else "fp32"
            if row["batch"] == 1 and row["precision"] == served:
                serve_ms.update(dict.fromkeys(row["variants"], row["ms_per_window"]))
    variants = sorted({v for v, _ in full}, key=lambda v: (v != "llata", v))
    if "llata" not in variants:
        return []
    lines = [
        "### Ablations on ETTh1-96, paired by seed, with their cost",
        "",
        "ΔMSE is the variant's test MSE minus `llata`'s on the same seed (negative: the "
        "variant is better). Costs are the measured tables below: training time per window "
        "of one step of the variant's own recipe on the idle machine, and serving time per "
        "window for one request (LLaTA models with bf16 weights, baselines in fp32).",
        "",
        "| variant | ΔMSE per seed | mean ΔMSE | epochs | train ms / window | serve ms / window |",
        "|---|---|---|---|---|---|",
    ]
    for v in variants:
        seeds = sorted(s for w, s in full if w == v and ("llata", s) in full)
        deltas = [full[(v, s)]["mse"] - full[("llata", s)]["mse"] for s in seeds]
        epochs = [full[(v, s)]["epochs"] for s in seeds]
        per_seed = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(seeds, deltas, strict=True))
        train = f"{train_ms[v]:.2f}" if v in train_ms else "—"
        serve = f"{serve_ms[v]:.2f}" if v in serve_ms else "—"
        lines.append(
            f"| {v} | {per_seed if v != 'llata' else '(reference)'} | "
            f"{f'{statistics.mean(deltas):+.4f}' if v != 'llata' and deltas else '—'} | "
            f"{_fmt(epochs, 1) if len(epochs) > 1 else epochs[0] if epochs else '—'} | "
            f"{train} | {serve} |"
        )
    return [*lines, ""]


def _train_ms_per_window() -> dict[str, float]:
    """Training ms per window of each variant's own step (the idle-machine cost table)."""
    train_ms: dict[str, float] = {}
    if TRAIN_COST.is_file():
        for row in json.loads(TRAIN_COST.read_text())["rows"]:
            train_ms.update(dict.fromkeys(row["variants"], row["ms_per_window"]))
    return train_ms


def llm_pairs_section(cells: list[dict]) -> list[str]:
    """`llata` against `llata-no-llm` in every full-data cell where both finished on a seed
    at the same lookback."""
    by_key = {
        (c["dataset"], c["horizon"], lookback(c), c["seed"], c["variant"]): c
        for c in cells
        if c["few_shot_percent"] == 100 and not c["zero_shot_to"] and c.get("status") != "partial"
    }
    pairs = sorted(
        (
            (ds, h, lb, seed)
            for ds, h, lb, seed, v in by_key
            if v == "llata" and (ds, h, lb, seed, "llata-no-llm") in by_key
        ),
        key=lambda k: (k[0], int(k[1]), k[2], k[3]),
    )
    if not pairs:
        return []
    train_ms = _train_ms_per_window()
    ratio_known = "llata" in train_ms and "llata-no-llm" in train_ms
    lines = [
        "### With and without the LLM blocks, paired by cell",
        "",
        "`llata` (6 SmolLM2 blocks) against `llata-no-llm` (the same model with the blocks "
        "removed) on the same dataset, horizon, lookback and seed; ΔMSE is LLaTA's test MSE "
        "minus the LLM-free model's (negative: the LLM helps). CALF's published numbers are at "
        "lookback 96 and score the test split without its last incomplete batch of 256 (2,560 "
        "of ETTh1-96's 2,785 windows) where ours score every window, so they are a landmark, "
        "not a like-for-like difference. Epochs are those run, with the best (restored) one; "
        "the compute ratio is epochs x training ms per window of each variant's step, taken "
        "from the ETTh1-96 cost table, an estimate that ignores how the horizon and lookback "
        "change the head's share.",
        "",
        "| dataset | H | lookback | seed | LLaTA MSE | LLM-free MSE | ΔMSE | CALF published | "
        "epochs (best) LLaTA / LLM-free | compute ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    deltas = []
    for ds, h, lb, seed in pairs:
        llm, free = by_key[(ds, h, lb, seed, "llata")], by_key[(ds, h, lb, seed, "llata-no-llm")]
        delta = llm["mse"] - free["mse"]
        deltas.append(delta)
        pub = _published("llata", ds, h) if lb == DEFAULT_LOOKBACK else None
        ratio = "—"
        if ratio_known:
            cost = llm["epochs"] * train_ms["llata"]
            ratio = f"{cost / (free['epochs'] * train_ms['llata-no-llm']):.1f}x"
        lines.append(
            f"| {ds} | {h} | {lb} | {seed} | {llm['mse']:.3f} | {free['mse']:.3f} | "
            f"{delta:+.4f} | {f'{pub[0]:.3f}' if pub else '—'} | "
            f"{llm['epochs']} ({llm['best_epoch']}) / {free['epochs']} ({free['best_epoch']}) | "
            f"{ratio} |"
        )
    helped = sum(d < 0 for d in deltas)
    lines += [
        "",
        f"{len(deltas)} pairs: the LLM blocks lowered test MSE in {helped} and raised it in "
        f"{len(deltas) - helped}; ΔMSE from {min(deltas):+.4f} to {max(deltas):+.4f}, "
        f"mean {statistics.mean(deltas):+.4f} (two-sided sign-flip test of a zero mean, "
        f"treating the pairs as independent: p = {sign_flip_p(deltas):.2f}).",
        "",
    ]
    return lines


# Mean validation MSEs closer than this are a tie; the shorter lookback of a tie is picked,
# as it is the cheaper model to train and serve. Near-ties beyond it show as the runner-up's
# margin in the summary table.
VAL_TIE = 5e-5


@dataclass(frozen=True)
class LookbackPick:
    """What validation picks among one dataset/horizon/variant's lookbacks."""

    pick: int | None  # None when no cell recorded a validation MSE
    tied: list[int]  # the lookbacks within VAL_TIE of the lowest mean, the pick included
    val: dict[int, float]  # mean validation MSE per candidate lookback
    n: dict[int, int]  # seeds behind each mean


def pick_lookback(
    by_lookback: dict[int, list[dict]], seeds: set[int] | None = None
) -> LookbackPick:
    """The lookback validation picks: the lowest mean `best_val_mse` over the seeds present.

    Test MSE never enters the choice. A lookback none of whose cells recorded a validation
    MSE (cells made before it was recorded) cannot be picked.

    Args:
        by_lookback: a dataset/horizon/variant's finished cells, by lookback.
        seeds: compare only these seeds (e.g. those every lookback has); default: all.
    """
    val: dict[int, float] = {}
    n: dict[int, int] = {}
    for lb, group in by_lookback.items():
        scores = [
            c["best_val_mse"]
            for c in group
            if c.get("best_val_mse") is not None and (seeds is None or c["seed"] in seeds)
        ]
        if scores:
            val[lb], n[lb] = statistics.mean(scores), len(scores)
    if not val:
        return LookbackPick(None, [], val, n)
    best = min(val.values())
    tied = sorted(lb for lb, v in val.items() if v - best < VAL_TIE)
    return LookbackPick(tied[0], tied, val, n)


def _seeds_with_validation(group: list[dict]) -> set[int]:
    return {c["seed"] for c in group if c.get("best_val_mse") is not None}


def lookback_section(cells: list[dict]) -> list[str]:
    """Full-data cells of each dataset/horizon/variant that ran at lookbacks other than 96: one
    row per lookback, the one validation picks marked, its test MSE against lookback 96's."""
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c["few_shot_percent"] == 100 and not c["zero_shot_to"] and c.get("status") != "partial":
            groups[(c["dataset"], c["horizon"], c["variant"])][lookback(c)].append(c)
    shown = {k: v for k, v in groups.items() if any(lb != DEFAULT_LOOKBACK for lb in v)}
    if not shown:
        return []
    lines = [
        "### Lookback as a selection axis",
        "",
        "Each dataset, horizon and variant that ran at lookbacks other than 96, one row per "
        "lookback: mean ± sample std over the seeds present of the best validation MSE (the "
        "epoch early stopping restored) and of the test MSE. Validation picks the lookback "
        "with the lowest mean validation MSE; test is never used to pick, only reported. "
        f"Means closer than {VAL_TIE:.5f} are a tie, resolved to the shorter lookback. Cells made "
        'before the validation MSE was recorded show "-" and cannot be picked. Every '
        "lookback scores the same test targets: the validation and test splits start "
        "`input_size` rows before their border (`llata_core.data.split_borders`), so the "
        "windows' futures are the same rows for every lookback, and so are their counts "
        "(`tests/test_selection.py::test_every_lookback_scores_the_same_test_targets` checks "
        "it); a longer lookback only has fewer training windows, as its first window needs "
        "more history. Precision is the training precision of the cells in the row.",
        "",
        "| dataset | H | variant | lookback | seeds | precision | validation MSE | test MSE "
        "| validation picks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = [
        "",
        "| dataset | H | variant | validation picks | seeds behind the pick | runner-up "
        "(validation margin) | each seed's pick | pick on the seeds every lookback has | test "
        "MSE at the pick | test MSE at lookback 96 | Δ test, on the seeds both have |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(shown, key=lambda k: (k[0], int(k[1]), k[2])):
        ds, h, variant = key
        by_lb = shown[key]
        chosen = pick_lookback(by_lb)
        for lb in sorted(by_lb):
            group = sorted(by_lb[lb], key=lambda c: c["seed"])
            val = [c["best_val_mse"] for c in group if c.get("best_val_mse") is not None]
            val_s = _fmt(val, 4) if val else "-"
            if val and len(val) < len(group):
                val_s += f" ({len(val)} of {len(group)} seeds)"
            mark = ""
            if lb == chosen.pick:
                mark = "**picked**" + (
                    f" (tie: {', '.join(map(str, chosen.tied))})" if len(chosen.tied) > 1 else ""
                )
            lines.append(
                f"| {ds} | {h} | {variant} | {lb} | {','.join(str(c['seed']) for c in group)} | "
                f"{'/'.join(sorted({c.get('precision', '?') for c in group}))} | {val_s} | "
                f"{_fmt([c['mse'] for c in group], 4)} | {mark} |"
            )
        summary.append(_pick_row(ds, h, variant, by_lb, chosen))
    return [*lines, *summary, ""]


def _pick_row(
    ds: str, h: int, variant: str, by_lb: dict[int, list[dict]], chosen: LookbackPick
) -> str:
    """The summary row: how firm the pick is (the runner-up's margin, each seed's own pick,
    the pick on the seeds every lookback has: a mean over unequal seed sets mixes the
    lookback's effect with the seeds'), then its test MSE against lookback 96's."""
    pick = chosen.pick
    if pick is None:
        return f"| {ds} | {h} | {variant} | no validation recorded |{' — |' * 7}"
    at_pick = {c["seed"]: c["mse"] for c in by_lb[pick]}
    base = {c["seed"]: c["mse"] for c in by_lb.get(DEFAULT_LOOKBACK, [])}
    both = sorted(set(at_pick) & set(base))
    delta = (
        f"{statistics.mean(at_pick[s] - base[s] for s in both):+.4f} "
        f"({len(both)} seed{'s' if len(both) > 1 else ''})"
        if both
        else "—"
    )
    ranked = sorted(chosen.val, key=lambda lb: (chosen.val[lb], lb))
    runner_up = next((lb for lb in ranked if lb != pick), None)
    margin = (
        f"{runner_up} ({chosen.val[runner_up] - chosen.val[pick]:+.5f})"
        if runner_up is not None
        else "—"
    )
    candidates = [g for g in by_lb.values() if _seeds_with_validation(g)]
    common = set.intersection(*(_seeds_with_validation(g) for g in candidates))
    per_seed = ", ".join(f"{s}: {pick_lookback(by_lb, {s}).pick}" for s in sorted(common)) or "—"
    unequal = len({frozenset(_seeds_with_validation(g)) for g in candidates}) > 1
    if not unequal:
        again = "the same (equal seeds)"
    elif not common:
        again = "— (no seed in common)"
    else:
        on_common = pick_lookback(by_lb, common)
        seeds = ",".join(map(str, sorted(common)))
        again = f"{on_common.pick} (seeds {seeds})"
    return (
        f"| {ds} | {h} | {variant} | {pick} | {chosen.n[pick]} | {margin} | {per_seed} | "
        f"{again} | {_fmt(list(at_pick.values()), 4)} | "
        f"{_fmt(list(base.values()), 4) if base else '—'} | {delta} |"
    )


def sign_flip_p(deltas: list[float], exact_up_to: int = 20, samples: int = 200_000) -> float:
    """Two-sided p-value of a zero mean paired difference: the share of sign assignments
    whose |sum| is at least the observed one. Exact (all 2^n) for n <= `exact_up_to`, else
    estimated from `samples` assignments drawn with a fixed seed."""
    import numpy as np

    if not deltas:
        raise ValueError("sign-flip test needs at least one difference")
    values = np.asarray(deltas, dtype=np.float64)
    n = len(values)
    if n <= exact_up_to:
        masks = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n) & 1
    else:
        masks = np.random.default_rng(0).integers(0, 2, size=(samples, n))
    sums = np.abs((2 * masks - 1) @ values)
    return float(np.mean(sums >= abs(values.sum()) - 1e-12))


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


def speed_section() -> list[str]:
    if not SPEED.is_file():
        return []
    s = json.loads(SPEED.read_text())
    per_epoch = s["train_seconds_per_epoch_extrapolated"]
    match = s["cross_modal_match_seconds"]
    load = ", ".join(f"{x:.1f}" for x in s["load_average_1min_during"])
    return [
        "## Training speed, fp32 vs bf16 autocast (CPU)",
        "",
        f"{s['what']}. Machine: {s['machine']}, {s['cpu_count']} cores, torch {s['torch']}; "
        f"1-min load average during the run: {load}. "
        f"Command: `{s['command']}` ({s['finished_at']}, revision {s['git_revision'][:12]}).",
        "",
        "| precision | median s / step | s / epoch (extrapolated) |",
        "|---|---|---|",
        *[
            f"| {k} | {s['median_step_seconds'][k]:.2f} | {per_epoch[k]:.0f} |"
            for k in ("fp32", "bf16")
        ],
        "",
        f"bf16 autocast speed-up: **{s['bf16_speedup']:.2f}x**.",
        "",
        "Cross-modal match at batch 256 (forward only): projecting the principal embeddings "
        f"once per call takes {match['project_once'] * 1000:.1f} ms; repeating them per sample as "
        f"the published code does takes {match['repeat_per_sample'] * 1000:.0f} ms.",
        "",
    ]


def inference_section() -> list[str]:
    if not INFERENCE.is_file():
        return []
    s = json.loads(INFERENCE.read_text())
    cost: dict[str, dict[tuple[str, int], float]] = {}
    about: dict[str, dict] = {}
    for row in s["rows"]:
        cost.setdefault(row["architecture"], {})[(row["precision"], row["batch"])] = row[
            "ms_per_window"
        ]
        about[row["architecture"]] = row

    def cell(name: str, precision: str, batch: int) -> str:
        value = cost[name].get((precision, batch))
        return "—" if value is None else f"{value:.3f}"

    return [
        "## Inference cost per window, by variant (CPU)",
        "",
        f"{s['what']}; median of {s['rounds']} interleaved calls, {s['torch_threads']} torch "
        f"thread(s). Machine: {s['machine']}, torch {s['torch']}. Command: `{s['command']}` "
        f"({s['finished_at']}, revision {s['git_revision'][:12]}, wall {s['wall_s']} s). "
        "Baselines are served in fp32.",
        "",
        "| inference model | variants | parameters | fp32, batch 1 | fp32, batch 256 "
        "| bf16, batch 1 | bf16, batch 256 |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {', '.join(about[name]['variants'])} | "
            f"{about[name]['parameters'] / 1e6:.2f} M | {cell(name, 'fp32', 1)} | "
            f"{cell(name, 'fp32', 256)} | {cell(name, 'bf16', 1)} | {cell(name, 'bf16', 256)} |"
            for name in cost
        ],
        "",
        "(milliseconds per window)",
        "",
    ]


def train_cost_section() -> list[str]:
    if not TRAIN_COST.is_file():
        return []
    s = json.loads(TRAIN_COST.read_text())
    load = ", ".join(f"{v:.1f}" for v in s["load_average_1min_during"])
    return [
        "## Training cost per window, by variant (CPU)",
        "",
        f"{s['what']}; median of {s['rounds']} interleaved steps, {s['torch_threads']} torch "
        f"thread(s), 1-min load average during the run: {load}. Machine: {s['machine']}, "
        f"torch {s['torch']}. Command: `{s['command']}` ({s['finished_at']}, revision "
        f"{s['git_revision'][:12]}, wall {s['wall_s']} s). Seconds per epoch: the steps of "
        "one full ETTh1-96 training epoch, without the validation pass.",
        "",
        "| training cost | variants | precision | batch | trainable / all parameters "
        "| s / step | ms / window | s / epoch |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['cost']} | {', '.join(r['variants'])} | {r['precision']} | {r['batch']} | "
            f"{r['trainable_parameters'] / 1e6:.2f} M / {r['parameters'] / 1e6:.2f} M | "
            f"{r['median_step_seconds']:.3f} | {r['ms_per_window']:.2f} | "
            f"{r['seconds_per_epoch']:.0f} |"
            for r in s["rows"]
        ],
        "",
    ]


def probe_section() -> list[str]:
    if not PROBE.is_file():
        return []
    s = json.loads(PROBE.read_text())
    kept = s["kept_blocks"]
    rows = [
        f"| {init} | {r['loss_all_blocks']:.3f} | {r['perplexity_all_blocks']:,.1f} | "
        f"{r[f'loss_after_{kept}_blocks']:.3f} |"
        for init, r in s["results"].items()
    ]
    grid = s["quantisation_grid_pretrained"]
    return [
        "## The backbone as a language model (CPU)",
        "",
        f"{s['what']}: {s['tokens_scored']:,} tokens in sequences of {s['chunk_tokens']}. "
        f"Uniform guessing over the {s['vocab_size']:,}-token vocabulary scores "
        f"{s['uniform_loss']:.3f}. Machine: {s['machine']}, torch {s['torch']}. Command: "
        f"`{s['command']}` ({s['finished_at']}, revision {s['git_revision'][:12]}, wall "
        f"{s['wall_s']} s).",
        "",
        f"| {s['backbone']} weights | loss, all {s['blocks']} blocks | perplexity "
        f"| loss read after block {kept} (logit lens) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"4-bit grid of the pretrained weights in the {kept} kept blocks: "
        f"{grid['mean_distinct_values_per_group']} distinct values per group of "
        f"{grid['group_size']} on average (Q4_1 allows 16), implied quantisation noise "
        f"{grid['implied_noise_to_signal_db']} dB against the weights' variance.",
        "",
    ]


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
