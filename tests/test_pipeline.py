"""Pipeline tests without Prefect: params, `llata data pull`, the stage commands and DVC.

Real DVC (a temporary git + DVC project built from this repository's dvc.yaml, data.dvc
and .dvc/config), real Great Expectations and Feast, a tiny backbone. The end-to-end
`dvc repro` test here is marked slow (about three minutes on two busy cores); the fast
`test_dvc_graph_*` tests check the same wiring with DVC's own change detection, and
tests/test_dvc.py runs a reduced repro, push and pull in the default run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.config import Layout, load_pipeline_config, min_rows_for_split
from llata_core.cli import main
from llata_core.config import ConfigError
from llata_core.data import BENCHMARKS, Benchmark, split_borders
from llata_core.forecaster import read_artifact_record
from llata_core.jobs import provenance
from tests.conftest import SHARED_DATA, sine_frame

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC_PROJECT_FILES = (
    "dvc.yaml",
    "data.dvc",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    ".gitignore",
)
SINE_PIPELINE = {
    "dataset": "sine",
    "raw_data": "data/raw/series.csv",
    "series_id": "sine",
    "split": "ratio",
}
ETTH1 = BENCHMARKS["ETTh1"]


# --------------------------------------------------------------------------- helpers


def tiny_params(**pipeline: Any) -> dict[str, Any]:
    """This repository's params.yaml with a tiny backbone and short windows."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(input_size=32, horizon=8)
    raw["model"].update(
        backbone="tiny-llama", n_layers=2, n_principal=16, encoder_heads=4, encoder_ffn=64
    )
    raw["train"].update(
        batch_size=32,
        eval_batch_size=256,
        epochs=1,
        precision="fp32",
        seed=0,
        max_steps_per_epoch=3,
        max_eval_windows=64,
    )
    # The candidates keep their families and recipes, at the tests' short lookback.
    raw["pipeline"]["candidates"] = {
        name: [o for o in overrides if not o.startswith("data.input_size=")]
        for name, overrides in raw["pipeline"]["candidates"].items()
    }
    raw["pipeline"].update(pipeline)
    if raw["pipeline"]["dataset"] != "ETTh1":
        raw["pipeline"]["validation"]["channels"] = None
    return raw


