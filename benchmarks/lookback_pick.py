"""Which lookback validation picks for each dataset/horizon/variant, and the RESULTS.md
section that shows the pick beside its test MSE."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from benchmarks.accuracy_tables import DEFAULT_LOOKBACK, fmt_mean_std, lookback

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
            val_s = fmt_mean_std(val, 4) if val else "-"
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
                f"{fmt_mean_std([c['mse'] for c in group], 4)} | {mark} |"
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
        f"{again} | {fmt_mean_std(list(at_pick.values()), 4)} | "
        f"{fmt_mean_std(list(base.values()), 4) if base else '—'} | {delta} |"
    )
