"""The forecast-combination section of RESULTS.md: two trained cells averaged with a weight
chosen on validation (`benchmarks/accuracy/ensemble.py`), against each member alone."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.accuracy_tables import fmt_mean_std

ENSEMBLES = Path(__file__).resolve().parent / "accuracy" / "results" / "ensembles"


def load_ensembles(directory: Path = ENSEMBLES) -> list[dict]:
    """Every finished combination, in file-name order."""
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def combination_section(results: list[dict]) -> list[str]:
    """One row per dataset, horizon and pair of members: each member's validation and test
    MSE, the combination's, and what validation prefers (test is only reported)."""
    if not results:
        return []
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["horizon"], r["variant"]), []).append(r)
    lines = [
        "## Forecast combination",
        "",
        "Two trained cells of the matrix averaged, `w * first + (1 - w) * second`, with `w` the "
        "best validation MSE on a grid 0, 0.1, ..., 1 (so the combination can pick either member "
        "alone); test is scored once at that weight (`benchmarks/accuracy/ensemble.py`). The "
        "members may have different lookbacks: each reads the last `input_size` rows of windows "
        "cut for the longer one, and the script checks that each member's MSE through those "
        "windows equals its MSE on its own splits (the same futures). Mean ± sample std over "
        "seeds; members are scored as retrained for the combination (precision in the result "
        "files). The retrain flow forms the same combination of its two best candidates "
        "(`llata_core.combination`, `pipeline.selection.combine`) and serves it when the "
        "selection rule picks it.",
        "",
        "| dataset | H | members (first + second) | seeds | w per seed | first: val / test | "
        "second: val / test | combination: val / test | validation prefers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (dataset, horizon, variant), group in sorted(groups.items()):
        group.sort(key=lambda r: r["seed"])
        pair = variant.removeprefix("ens_").replace("+", " + ")

        def member(index: int, group: list[dict] = group) -> tuple[list[float], list[float]]:
            scores = [list(r["member_scores"].values())[index] for r in group]
            return [s["val"] for s in scores], [s["test"] for s in scores]

        (fv, ft), (sv, st) = member(0), member(1)
        cv = [r["best_val_mse"] for r in group]
        ct = [r["mse"] for r in group]
        means = {
            "combination": statistics.fmean(cv),
            "first": statistics.fmean(fv),
            "second": statistics.fmean(sv),
        }
        prefers = min(means, key=lambda k: means[k])
        weights = ", ".join(f"{r['weight_first']:.1f}" for r in group)
        lines.append(
            f"| {dataset} | {horizon} | {pair} | "
            f"{','.join(str(r['seed']) for r in group)} | "
            f"{weights} | "
            f"{fmt_mean_std(fv, 4)} / {fmt_mean_std(ft, 4)} | "
            f"{fmt_mean_std(sv, 4)} / {fmt_mean_std(st, 4)} | "
            f"{fmt_mean_std(cv, 4)} / **{fmt_mean_std(ct, 4)}** | {prefers} |"
        )
    return [*lines, ""]