def write_params(root: Path, raw: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def sine_workspace(root: Path, rows: int = 480, **pipeline: Any) -> Path:
    """A project root with tiny params and a small hourly sine series as raw data."""
    raw_params = tiny_params(**{**SINE_PIPELINE, **pipeline})
    raw_params["pipeline"]["validation"]["channels"] = ["c0", "c1", "c2"]
    params = write_params(root, raw_params)
    raw = root / SINE_PIPELINE["raw_data"]
    raw.parent.mkdir(parents=True, exist_ok=True)
    sine_frame(rows).to_csv(raw, index=False)
    return params


def dvc_project(root: Path, raw: dict[str, Any]) -> Path:
    """A git + DVC project with this repository's DVC files and the given params.

    The default remote is pointed at an empty folder beside it (`dvc remote modify --local`
    writes the same file), so no test reads or fills the user's remote.
    """
    for rel in DVC_PROJECT_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    (root / ".dvc/config.local").write_text(
        f"['remote \"llata\"']\n    url = {root.parent / 'dvc-remote'}\n"
    )
    params = write_params(root, raw)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return params


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=check,
        env=env,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


needs_mirror = pytest.mark.skipif(
    not (SHARED_DATA / "ETTh1.csv.gz").is_file(), reason="no ETTh1 mirror in ../shared/data"
)


# --------------------------------------------------------------------------- params


def test_quick_profile_and_overrides_apply_in_order() -> None:
    cfg = load_pipeline_config(REPO / "params.yaml", profile="quick")
    assert cfg.model.train.epochs == 1  # from pipeline.quick
    assert cfg.model.data.dataset == str(cfg.layout.training_frame)
    assert cfg.model.data.split == cfg.params.split == "ett_hour"
    assert cfg.model.model.backbone == "smollm2-135m"

    cfg = load_pipeline_config(
        REPO / "params.yaml",
        profile="quick",
        overrides=["train.epochs=3", "pipeline.registry.margin=0.05"],
    )
    assert cfg.model.train.epochs == 3  # the command line wins over the profile
    assert cfg.params.registry.margin == 0.05
    full = load_pipeline_config(REPO / "params.yaml")
    assert (
        full.model.train.epochs
        == yaml.safe_load((REPO / "params.yaml").read_text())["train"]["epochs"]
    )


def test_candidates_take_their_overrides_then_the_profile_then_the_command_line() -> None:
    cfg = load_pipeline_config(REPO / "params.yaml", profile="quick")
    assert list(cfg.candidates) == ["llata", "llata-no-llm", "dlinear"]
    dlinear = cfg.candidate("dlinear")
    assert dlinear.model.kind == "dlinear" and dlinear.train.lr_schedule == "halve"
    assert dlinear.train.epochs == 1  # the quick profile comes after the candidate's 10
    assert cfg.candidate("llata-no-llm").model.n_layers == 0
    assert all(c.data.dataset == str(cfg.layout.training_frame) for c in cfg.candidates.values())

    cfg = load_pipeline_config(
        REPO / "params.yaml",
        overrides=[
            "train.seed=7",
            "pipeline.candidates.long=[model.n_layers=0, data.input_size=336]",
        ],
    )
    assert {c.train.seed for c in cfg.candidates.values()} == {7}  # the command line: all
    assert cfg.candidate("long").data.input_size == 336
    assert cfg.max_input_size == max(c.data.input_size for c in cfg.candidates.values())
    assert cfg.candidate("dlinear").data.input_size == 512  # the lookback validation picked
    with pytest.raises(KeyError, match="no candidate 'nope'"):
        cfg.candidate("nope")
    with pytest.raises(ConfigError, match="candidate 'bad'"):
        load_pipeline_config(
            REPO / "params.yaml", overrides=["pipeline.candidates.bad=[model.n_layers=-1]"]
        )
    with pytest.raises(ConfigError, match="data/model/loss/train"):
        load_pipeline_config(
            REPO / "params.yaml", overrides=["pipeline.candidates.bad=[pipeline.x=1]"]
        )


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ({"raw_dat": "x.csv"}, "raw_dat"),
        ({"raw_data": "/abs/x.csv"}, "inside the project"),
        ({"split": "weekly"}, "split"),
        ({"schedule": {"cron": "0 3 * *"}}, "five fields"),
        ({"quick": ["pipeline.split=ratio"]}, "quick overrides"),
        ({"registry": {"margin": 1.5}}, "margin"),
    ],
)
def test_pipeline_section_is_validated_at_the_edge(
    tmp_path: Path, pipeline: dict[str, Any], message: str
) -> None:
    raw = tiny_params()
    raw["pipeline"].update(pipeline)
    with pytest.raises(ConfigError, match=message):
        load_pipeline_config(write_params(tmp_path, raw))


@pytest.mark.parametrize(
    ("rule", "input_size", "horizon"), [("ett_hour", 96, 96), ("ratio", 32, 8), ("ratio", 96, 96)]
)
def test_min_rows_is_the_shortest_frame_every_split_can_window(
    rule: str, input_size: int, horizon: int
) -> None:
    n = min_rows_for_split(rule, input_size, horizon)  # type: ignore[arg-type]
    window = input_size + horizon

    def fits(rows: int) -> bool:
        borders = split_borders(rows, input_size, rule)  # type: ignore[arg-type]
        return all(end - start >= window for start, end in borders.values())

    assert fits(n)
    if rule == "ratio":
        assert not fits(n - 1)
    else:
        assert n == 20 * 30 * 24  # ETT hourly: 12 + 4 + 4 months


# --------------------------------------------------------------------------- data pull


