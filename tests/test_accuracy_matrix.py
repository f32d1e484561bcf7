"""The accuracy run matrix: one result per finished cell, reruns skip, zero-shot reuses."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import accuracy_tables, lookback_pick, measurements, render
from benchmarks.accuracy import run
from tests.conftest import sine_frame, tiny_overrides


@pytest.fixture
def matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results and checkpoints in a temp dir; a tiny-GPT-2 recipe; `sine.csv` in the cwd."""
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(run, "RUNS", tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    sine_frame().to_csv("sine.csv", index=False)
    raw = tiny_overrides("tiny-gpt2")
    raw["data"]["channels"] = ["c0", "c1", "c2"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def _result(cell: str) -> dict:
    return json.loads((run.RESULTS / f"{cell}.json").read_text())


def test_a_cell_writes_one_result_and_a_rerun_skips_it(
    matrix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["benchmarks/accuracy/run.py", "--params", str(matrix), "--only", "sine.csv:8:llata:0"]
    monkeypatch.setattr(sys, "argv", argv)  # what the result records as its command
    assert run.main() == 0
    result = _result("sine.csv_8_llata_s0")
    assert result["variant"] == "llata" and result["seed"] == 0 and result["horizon"] == 8
    assert math.isfinite(result["mse"]) and result["mse"] > 0
    assert result["epochs"] == 2 and 1 <= result["best_epoch"] <= 2
    assert result["command"].endswith(" ".join(argv))
    assert result["git_revision"] and result["machine"].startswith(("cpu:", "cuda:"))
    assert "train.seed=0" in result["overrides"]
    before = (run.RESULTS / "sine.csv_8_llata_s0.json").read_bytes()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(run, "train_job", no_training)
    monkeypatch.setattr(run, "evaluate_job", no_training)
    assert run.main(["--params", str(matrix), "--only", "sine.csv:8:llata:0"]) == 0
    assert (run.RESULTS / "sine.csv_8_llata_s0.json").read_bytes() == before


def test_a_trained_model_is_scored_again_without_training(
    matrix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result lost after training (or a zero-shot cell) reuses the cell's saved model."""
    run.main(["--params", str(matrix), "--only", "sine.csv:8:llata-no-llm:1"])
    first = _result("sine.csv_8_llata-no-llm_s1")
    (run.RESULTS / "sine.csv_8_llata-no-llm_s1.json").unlink()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the saved model was trained again")

    monkeypatch.setattr(run, "train_job", no_training)
    cells = ["sine.csv:8:llata-no-llm:1", "sine.csv:8:llata-no-llm:1::sine.csv"]
    assert run.main(["--params", str(matrix), "--only", *cells]) == 0
    again = _result("sine.csv_8_llata-no-llm_s1")
    assert again["mse"] == pytest.approx(first["mse"], rel=1e-6)
    assert again["epochs"] == first["epochs"]
    zero_shot = _result("sine.csv_8_llata-no-llm_s1_to-sine.csv")
    assert zero_shot["zero_shot_to"] == "sine.csv"
    assert zero_shot["mse"] == pytest.approx(first["mse"], rel=1e-6)


def test_a_cell_made_by_another_recipe_is_neither_skipped_nor_reused(
    matrix: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["--params", str(matrix), "--only", "sine.csv:8:llata-no-llm:2"]
    assert run.main(argv) == 0
    result = run.RESULTS / "sine.csv_8_llata-no-llm_s2.json"
    before = result.read_bytes()
    # Another learning rate for every cell: the finished result no longer describes the cell.
    assert run.main([*argv, "--set", "train.lr=0.01"]) == 1
    assert "was produced with overrides" in caplog.text
    assert result.read_bytes() == before
    # With the result gone, the saved checkpoint is still another recipe's: not reused.
    result.unlink()
    caplog.clear()
    assert run.main([*argv, "--set", "train.lr=0.01"]) == 1
    assert "written for another configuration" in caplog.text
    assert not result.exists()
    assert run.main(argv) == 0  # the original recipe reuses its own model
    assert json.loads(result.read_text())["mse"] == pytest.approx(json.loads(before)["mse"])


def test_a_parked_run_resumes_on_a_machine_without_one(
    matrix: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`--park` copies a cell's checkpoint into the repository; a machine whose runs
    directory is empty resumes from it instead of training from scratch, and the finished
    cell deletes the parked copy."""
    monkeypatch.setattr(run, "PARKED", matrix.parent / "parked")
    argv = ["--params", str(matrix), "--only", "sine.csv:8:llata-no-llm:3"]
    assert run.main([*argv, "--park"]) == 1  # nothing trained yet
    assert "no checkpoint to park" in caplog.text
    assert run.main(argv) == 0
    first = _result("sine.csv_8_llata-no-llm_s3")
    assert run.main([*argv, "--park"]) == 0
    parked = run.PARKED / "sine.csv_8_llata-no-llm_s3" / "run"
    assert (parked / "checkpoint" / "state.json").is_file()
    # A fresh machine: no runs directory, no result; only the repository's parked run.
    shutil.rmtree(run.RUNS)
    (run.RESULTS / "sine.csv_8_llata-no-llm_s3.json").unlink()
    assert run.main(argv) == 0
    again = _result("sine.csv_8_llata-no-llm_s3")
    # The epochs are the parked ones (their own timings), not a new training's.
    assert again["val_mse_by_epoch"] == first["val_mse_by_epoch"]
    assert again["train_seconds"] == first["train_seconds"]
    assert again["mse"] == pytest.approx(first["mse"], rel=1e-6)
    assert not (run.PARKED / "sine.csv_8_llata-no-llm_s3").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ETTh1:96", "is not DATASET:H:VARIANT:SEED"),
        ("ETTh1:96:llata:2024:10:ETTm1:extra", "is not DATASET:H:VARIANT:SEED"),
        ("ETTh1:96:gpt4:2024", "unknown variant 'gpt4'"),
        ("ETTh1:ninety-six:llata:2024", "must be integers"),
        ("ETTh1:96:llata:2024:150", "must be in (0, 100]"),
    ],
)
def test_a_malformed_cell_is_refused_by_name(
    text: str, problem: str, matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        run.parse_cell(text)
    with pytest.raises(SystemExit) as stop:
        run.main(["--params", str(matrix), "--only", text])
    assert stop.value.code == 2
    assert problem in capsys.readouterr().err
    assert not run.RESULTS.exists()


def test_cell_specs_round_trip_to_keys() -> None:
    assert run.parse_cell("ETTh1:96:llata:2024").key == "ETTh1_96_llata_s2024"
    assert run.parse_cell("ETTh1:96:llata-random:2025:10").key == (
        "ETTh1_96_llata-random_s2025_fs10"
    )
    zero = run.parse_cell("ETTh1:96:dlinear:2026::ETTm1")
    assert zero.key == "ETTh1_96_dlinear_s2026_to-ETTm1"
    assert zero.train_key == "ETTh1_96_dlinear_s2026"


def _cell(
    dataset: str,
    horizon: int,
    variant: str,
    seed: int,
    mse: float,
    epochs: int,
    lookback: int | None = None,
    val: float | None = None,
) -> dict:
    """A finished full-data result; `lookback` None is a cell made before the axis."""
    cell = {
        "cell": f"{dataset}_{horizon}_{variant}_s{seed}"
        + (f"_L{lookback}" if lookback not in (None, 96) else ""),
        "dataset": dataset,
        "horizon": horizon,
        "variant": variant,
        "seed": seed,
        "few_shot_percent": 100.0,
        "zero_shot_to": None,
        "mse": mse,
        "mae": mse,
        "epochs": epochs,
        "best_epoch": epochs - 1,
        "seconds_per_epoch": 1.0,
        "train_seconds": float(epochs),
        "precision": "fp32",
    }
    if lookback is not None:
        cell["lookback"] = lookback
    if val is not None:
        cell["best_val_mse"] = val
    return cell


def test_the_llm_pairs_table_pairs_by_dataset_horizon_and_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(measurements, "TRAIN_COST", tmp_path / "absent.json")
    cells = [
        _cell("ETTh1", 96, "llata", 1, 0.40, 10),
        _cell("ETTh1", 96, "llata-no-llm", 1, 0.38, 5),
        _cell("ETTh1", 96, "llata", 2, 0.37, 10),
        _cell("ETTh1", 96, "llata-no-llm", 2, 0.38, 5),
        _cell("ETTh2", 192, "llata", 1, 0.50, 10),  # no LLM-free pair: left out
        {**_cell("ETTh1", 96, "llata-no-llm", 3, 0.1, 5), "few_shot_percent": 10.0},
    ]
    lines = accuracy_tables.llm_pairs_section(cells)
    rows = [line for line in lines if line.startswith("| ETTh")]
    assert len(rows) == 2
    assert "| +0.0200 |" in rows[0] and "| -0.0100 |" in rows[1]
    assert "| 0.369 |" in rows[0]  # CALF's published ETTh1-96
    assert rows[0].endswith("| — |")  # no cost table, no compute ratio
    summary = next(line for line in lines if line.startswith("2 pairs"))
    assert "lowered test MSE in 1 and raised it in 1" in summary
    assert "mean +0.0050" in summary
    assert "p = 1.00" in summary  # +0.02 and -0.01: every sign assignment is as extreme
    assert accuracy_tables.llm_pairs_section(cells[4:]) == []


def test_the_llm_pairs_table_pairs_only_cells_of_the_same_lookback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(measurements, "TRAIN_COST", tmp_path / "absent.json")
    cells = [
        _cell("ETTh1", 96, "llata", 1, 0.40, 10, lookback=336),
        _cell("ETTh1", 96, "llata-no-llm", 1, 0.38, 5),  # lookback 96 (no field): no pair
        _cell("ETTh1", 96, "llata", 2, 0.37, 10, lookback=512),
        _cell("ETTh1", 96, "llata-no-llm", 2, 0.36, 5, lookback=512),
    ]
    rows = [line for line in accuracy_tables.llm_pairs_section(cells) if line.startswith("| ETTh")]
    assert rows == [
        "| ETTh1 | 96 | 512 | 2 | 0.370 | 0.360 | +0.0100 | — | 10 (9) / 5 (4) | — |"
    ]  # CALF's published number is at lookback 96: not shown beside a lookback-512 pair
    assert accuracy_tables.llm_pairs_section(cells[:2]) == []


def _lookback_grid() -> list[dict]:
    """DLinear at four lookbacks: validation favours 336, test would favour 512."""
    return [
        _cell("ETTh1", 96, "dlinear", 1, 0.390, 6, val=0.660),  # made before `lookback`
        _cell("ETTh1", 96, "dlinear", 2, 0.380, 6, lookback=96, val=0.650),
        _cell("ETTh1", 96, "dlinear", 1, 0.385, 6, lookback=192, val=0.662),
        _cell("ETTh1", 96, "dlinear", 1, 0.395, 6, lookback=336, val=0.640),
        _cell("ETTh1", 96, "dlinear", 2, 0.391, 6, lookback=336, val=0.644),
        _cell("ETTh1", 96, "dlinear", 1, 0.360, 6, lookback=512, val=0.645),
        # the LLM-free model: only a lookback-96 cell from before validation was recorded
        _cell("ETTh1", 96, "llata-no-llm", 1, 0.386, 18),
        _cell("ETTh1", 96, "llata-no-llm", 1, 0.383, 12, lookback=336, val=0.670),
        # only lookback 96: not a lookback comparison, not in the section
        _cell("ETTh2", 96, "dlinear", 1, 0.309, 6, val=0.220),
    ]


def _table_rows(lines: list[str]) -> list[list[str]]:
    """The data rows of each markdown table in `lines`, table by table."""
    tables: list[list[str]] = []
    rows: list[str] | None = None
    for line in lines:
        if not line.startswith("|"):
            rows = None
        elif line.startswith("|---"):  # below a header: a table's rows follow
            rows = []
            tables.append(rows)
        elif rows is not None:
            rows.append(line)
    return tables


def test_validation_picks_the_lookback_and_test_is_only_reported() -> None:
    grid, summary = _table_rows(lookback_pick.lookback_section(_lookback_grid()))
    assert not any(r.startswith("| ETTh2") for r in grid + summary)  # lookback 96 only
    assert grid[:4] == [
        "| ETTh1 | 96 | dlinear | 96 | 1,2 | fp32 | 0.6550 ± 0.0071 | 0.3850 ± 0.0071 |  |",
        "| ETTh1 | 96 | dlinear | 192 | 1 | fp32 | 0.6620 | 0.3850 |  |",
        "| ETTh1 | 96 | dlinear | 336 | 1,2 | fp32 | 0.6420 ± 0.0028 | 0.3930 ± 0.0028 "
        "| **picked** |",
        "| ETTh1 | 96 | dlinear | 512 | 1 | fp32 | 0.6450 | 0.3600 |  |",
    ]
    # The LLM-free model's lookback-96 cell has no validation MSE: "-", and not pickable.
    assert grid[4:] == [
        "| ETTh1 | 96 | llata-no-llm | 96 | 1 | fp32 | - | 0.3860 |  |",
        "| ETTh1 | 96 | llata-no-llm | 336 | 1 | fp32 | 0.6700 | 0.3830 | **picked** |",
    ]
    # How firm the pick is: 512 runs up by 0.003 of validation MSE; on seed 1, the only seed
    # every dlinear lookback has, validation still picks 336 (0.640 < 0.645). Then the
    # pick's test MSE against lookback 96's, the difference paired by seed.
    assert summary == [
        "| ETTh1 | 96 | dlinear | 336 | 2 | 512 (+0.00300) | 1: 336 | 336 (seeds 1) "
        "| 0.3930 ± 0.0028 | 0.3850 ± 0.0071 | +0.0080 (2 seeds) |",
        "| ETTh1 | 96 | llata-no-llm | 336 | 1 | — | 1: 336 | the same (equal seeds) "
        "| 0.3830 | 0.3860 | -0.0030 (1 seed) |",
    ]
    assert lookback_pick.lookback_section(_lookback_grid()[-1:]) == []


def test_pick_lookback_breaks_ties_to_the_shorter_and_can_compare_common_seeds() -> None:
    by_lookback = {
        96: [_cell("ETTh1", 96, "dlinear", 1, 0.39, 6, val=0.65002)],
        336: [_cell("ETTh1", 96, "dlinear", 1, 0.30, 6, lookback=336, val=0.65000)],
        512: [
            _cell("ETTh1", 96, "dlinear", 1, 0.38, 6, lookback=512, val=0.66),
            _cell("ETTh1", 96, "dlinear", 2, 0.38, 6, lookback=512, val=0.60),
        ],
    }
    # Over every seed present 512 leads (mean 0.63, two seeds) ...
    chosen = lookback_pick.pick_lookback(by_lookback)
    assert chosen.pick == 512 and chosen.n == {96: 1, 336: 1, 512: 2}
    # ... on seed 1 alone 96 and 336 tie within VAL_TIE: the shorter one is picked.
    on_seed_1 = lookback_pick.pick_lookback(by_lookback, {1})
    assert on_seed_1.pick == 96 and on_seed_1.tied == [96, 336]
    # Test MSE (336's 0.30 is the best) never enters the choice.
    assert (
        lookback_pick.pick_lookback({96: [_cell("ETTh1", 96, "dlinear", 1, 0.3, 6)]}).pick is None
    )


def test_cells_at_other_lookbacks_stay_out_of_the_lookback_96_tables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for cell in _lookback_grid():
        (results / f"{cell['cell']}.json").write_text(json.dumps(cell))
    monkeypatch.setattr(render, "HERE", tmp_path)  # no NOTES.md there
    monkeypatch.setattr(render, "ACCURACY", results)
    monkeypatch.setattr(render, "OUT", tmp_path / "RESULTS.md")
    monkeypatch.setattr(render, "SHORT_TERM", tmp_path / "absent")
    for name in ("SPEED", "INFERENCE", "TRAIN_COST", "PROBE"):
        monkeypatch.setattr(measurements, name, tmp_path / "absent")
    monkeypatch.setattr(sys, "argv", ["render.py", "--no-plots"])
    assert render.main() == 0
    text = (tmp_path / "RESULTS.md").read_text()
    full = text.split("### Full training data", 1)[1].split("###", 1)[0]
    # Lookback 96 only: seeds 1 and 2 at 0.390 and 0.380, not 0.395/0.391/0.385/0.360.
    assert "| ETTh1 | 96 | dlinear | 1,2 | 0.385 ± 0.007 |" in full
    assert "| ETTh1 | 96 | llata-no-llm | 1 | 0.386 |" in full
    assert "### Lookback as a selection axis" in text


def test_sign_flip_p_is_exact() -> None:
    assert accuracy_tables.sign_flip_p([0.01] * 5) == pytest.approx(2 / 32)
    assert accuracy_tables.sign_flip_p([0.01, -0.01]) == 1.0
    # only (+,+,+) and (-,-,-) of the 8 assignments of (0.3, 0.1, 0.1) reach |sum| 0.5
    assert accuracy_tables.sign_flip_p([0.3, 0.1, 0.1]) == pytest.approx(2 / 8)
    # Past `exact_up_to` differences a fixed-seed sample of assignments: close to exact.
    many = [0.01] * 8 + [-0.004] * 4
    assert accuracy_tables.sign_flip_p(many, exact_up_to=8, samples=100_000) == pytest.approx(
        accuracy_tables.sign_flip_p(many), abs=0.01
    )
    with pytest.raises(ValueError, match="at least one"):
        accuracy_tables.sign_flip_p([])


def test_a_combination_of_two_lookbacks_is_chosen_on_validation(matrix: Path) -> None:
    from benchmarks.accuracy import ensemble
    from llata_core.combination import WEIGHT_GRID

    first = run.parse_cell("sine.csv:8:dlinear:0:L64")  # the other reads 32 rows
    second = run.parse_cell("sine.csv:8:dlinear:0")
    result = ensemble.combine(first, second, matrix)

    stored = json.loads(
        (run.RESULTS / "ensembles" / f"{result['cell']}.json").read_text(encoding="utf-8")
    )
    assert stored == json.loads(json.dumps(result))
    by_weight = {float(w): v for w, v in result["val_mse_by_weight"].items()}
    assert set(by_weight) == set(WEIGHT_GRID)
    # The weight is the validation's choice, and weights 1 and 0 are the members alone, so
    # the combination is never worse on validation than the better member.
    assert result["best_val_mse"] == min(by_weight.values())
    assert by_weight[result["weight_first"]] == result["best_val_mse"]
    members = result["member_scores"]
    assert math.isclose(by_weight[1.0], members[first.key]["val"], rel_tol=1e-6)
    assert math.isclose(by_weight[0.0], members[second.key]["val"], rel_tol=1e-6)
    assert result["n_windows"] == stored["n_windows"] > 0
    # The members' own result files stay run.py's to write.
    assert not (run.RESULTS / f"{first.key}.json").exists()


def test_a_combination_needs_members_of_one_dataset_and_seed(matrix: Path) -> None:
    from benchmarks.accuracy import ensemble

    with pytest.raises(ValueError, match="share the dataset, the horizon and the seed"):
        ensemble.combine(
            run.parse_cell("sine.csv:8:dlinear:0"), run.parse_cell("sine.csv:8:dlinear:1"), matrix
        )


def test_the_combination_table_reports_what_validation_prefers() -> None:
    def result(seed: int, val: float, test: float) -> dict:
        return {
            "dataset": "ETTh1",
            "horizon": 96,
            "variant": "ens_dlinear-L512+dlinear-L96",
            "seed": seed,
            "members": [f"ETTh1_96_dlinear_s{seed}_L512", f"ETTh1_96_dlinear_s{seed}"],
            "member_scores": {
                f"ETTh1_96_dlinear_s{seed}_L512": {"val": 0.60, "test": 0.40},
                f"ETTh1_96_dlinear_s{seed}": {"val": 0.70, "test": 0.39},
            },
            "weight_first": 0.5,
            "best_val_mse": val,
            "mse": test,
        }

    from benchmarks.combination import combination_section

    # The combination is best on test but not on validation: the member is preferred.
    [row] = [r for r in combination_section([result(1, 0.61, 0.30), result(2, 0.62, 0.31)])
             if r.startswith("| ETTh1")]  # fmt: skip
    assert "| dlinear-L512 + dlinear-L96 | 1,2 | 0.5, 0.5 |" in row
    assert row.endswith("| first |")
    assert combination_section([]) == []
