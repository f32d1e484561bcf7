"""Model choice: by validation score, cheapest within the tolerance, never by test; and the
lookback axis scores every lookback on the same test targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.accuracy import run
from llata_core.config import DataConfig
from llata_core.data import SeriesFrame, make_splits, synthetic_frame
from llata_core.selection import (
    CandidateReport,
    Selection,
    count_parameters,
    select_candidate,
    serving_ms_per_window,
)


def report(name: str, val: float, test: float, ms: float, params: int = 1000) -> CandidateReport:
    return CandidateReport(
        name=name,
        overrides=(),
        model_kind="llata",
        input_size=96,
        val_score=val,
        val_metric="mse",
        test_score=test,
        train_seconds=1.0,
        parameters=params,
        serving_ms_per_window=ms,
        artifact=f"artifacts/candidates/{name}/model",
    )


def test_the_winner_is_chosen_on_validation_never_on_test() -> None:
    # `b` has by far the best test score, `a` the best validation score.
    candidates = [report("a", 0.60, 0.50, 1.0), report("b", 0.70, 0.10, 1.0)]
    selection = select_candidate(candidates, tolerance=0.01)
    assert selection.winner == "a" == selection.best_by_score
    # Permuting the test scores never changes the choice.
    swapped = [report("a", 0.60, 0.10, 1.0), report("b", 0.70, 0.50, 1.0)]
    assert select_candidate(swapped, tolerance=0.01).winner == "a"


def test_within_the_tolerance_the_cheapest_to_serve_wins() -> None:
    llata = report("llata", 0.690, 0.38, ms=2.0, params=10_000)
    no_llm = report("llata-no-llm", 0.694, 0.39, ms=0.3, params=2_000)
    dlinear = report("dlinear", 0.720, 0.38, ms=0.01, params=100)  # cheapest, but 4 % worse
    selection = select_candidate([llata, no_llm, dlinear], tolerance=0.01)
    assert selection.best_by_score == "llata"
    assert selection.eligible == ("llata", "llata-no-llm")
    assert selection.winner == "llata-no-llm"
    assert "within 1.0% of the best (llata 0.6900)" in selection.reason
    # No tolerance: the best score wins outright.
    assert select_candidate([llata, no_llm, dlinear], tolerance=0.0).winner == "llata"
    # Equal serving cost: fewer parameters break the tie.
    twin = report("twin", 0.691, 0.5, ms=2.0, params=5_000)
    assert select_candidate([llata, twin], tolerance=0.01).winner == "twin"


def test_selection_round_trips_and_refuses_what_it_cannot_compare() -> None:
    selection = select_candidate([report("a", 0.5, 0.4, 1.0), report("b", 0.6, 0.3, 0.1)], 0.01)
    assert Selection.from_dict(selection.to_dict()) == selection
    with pytest.raises(ValueError, match="no candidates"):
        select_candidate([], 0.01)
    with pytest.raises(ValueError, match="finite"):
        select_candidate([report("a", float("nan"), 0.4, 1.0)], 0.01)
    with pytest.raises(ValueError, match="unique"):
        select_candidate([report("a", 0.5, 0.4, 1.0), report("a", 0.6, 0.4, 1.0)], 0.01)
    mixed = report("m", 0.5, 0.4, 1.0)
    mixed = CandidateReport(**{**mixed.to_dict(), "overrides": (), "val_metric": "smape"})
    with pytest.raises(ValueError, match="different metrics"):
        select_candidate([report("a", 0.5, 0.4, 1.0), mixed], 0.01)
    with pytest.raises(ValueError, match="tolerance"):
        select_candidate([report("a", 0.5, 0.4, 1.0)], 1.5)


def test_serving_cost_is_measured_per_window() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(1), torch.nn.Linear(96 * 3, 24 * 3))
    windows = np.zeros((8, 96, 3), dtype=np.float32)
    ms = serving_ms_per_window(model, windows, repeats=2)
    assert 0.0 < ms < 1000.0
    assert count_parameters(model) == 96 * 3 * 24 * 3 + 24 * 3
    with pytest.raises(ValueError, match="windows"):
        serving_ms_per_window(model, np.zeros((0, 96, 3), dtype=np.float32))


@pytest.mark.parametrize("split_rule", ["ett_hour", "ratio"])
def test_every_lookback_scores_the_same_test_targets(split_rule: str) -> None:
    """The validation and test splits start `input_size` rows before their border, so a
    longer lookback reads further back while every window's future is the same rows."""
    frame = synthetic_frame(17420, 3)
    channels = tuple(c for c in frame.columns if c != "date")
    series = SeriesFrame(frame, "date", channels, "synthetic", "test", "x", split_rule)  # type: ignore[arg-type]
    futures = {}
    prints = set()
    for lookback in run.LOOKBACKS:
        splits = make_splits(series, DataConfig(input_size=lookback, horizon=96))
        prints.add((splits.targets_fingerprint(), splits.fingerprint()))
        for name in ("val", "test"):
            windows = getattr(splits, name)
            ys = np.stack([windows[i][1].numpy() for i in (0, len(windows) - 1)])
            futures.setdefault(name, []).append((len(windows), ys))
    for name, seen in futures.items():
        counts = {n for n, _ in seen}
        assert len(counts) == 1, f"{name}: window counts differ across lookbacks: {counts}"
        for _, ys in seen[1:]:
            np.testing.assert_array_equal(ys, seen[0][1])
    # So the registry compares their stored scores (eval_targets_hash), while the windows they
    # read differ (eval_split_hash); another horizon forecasts other futures.
    assert len({t for t, _ in prints}) == 1 and len({w for _, w in prints}) == len(run.LOOKBACKS)
    other = make_splits(series, DataConfig(input_size=96, horizon=192)).targets_fingerprint()
    assert other not in {t for t, _ in prints}


def test_lookback_cells_are_named_and_parsed() -> None:
    cell = run.parse_cell("ETTh1:96:llata-no-llm:2024:L336")
    assert cell.lookback == 336 and cell.key == "ETTh1_96_llata-no-llm_s2024_L336"
    assert "data.input_size=336" in cell.overrides([])
    plain = run.parse_cell("ETTh1:96:llata:2024")
    assert plain.key == "ETTh1_96_llata_s2024"  # cells made before the axis keep their names
    assert not any(o.startswith("data.input_size") for o in plain.overrides([]))
    zero_shot = run.parse_cell("ETTh1:96:llata:2024::ETTm1:L512")
    assert zero_shot.zero_shot_to == "ETTm1" and zero_shot.lookback == 512
    assert zero_shot.train_key == "ETTh1_96_llata_s2024_L512"
    with pytest.raises(ValueError, match="lookback"):
        run.parse_cell("ETTh1:96:llata:2024:L1")