@needs_mirror
def test_data_pull_from_the_mirror_leaves_data_dvc_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(SHARED_DATA))
    root = tmp_path / "clone"
    params = dvc_project(root, tiny_params())
    before = (root / "data.dvc").read_bytes()
    assert dvc(root, "status", "--json", "data.dvc").stdout.strip() != "{}"  # data missing

    assert main(["data", "pull", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    raw = root / "data/raw/ETTh1.csv"
    assert sha256(raw) == ETTH1.sha256
    # No DNS here, so the canonical URL fails and the mirror answers; online, the URL would.
    assert "mirror" in out or "url" in out
    assert "dvc status data.dvc: unchanged" in out
    assert json.loads(dvc(root, "status", "--json", "data.dvc").stdout) == {}
    assert (root / "data.dvc").read_bytes() == before
    record = json.loads((root / "data/raw.provenance.json").read_text())
    assert record["sha256"] == ETTH1.sha256 and record["source"] in ("url", "mirror")

    # A second pull finds the verified file and touches nothing.
    mtime = raw.stat().st_mtime_ns
    assert main(["data", "pull", "--params", str(params)]) == 0
    assert raw.stat().st_mtime_ns == mtime


@needs_mirror
def test_data_pull_prefers_the_dvc_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(SHARED_DATA))
    root = tmp_path / "clone"
    params = dvc_project(root, tiny_params())
    assert main(["data", "pull", "--params", str(params)]) == 0
    dvc(root, "push", "data.dvc")  # to the default remote (dvc_project's folder)
    # A fresh machine: no data, no cache, no mirror; only the remote has the bytes.
    shutil.rmtree(root / "data")
    shutil.rmtree(root / ".dvc/cache")
    monkeypatch.delenv("LLATA_DATA_MIRROR")
    capsys.readouterr()

    assert main(["data", "pull", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "remote (dvc remote)" in out
    assert sha256(root / "data/raw/ETTh1.csv") == ETTH1.sha256
    assert json.loads(dvc(root, "status", "--json", "data.dvc").stdout) == {}


@pytest.fixture
def local_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A benchmark entry whose canonical URL is a local file:// URL, plus a mirror dir.

    Only the location changes: the fetch (urllib), checksum check and fallback order are
    the real code path.
    """
    frame_bytes = sine_frame(480).to_csv(index=False).encode()
    served = tmp_path / "served" / "series.csv"
    served.parent.mkdir()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "series.csv.gz").write_bytes(gzip.compress(frame_bytes))
    digest = hashlib.sha256(frame_bytes).hexdigest()
    monkeypatch.setitem(
        BENCHMARKS, "sine", Benchmark("series.csv", served.as_uri(), digest, "ratio", "h")
    )
    monkeypatch.setenv("LLATA_DATA_MIRROR", str(mirror))
    return {"bytes": frame_bytes, "served": served, "mirror": mirror, "sha256": digest}


def test_data_pull_order_url_then_mirror_then_synthetic(
    tmp_path: Path,
    local_benchmark: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = write_params(tmp_path / "ws", tiny_params(**SINE_PIPELINE))
    raw = tmp_path / "ws/data/raw/series.csv"
    record = tmp_path / "ws/data/raw.provenance.json"

    # 1. The canonical URL answers with the right bytes.
    local_benchmark["served"].write_bytes(local_benchmark["bytes"])
    assert main(["data", "pull", "--params", str(params)]) == 0
    assert json.loads(record.read_text())["source"] == "url"
    assert sha256(raw) == local_benchmark["sha256"]

    # 2. The URL serves corrupt bytes: they are refused and the mirror answers.
    local_benchmark["served"].write_bytes(local_benchmark["bytes"][:-40])
    assert main(["data", "pull", "--params", str(params), "--force"]) == 0
    assert json.loads(record.read_text())["source"] == "mirror"
    assert sha256(raw) == local_benchmark["sha256"]

    # 3. A forced refresh that reaches nothing keeps the verified file it has.
    local_benchmark["served"].unlink()
    monkeypatch.delenv("LLATA_DATA_MIRROR")
    capsys.readouterr()
    assert main(["data", "pull", "--params", str(params), "--force"]) == 1
    assert "kept the existing" in capsys.readouterr().err
    assert sha256(raw) == local_benchmark["sha256"]

    # 4. Nothing answers, no file, synthetic data refused: the error names every source.
    raw.unlink()
    assert main(["data", "pull", "--params", str(params)]) == 1  # generated data: not unasked
    err = capsys.readouterr().err
    assert "not available" in err and "series.csv" in err and "LLATA_DATA_MIRROR" in err
    assert not raw.exists()

    # 5. Nothing answers, no file, generated data asked for: said loudly and recorded.
    assert main(["data", "pull", "--params", str(params), "--allow-synthetic"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    assert json.loads(record.read_text())["source"] == "synthetic"


def test_synthetic_data_is_recorded_in_the_model_metadata(
    tmp_path: Path, local_benchmark: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.selection_stages import train_stage
    from flows.stages import features_stage

    monkeypatch.delenv("LLATA_DATA_MIRROR")  # and the URL serves nothing
    params = write_params(tmp_path / "ws", tiny_params(**SINE_PIPELINE))
    assert main(["data", "pull", "--params", str(params), "--allow-synthetic"]) == 0
    cfg = load_pipeline_config(params)
    features = features_stage(cfg)
    assert features.lineage["synthetic_data"] is True
    assert features.lineage["data_lineage"]["synthetic"] is True
    assert features.retrieval == "offline_asof"  # 17,420 rows: beyond pit_max_rows
    train_stage(cfg)
    metadata = read_artifact_record(cfg.layout.model_dir).metadata
    assert metadata["synthetic_data"] is True
    assert metadata["data_source"] == "synthetic"
    assert metadata["raw_data_source"] == "synthetic"


def test_runner_shares_the_cores_among_the_candidates() -> None:
    from flows.params import RunnerParams

    assert RunnerParams().shares(3, cores=2) == (2, 1)  # two at once, one thread each
    assert RunnerParams().shares(2, cores=16) == (2, 8)
    assert RunnerParams(max_workers=1).shares(3, cores=2) == (1, 2)
    assert RunnerParams(kind="thread").shares(3, cores=2) == (2, None)  # one process
    assert RunnerParams(kind="dask", address="tcp://x:8786").shares(3, cores=2)[1] is None


def test_train_stage_adds_the_combination_of_the_two_best_and_selects_by_the_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    import torch

    from flows.selection_stages import select_stage, train_stage
    from flows.stages import features_stage
    from llata_core import jobs
    from llata_core.forecaster import Forecaster
    from llata_core.selection import select_candidate

    dlinear = ["model.kind=dlinear", "loss.task=mse", "train.lr=0.005", "train.epochs=3"]
    candidates = {"dlinear-48": [*dlinear, "data.input_size=48"], "dlinear": dlinear}
    params = sine_workspace(tmp_path / "ws", candidates=candidates)
    cfg = load_pipeline_config(params)
    features_stage(cfg)
    # Each candidate trains with the torch threads the flow's runner gives it (bf16 sums
    # round by thread count), and the stage leaves the process's setting as it found it.
    threads_seen: list[int] = []
    real = jobs.train_job

    def train_and_note_threads(*args: Any, **kwargs: Any) -> Any:
        threads_seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs, "train_job", train_and_note_threads)
    before = torch.get_num_threads()
    selection = train_stage(cfg)
    expected = cfg.params.selection.runner.shares(2, os.cpu_count() or 1)[1]
    assert threads_seen == [expected or before] * 2 and torch.get_num_threads() == before
    *singles, combo = selection.candidates
    first, second = sorted(singles, key=lambda c: c.val_score)
    assert [c.name for c in singles] == ["dlinear-48", "dlinear"]
    assert combo.name == f"{first.name}+{second.name}" and combo.model_kind == "combination"
    # Its score is the validation split's choice of weight (the members alone are on the
    # grid); its cost is both members'.
    assert combo.val_score <= first.val_score
    assert combo.input_size == 48 and combo.overrides == ()
    # The Feast context window serves every candidate (the longest lookback), so it holds
    # the combination's longest member's rows too.
    assert cfg.max_input_size == combo.input_size
    assert combo.train_seconds == pytest.approx(first.train_seconds + second.train_seconds)
    assert combo.parameters == first.parameters + second.parameters
    assert combo.serving_ms_per_window == pytest.approx(
        first.serving_ms_per_window + second.serving_ms_per_window
    )
    fc = Forecaster.load(cfg.root / combo.artifact)
    assert combo.parameters == sum(p.numel() for p in fc.model.parameters())  # what it serves
    assert fc.describe()["kind"] == "combination" and fc.input_size == 48
    assert [m["name"] for m in fc.describe()["members"]] == [first.name, second.name]
    assert fc.metadata["candidate"] == combo.name
    # One rule chooses among all of them, on validation: test scores never move it.
    rule = select_candidate(selection.candidates, cfg.params.selection.tolerance)
    assert selection.winner == rule.winner
    flipped = [replace(c, test_score=-(c.test_score or 0.0)) for c in selection.candidates]
    assert select_candidate(flipped, cfg.params.selection.tolerance).winner == rule.winner
    assert read_artifact_record(cfg.layout.model_dir).metadata["candidate"] == selection.winner
    assert (cfg.layout.run_dir / "history.jsonl").is_file()
    # Within the tolerance the cheaper single model wins, by the same rule.
    level = replace(combo, val_score=first.val_score * 0.999)
    assert select_candidate([*singles, level], 0.01).winner != combo.name
    assert select_candidate([*singles, level], 0.0).winner == combo.name

    off = load_pipeline_config(params, overrides=["pipeline.selection.combine=false"])
    assert [c.name for c in select_stage(off, list(singles)).candidates] == [
        "dlinear-48",
        "dlinear",
    ]


# --------------------------------------------------------------------------- stages


def corrupt(raw: Path) -> None:
    """Break the raw file three ways: a repeated timestamp, text in a channel, NaNs."""
    frame = pd.read_csv(raw, dtype={"date": str})
    frame.loc[10, "date"] = frame.loc[9, "date"]
    frame["c1"] = frame["c1"].astype(object)
    frame.loc[20, "c1"] = "oops"
    frame.loc[30:80, "c2"] = np.nan
    frame.to_csv(raw, index=False)


def test_validate_command_names_the_failed_expectations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = sine_workspace(tmp_path)
    assert main(["validate", "--params", str(params)]) == 0
    report = json.loads((tmp_path / "reports/validation/validation.json").read_text())
    assert report["success"] is True
    assert (tmp_path / "reports/validation/data_docs/index.html").is_file()

    corrupt(tmp_path / "data/raw/series.csv")
    capsys.readouterr()
    assert main(["validate", "--params", str(params)]) == 1
    err = capsys.readouterr().err
    for check in ("timestamp_unique", "numeric_channel", "nan_share"):
        assert check in err
    assert "on 'c1'" in err  # the text channel is named
    assert "index 10" in err  # and the repeated timestamp's row is shown
    report = json.loads((tmp_path / "reports/validation/validation.json").read_text())
    assert report["success"] is False
    # The features stage refuses the same frame by itself: nothing reaches Feast.
    assert main(["features", "--params", str(params)]) == 1
    assert not (tmp_path / "artifacts/feature_repo").exists()


def test_both_training_frame_retrievals_agree_with_the_raw_data(tmp_path: Path) -> None:
    from flows.stages import features_stage

    params = sine_workspace(tmp_path, rows=300)
    exact = features_stage(load_pipeline_config(params))
    assert exact.retrieval == "point_in_time"
    point_in_time = pd.read_parquet(exact.training_frame)
    asof = features_stage(
        load_pipeline_config(params, overrides=["pipeline.features.pit_max_rows=10"])
    )
    assert asof.retrieval == "offline_asof"
    offline = pd.read_parquet(asof.training_frame)
    pd.testing.assert_frame_equal(point_in_time, offline)

    raw = pd.read_csv(tmp_path / "data/raw/series.csv", parse_dates=["date"])
    assert list(offline.columns) == list(raw.columns)
    np.testing.assert_allclose(offline[["c0", "c1", "c2"]], raw[["c0", "c1", "c2"]])
    assert (offline["date"].to_numpy() == raw["date"].to_numpy()).all()
    lineage = json.loads((tmp_path / "artifacts/features/lineage.json").read_text())
    assert lineage["training_frame_sha256"] == sha256(asof.training_frame)
    assert lineage["synthetic_data"] is False


def test_loss_curve_plot(tmp_path: Path) -> None:
    from llata_core.jobs import plot_loss_curve

    entry = {"train_loss": 1.0, "task_loss": 0.5, "val_mse": 0.9, "val_mae": 0.7}
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps({"epoch": e, **entry}) + "\n" for e in (1, 2, 3)))
    png = plot_loss_curve(history, tmp_path / "plots" / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history.write_text("")
    with pytest.raises(ValueError, match="no epochs"):
        plot_loss_curve(history, tmp_path / "empty.png")


# --------------------------------------------------------------------------- DVC wiring


def resolved_dvc_stages(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages with `${...}` filled from its vars and params (DVC's templating,
    simplified)."""

    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    values = {k: v for entry in dvc_yaml.get("vars", []) for k, v in entry.items()} | params

    def lookup(dotted: str) -> str:
        node: Any = values
        for key in dotted.split("."):
            node = node[key]
        return str(node)

    text = re.sub(r"\$\{([^}]+)\}", lambda m: lookup(m.group(1)), (REPO / "dvc.yaml").read_text())
    return yaml.safe_load(text)["stages"]


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_dvc_yaml_declares_the_layout_and_reads_only_existing_params() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = resolved_dvc_stages(params)
    assert list(stages) == ["validate", "features", "backbone", "train", "evaluate"]
    layout = Layout.under(Path("."), load_pipeline_config(REPO / "params.yaml").params)

    def rel(path: Path) -> str:
        return str(path)

    outs = {name: _paths(s.get("outs", [])) for name, s in stages.items()}
    assert outs["validate"] == [rel(layout.validation_dir)]
    assert outs["features"] == [rel(layout.feature_repo), rel(layout.features_dir)]
    assert outs["backbone"] == [rel(layout.backbone_stamp)]
    assert outs["train"] == [
        rel(layout.model_dir),
        rel(layout.run_dir),
        rel(layout.candidates_dir),
        rel(layout.selection),
    ]
    assert _paths(stages["evaluate"]["metrics"]) == [rel(layout.metrics)]
    assert set(_paths(stages["evaluate"]["plots"])) == {
        rel(layout.loss_plot),
        rel(layout.forecast_plot),
    }
    for name, stage in stages.items():
        assert stage["cmd"].startswith("llata "), name
        for key in stage.get("params", []):
            node: Any = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{name}: {key} not in params"
                node = node[part]
    # Only train (and evaluate, through train's outputs) may read the training recipe.
    for name in ("validate", "features", "backbone"):
        assert not [
            k for k in stages[name].get("params", []) if k.split(".")[0] in ("train", "loss")
        ]


@needs_mirror
def test_dvc_graph_reruns_only_what_a_change_touches(tmp_path: Path) -> None:
    """DVC's own change detection on this dvc.yaml, without running the stages.

    Every output is stubbed and committed to dvc.lock; `dvc repro --dry` must then run
    nothing, only `train` after a training parameter changes (evaluate follows train's new
    outputs in a real run; see the slow test), and validate + features after a data
    threshold changes.
    """
    root = tmp_path / "clone"
    params = dvc_project(root, tiny_params())
    raw = root / "data/raw/ETTh1.csv"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(gzip.decompress((SHARED_DATA / "ETTh1.csv.gz").read_bytes()))
    layout = Layout.under(root, load_pipeline_config(params).params)
    for directory in (layout.validation_dir, layout.feature_repo, layout.features_dir):
        directory.mkdir(parents=True, exist_ok=True)
    for stub in (
        layout.validation_dir / "validation.json",
        layout.feature_repo / "feature_store.yaml",
        layout.training_frame,
        layout.backbone_stamp,
        layout.model_dir / "metrics.json",
        layout.run_dir / "history.jsonl",
        layout.candidate_dir("llata") / "model" / "metrics.json",
        layout.selection,
        layout.metrics,
        layout.forecast_plot,
        layout.loss_plot,
    ):
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("{}")
    dvc(root, "commit", "--force")

    def would_run() -> list[str]:
        out = dvc(root, "repro", "--dry").stdout
        return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running")]

    assert would_run() == []
    text = params.read_text()
    params.write_text(text.replace("lr: 0.0005", "lr: 0.001"))
    assert would_run() == ["train"]
    params.write_text(text.replace("max_nan_fraction: 0.01", "max_nan_fraction: 0.02"))
    assert would_run() == ["validate", "features"]
    params.write_text(text.replace("n_principal: 16", "n_principal: 8"))
    assert would_run() == ["backbone", "train"]


def tree(root: Path) -> set[str]:
    """Files under artifacts/ and reports/, with GX's per-run folder names normalised."""
    import re

    files = set()
    for top in ("artifacts", "reports"):
        for path in (root / top).rglob("*"):
            if path.is_file():
                rel = str(path.relative_to(root))
                files.add(re.sub(r"/\d{8}T\d{6}\.\d+Z/", "/<run>/", rel))
    return files


@pytest.mark.slow
@needs_mirror
def test_dvc_repro_end_to_end_and_same_layout_as_the_flow(tmp_path: Path) -> None:
    """From a fresh clone: pull, `dvc repro` runs everything, a second does nothing, a
    training parameter reruns train and evaluate only; the Prefect flow on the same params
    leaves the same files."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "LLATA_DATA_MIRROR": str(SHARED_DATA),
        "DVC_NO_ANALYTICS": "1",
    }
    root = tmp_path / "clone"
    params = dvc_project(root, tiny_params())
    subprocess.run(["llata", "data", "pull"], cwd=root, env=env, check=True)

    def repro() -> list[str]:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        return [line.split("'")[1] for line in done.stdout.splitlines() if "Running stage" in line]

    assert repro() == ["validate", "features", "backbone", "train", "evaluate"]
    assert repro() == []
    params.write_text(params.read_text().replace("lr: 0.0005", "lr: 0.001"))
    assert repro() == ["train", "evaluate"]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert metrics["mse"] > 0 and metrics["split"] == "test"
    assert json.loads(dvc(root, "status", "--json").stdout) == {}
    dvc_tree = tree(root)

    flow_root = tmp_path / "flow"
    shutil.copytree(root, flow_root, ignore=shutil.ignore_patterns("artifacts", "reports"))
    flow_env = {
        **env,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    flow_env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        ["llata", "pipeline", "run", "--profile", "full"],
        cwd=flow_root,
        env=flow_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert tree(flow_root) == dvc_tree


def test_provenance_records_the_command_that_reruns_a_module(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/abs/path/bench.py", "--out", "a b.json"])
    record = provenance("benchmarks.inference")
    assert record["command"] == f"{sys.executable} -m benchmarks.inference --out 'a b.json'"
    assert provenance()["command"] == f"{sys.executable} /abs/path/bench.py --out 'a b.json'"
    assert record["machine"].startswith(("cpu:", "cuda:"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["finished_at"])
