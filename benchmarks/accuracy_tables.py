"""The accuracy sections of RESULTS.md: each setting's table against the published numbers,
the ablation, and LLaTA against its LLM-free model paired by cell (with the sign-flip test)."""

from __future__ import annotations

import statistics
from collections import defaultdict

from benchmarks.measurements import serve_ms_per_window, train_ms_per_window

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


def lookback(cell: dict) -> int:
    """The cell's input_size; absent in cells made before the lookback axis."""
    return int(cell.get("lookback", DEFAULT_LOOKBACK))


def fmt_mean_std(values: list[float], digits: int = 3) -> str:
    """One value as it is; several as mean ± sample std."""
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
            f"{fmt_mean_std(mse)} | {fmt_mean_std(mae)} | {pub_s} | {delta} | "
            f"{fmt_mean_std([c['epochs'] for c in group], 1 if len(group) > 1 else 0)} | "
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
    train_ms = train_ms_per_window()
    serve_ms = serve_ms_per_window()
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
            f"{fmt_mean_std(epochs, 1) if len(epochs) > 1 else epochs[0] if epochs else '—'} | "
            f"{train} | {serve} |"
        )
    return [*lines, ""]


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
    train_ms = train_ms_per_window()
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
