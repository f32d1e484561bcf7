"""The `llata` command line end to end on a tiny backbone and a small CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llata_core.cli import main
from tests.conftest import tiny_overrides


@pytest.fixture
def params(tmp_path: Path, sine_csv: Path) -> Path:
    raw = tiny_overrides("tiny-llama", data__dataset=str(sine_csv))
    raw["data"]["channels"] = ["c0", "c1", "c2"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_train_evaluate_forecast(
    tmp_path: Path, params: Path, sine_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    assert (
        main(
            [
                "train",
                "--params",
                str(params),
                "--set",
                "train.epochs=1",
                "--out",
                str(model),
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 1 and out["test_mse"] > 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["mse"] == pytest.approx(out["test_mse"])

    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--metrics-out",
                str(tmp_path / "m.json"),
                "--plot",
                str(tmp_path / "plot.png"),
            ]
        )
        == 0
    )
    scored = json.loads((tmp_path / "m.json").read_text())
    assert scored["mse"] == pytest.approx(metrics["mse"], rel=1e-6)
    assert (tmp_path / "plot.png").stat().st_size > 1000
    capsys.readouterr()

    assert (
        main(
            [
                "forecast",
                "--model",
                str(model),
                "--input",
                str(sine_csv),
                "--output",
                str(tmp_path / "fc.csv"),
                "--horizon",
                "10",
            ]
        )
        == 0
    )
    fc = pd.read_csv(tmp_path / "fc.csv")
    assert list(fc.columns) == ["date", "c0", "c1", "c2"] and len(fc) == 10
    last = pd.read_csv(sine_csv)["date"].iloc[-1]
    assert pd.Timestamp(fc["date"].iloc[0]) == pd.Timestamp(last) + pd.Timedelta(hours=1)


def test_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, params: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--params", str(params), "--set", "model.backbone=nope"]) == 2
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "missing")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert main(["train", "--params", str(params), "--set", "train.bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in (["train"], ["evaluate"], ["forecast"], ["backbone", "prepare"]):
        with pytest.raises(SystemExit) as exc:
            main([*cmd, "--help"])
        assert exc.value.code == 0
        assert "usage: llata" in capsys.readouterr().out
