"""Registry tests against BentoML's real model store in a temporary BENTOML_HOME.

Code tests (no model is trained): artifacts are small dummy directories with a correct
manifest; the registry never looks inside the weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pytest
from bentoml._internal.models import ModelStore
from bentoml._internal.utils.analytics import usage_stats

import llata_core.forecaster as forecaster_mod
from llata_core.forecaster import verify_manifest
from serving import registry_cli
from serving.registry import (
    ArtifactError,
    PromotionError,
    Registry,
    RegistryError,
    VersionNotFoundError,
    stored_mse_scorer,
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private BENTOML_HOME, no telemetry, and a private temp dir for BentoML's staging."""
    home = tmp_path / "bentoml"
    monkeypatch.setenv("BENTOML_HOME", str(home))
    # BentoML posts a usage event on every models.create; the switch is read once per process.
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "true")
    usage_stats.do_not_track.cache_clear()
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    return home


def make_artifact(
    root: Path, mse: float, *, mae: float | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Writes a dummy artifact directory with a correct manifest."""
    root.mkdir(parents=True)
    metrics = {"mse": mse, "mae": mse if mae is None else mae, **(extra or {})}
    contents = {
        "config.json": json.dumps({"input_size": 8, "horizon": 4}).encode(),
        "model.safetensors": os.urandom(64),
        "scaler.json": json.dumps({"mean": [0.0], "std": [1.0]}).encode(),
        "metrics.json": json.dumps(metrics).encode(),
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    manifest = {
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


REAL_LINEAGE = {
    "dataset": "ETTh1",
    "series_id": "ETTh1",
    "channels": ["HUFL", "OT"],
    "frequency": "h",
    "synthetic": False,
}


def register(
    reg: Registry,
    tmp: Path,
    name: str,
    mse: float,
    split: str = "split-a",
    lineage: dict[str, Any] | None = None,
    targets: str | None = None,
) -> str:
    meta: dict[str, Any] = {
        "params": {"lr": 1e-3, "backbone": "tiny"},
        "data_hash": "d" * 8,
        "git_revision": "0123abc",
        "eval_split_hash": split,
    }
    if targets is not None:  # what the scores score, whatever the lookback
        meta["eval_targets_hash"] = targets
    if lineage is not None:
        meta["data_lineage"] = lineage
    return reg.register(make_artifact(tmp / name, mse), metadata=meta)


def metrics_mse(path: Path) -> float:
    """A scorer standing in for evaluation: reads the stored metrics.json."""
    return float(json.loads((path / "metrics.json").read_text())["mse"])


def slow_metrics_mse(path: Path) -> float:
    time.sleep(0.2)  # make racing promotions overlap: both score before either writes
    return metrics_mse(path)


def aliases_json(reg: Registry) -> dict[str, Any]:
    return json.loads(reg.aliases_path.read_text())


def replay(history: list[dict[str, Any]]) -> tuple[str | None, str | None, int]:
    """Rebuilds (production, previous, revision) from the history alone."""
    production = previous = None
    revision = 0
    for entry in history:
        assert entry["production_before"] == production, entry
        if entry["action"] in ("promote", "rollback"):
            production, previous = entry["production_after"], entry["previous_after"]
            revision += 1
            assert entry["revision"] == revision
    return production, previous, revision


def test_register_list_show(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    first = register(reg, tmp_path, "a", 1.0)
    second = register(reg, tmp_path, "b", 0.5)

    versions = reg.list_versions()
    assert [v.tag for v in versions] == [first, second]  # by creation time
    info = reg.get(first)
    assert info.path.is_relative_to(home / "models")
    assert info.metrics == {"mse": 1.0, "mae": 1.0}
    assert info.metadata["git_revision"] == "0123abc"
    assert info.metadata["params"] == {"lr": 1e-3, "backbone": "tiny"}
    assert "registered_at" in info.metadata
    assert info.aliases == ()
    verify_manifest(info.path)  # the stored copy is a complete artifact
    # Same version through the real BentoML API, by bare version and by prefix.
    store = ModelStore(home / "models")
    assert bentoml.models.get(first, _model_store=store).info.metadata["data_hash"] == "d" * 8
    assert reg.get(info.version).tag == first
    assert reg.get(info.version[:12]).tag == first
    with pytest.raises(VersionNotFoundError):
        reg.get("nosuchversion")
    with pytest.raises(RegistryError, match="not set"):
        reg.get("production")
    assert reg.production() is None


def test_tampered_artifact_rejected(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    art = make_artifact(tmp_path / "a", 1.0)
    (art / "config.json").write_text('{"input_size": 9}')
    with pytest.raises(ArtifactError, match="config.json"):
        reg.register(art, metadata={})
    art2 = make_artifact(tmp_path / "b", 1.0)
    (art2 / "scaler.json").unlink()
    with pytest.raises(ArtifactError, match="scaler.json"):
        reg.register(art2, metadata={})
    with pytest.raises(ValueError, match="git_revision"):
        reg.register(make_artifact(tmp_path / "c", 1.0), metadata={"git_revision": None})
    assert reg.list_versions() == []


def test_manifest_problems_name_the_file(tmp_path: Path) -> None:
    assert ArtifactError is forecaster_mod.ArtifactError  # one error, re-exported
    art = make_artifact(tmp_path / "a", 1.0)
    manifest = json.loads((art / "manifest.json").read_text())

    def with_files(files: Any) -> None:
        (art / "manifest.json").write_text(json.dumps({"files": files}))

    with_files({**manifest["files"], "../outside": "0" * 64})
    with pytest.raises(ArtifactError, match=r"invalid file name '\.\./outside' in manifest"):
        verify_manifest(art)
    with_files({**manifest["files"], "extra.bin": "0" * 64})
    with pytest.raises(ArtifactError, match=r"extra\.bin is missing \(listed in manifest"):
        verify_manifest(art)
    with_files({k: v for k, v in manifest["files"].items() if k != "scaler.json"})
    with pytest.raises(ArtifactError, match="scaler.json is not listed in manifest.json"):
        verify_manifest(art)
    with_files(["config.json"])
    with pytest.raises(ArtifactError, match="manifest.json must be"):
        verify_manifest(art)
    (art / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        verify_manifest(art)
    with_files(manifest["files"])
    assert verify_manifest(art) == manifest["files"]
    with pytest.raises(ArtifactError, match="artifact format None is not 1"):
        forecaster_mod.verify_artifact(art)  # complete, but not a Forecaster artifact


def test_failed_registration_leaves_no_model(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry()
    calls = []
    real_copy = shutil.copy2

    def failing_copy(src: Path, dst: Path) -> object:
        calls.append(Path(src).name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copy2", failing_copy)  # the disk fills on the third file
    with pytest.raises(OSError, match="No space left"):
        reg.register(make_artifact(tmp_path / "a", 1.0), metadata={})
    assert len(calls) == 3
    assert reg.list_versions() == []
    name_dir = home / "models" / "llata-forecaster"
    assert not name_dir.exists() or not any(p.is_dir() for p in name_dir.iterdir())
    assert list((tmp_path / "staging").iterdir()) == []  # staging removed, not left to GC


def test_first_promotion_without_production(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    tag = register(reg, tmp_path, "a", 1.0)
    decision = reg.promote(tag, score=metrics_mse, margin=0.05)
    assert decision.promoted
    assert decision.production_before is None
    assert decision.candidate_mse == 1.0
    assert reg.production().tag == tag  # type: ignore[union-attr]
    assert reg.production_tag() == tag
    assert aliases_json(reg)["previous"] is None
    assert reg.get("production").aliases == ("production",)
    assert [h["action"] for h in reg.history()] == ["promote"]


def test_better_candidate_promoted_sets_previous(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    old = register(reg, tmp_path, "a", 1.0)
    new = register(reg, tmp_path, "b", 0.5)
    reg.promote(old, score=metrics_mse, margin=0.05)
    decision = reg.promote(new, score=metrics_mse, margin=0.05)
    assert decision.promoted
    assert (decision.candidate_mse, decision.production_mse) == (0.5, 1.0)
    assert decision.production_before == old
    assert reg.get("production").tag == new
    assert reg.get("previous").tag == old
    assert replay(reg.history())[:2] == (new, old)


def test_worse_candidate_rejected_production_untouched(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    prod = register(reg, tmp_path, "a", 0.5)
    worse = register(reg, tmp_path, "b", 0.8)
    reg.promote(prod, score=metrics_mse, margin=0.0)
    before = reg.aliases_path.read_bytes()
    decision = reg.promote(worse, score=metrics_mse, margin=0.0)
    assert not decision.promoted
    assert reg.aliases_path.read_bytes() == before
    last = reg.history()[-1]
    assert last["action"] == "reject"
    assert (last["candidate_mse"], last["production_mse"]) == (0.8, 0.5)
    assert last["production_after"] == prod
    assert "0.8" in last["reason"] and "0.5" in last["reason"]


@pytest.mark.parametrize(("cand_mse", "promoted"), [(0.96, False), (0.95, False), (0.94, True)])
def test_margin_respected(home: Path, tmp_path: Path, cand_mse: float, promoted: bool) -> None:
    reg = Registry()
    reg.promote(register(reg, tmp_path, "a", 1.0), score=metrics_mse, margin=0.05)
    cand = register(reg, tmp_path, "b", cand_mse)
    assert reg.promote(cand, score=metrics_mse, margin=0.05).promoted is promoted
    assert (reg.get("production").tag == cand) is promoted


def test_scorer_raising_leaves_aliases_untouched(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    prod = register(reg, tmp_path, "a", 1.0)
    cand = register(reg, tmp_path, "b", 0.1)
    reg.promote(prod, score=metrics_mse, margin=0.0)
    before, history_before = reg.aliases_path.read_bytes(), reg.history()
    prod_path = reg.get(prod).path

    def broken(path: Path) -> float:
        if path == prod_path:
            raise RuntimeError("evaluation split unavailable")
        return metrics_mse(path)

    with pytest.raises(PromotionError, match="production") as info:
        reg.promote(cand, score=broken, margin=0.0)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(PromotionError, match="nan"):
        reg.promote(cand, score=lambda _: float("nan"), margin=0.0)
    assert reg.aliases_path.read_bytes() == before
    assert reg.history() == history_before


def test_rollback_restores_previous(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    a = register(reg, tmp_path, "a", 1.0)
    with pytest.raises(RegistryError, match="previous"):
        reg.rollback()
    reg.promote(a, score=metrics_mse, margin=0.0)
    b = register(reg, tmp_path, "b", 0.5)
    reg.promote(b, score=metrics_mse, margin=0.0)
    decision = reg.rollback()
    assert (decision.candidate, decision.production_before) == (a, b)
    assert (reg.get("production").tag, reg.get("previous").tag) == (a, b)
    assert reg.history()[-1]["action"] == "rollback"
    production, previous, revision = replay(reg.history())
    assert (production, previous, revision) == (a, b, aliases_json(reg)["revision"])


def test_alias_to_deleted_version_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    tag = register(reg, tmp_path, "a", 1.0)
    reg.promote(tag, score=metrics_mse, margin=0.0)
    with pytest.raises(RegistryError, match="refusing to delete"):
        reg.delete(tag)
    # Deleted behind the registry's back, through BentoML itself.
    bentoml.models.delete(tag, _model_store=ModelStore(home / "models"))
    with pytest.raises(VersionNotFoundError, match="production.*no longer in the model store"):
        reg.get("production")
    with pytest.raises(VersionNotFoundError):
        reg.production()


def test_production_moving_while_scoring_is_rescored(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    p = register(reg, tmp_path, "p", 1.0)
    a = register(reg, tmp_path, "a", 0.5)
    b = register(reg, tmp_path, "b", 0.6)
    reg.promote(p, score=metrics_mse, margin=0.0)
    scored: list[float] = []

    def racing(path: Path) -> float:
        mse = metrics_mse(path)
        scored.append(mse)
        if len(scored) == 1:  # another operator promotes A while B is being evaluated
            Registry().promote(a, score=metrics_mse, margin=0.0)
        return mse

    decision = reg.promote(b, score=racing, margin=0.0)
    # B beat P but not A, which became production meanwhile: judged against A.
    assert not decision.promoted
    assert decision.production_before == a
    assert decision.production_mse == 0.5
    assert scored == [0.6, 1.0, 0.5]
    assert reg.get("production").tag == a


def _promote_worker(candidate: str, barrier: Any, results: Any) -> None:
    reg = Registry()  # BENTOML_HOME comes from the parent's environment
    barrier.wait(timeout=60)
    decision = reg.promote(candidate, score=slow_metrics_mse, margin=0.05)
    results.put(dataclasses.asdict(decision))


def _check_race_outcome(reg: Registry, p: str, a: str, b: str, decisions: list[dict]) -> None:
    aliases = aliases_json(reg)  # parses: never a torn file
    history = reg.history()
    assert len(history) == 3 and len(decisions) == 2
    # B (0.4) beats both P (1.0) and A (0.5), so whatever the order, B ends in production.
    assert aliases["production"] == b
    assert aliases["previous"] in (a, p)
    assert replay(history) == (aliases["production"], aliases["previous"], aliases["revision"])


def test_racing_promotions_in_processes(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    p = register(reg, tmp_path, "p", 1.0)
    a = register(reg, tmp_path, "a", 0.5)
    b = register(reg, tmp_path, "b", 0.4)
    reg.promote(p, score=metrics_mse, margin=0.05)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_worker, args=(c, barrier, results)) for c in (a, b)]
    for proc in procs:
        proc.start()
    decisions = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    _check_race_outcome(reg, p, a, b, decisions)


def test_racing_promotions_in_threads(home: Path, tmp_path: Path) -> None:
    reg = Registry()
    p = register(reg, tmp_path, "p", 1.0)
    a = register(reg, tmp_path, "a", 0.5)
    b = register(reg, tmp_path, "b", 0.4)
    reg.promote(p, score=metrics_mse, margin=0.05)
    barrier = threading.Barrier(2)
    decisions: list[dict] = []
    errors: list[BaseException] = []

    def worker(candidate: str) -> None:
        try:
            barrier.wait(timeout=10)
            decision = Registry().promote(candidate, score=slow_metrics_mse, margin=0.05)
            decisions.append(dataclasses.asdict(decision))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(c,)) for c in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    _check_race_outcome(reg, p, a, b, decisions)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = registry_cli.main(["registry", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = Registry()
    p = register(reg, tmp_path, "p", 1.0)
    a = register(reg, tmp_path, "a", 0.5)
    other_split = register(reg, tmp_path, "c", 0.1, split="split-b")

    code, out, _ = run_cli(capsys, "promote", p, "--margin", "0.05")
    assert code == 0 and json.loads(out)["promoted"]
    code, out, _ = run_cli(capsys, "promote", a, "--margin", "0.05")
    decision = json.loads(out)
    assert code == 0 and decision["promoted"] and decision["production_mse"] == 1.0

    code, _, err = run_cli(capsys, "promote", other_split)
    assert code == 1 and "split" in err and "--force" in err
    assert reg.get("production").tag == a

    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "production" in out and "previous" in out and p in out
    code, out, _ = run_cli(capsys, "show", "production", "--json")
    assert code == 0 and json.loads(out)["tag"] == a
    code, out, _ = run_cli(capsys, "show", "production")
    assert code == 0 and a in out and "production" in out and "not recorded" in out

    code, out, _ = run_cli(capsys, "promote", other_split, "--force")
    assert code == 0 and json.loads(out)["promoted"]
    code, out, _ = run_cli(capsys, "rollback")
    assert code == 0 and json.loads(out)["candidate"] == a
    code, _, err = run_cli(capsys, "show", "nosuchversion")
    assert code == 1 and "error:" in err


def test_stored_scores_compare_across_lookbacks_by_their_targets(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another lookback reads other windows (eval_split_hash) of the same futures
    (eval_targets_hash): its stored MSE is weighed against production's. Other futures are
    refused by name; a version without a targets hash falls back to the split hash."""
    reg = Registry()
    prod = register(reg, tmp_path, "p", 1.0, split="L96", targets="t")
    reg.promote(prod, score=None, margin=0.0, force=True)
    longer = register(reg, tmp_path, "l", 0.5, split="L512", targets="t")
    code, out, _ = run_cli(capsys, "promote", longer)
    decision = json.loads(out)
    assert code == 0 and decision["promoted"] and decision["production_mse"] == 1.0

    elsewhere = register(reg, tmp_path, "e", 0.1, split="L512", targets="other-horizon")
    code, _, err = run_cli(capsys, "promote", elsewhere)
    assert code == 1 and "eval_targets_hash" in err and "--force" in err
    with pytest.raises(RegistryError, match="eval_targets_hash .* not comparable"):
        reg.promote(elsewhere, score=stored_mse_scorer(reg, reg.get(elsewhere)), margin=0.0)

    legacy = register(reg, tmp_path, "o", 0.1, split="L96")  # no targets hash
    code, _, err = run_cli(capsys, "promote", legacy)
    assert code == 1 and "eval_split_hash" in err
    assert reg.production_tag() == longer


def test_cli_parser_composes(home: Path) -> None:
    """The lead's `llata` parser can host the subcommands next to its own."""
    import argparse

    parser = argparse.ArgumentParser(prog="llata")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train")
    registry_cli.add_subcommands(sub)
    args = parser.parse_args(["registry", "promote", "abc", "--margin", "0.1", "--force"])
    assert (args.version, args.margin, args.force) == ("abc", 0.1, True)
    assert callable(args.func)


# --------------------------------------------------------------------------- data lineage


def test_generated_data_never_replaces_real_data(home: Path, tmp_path: Path) -> None:
    """The defect found on a fresh clone: a model trained on generated data, scored on its
    own generated test split, beat the real production model and was promoted."""
    reg = Registry()
    real = register(reg, tmp_path, "real", 0.40, lineage=REAL_LINEAGE)
    reg.promote(real, score=metrics_mse, margin=0.0)
    fake = register(reg, tmp_path, "fake", 0.01, lineage={**REAL_LINEAGE, "synthetic": True})
    scored: list[Path] = []

    def spy(path: Path) -> float:
        scored.append(path)
        return metrics_mse(path)

    for force in (False, True):
        before = reg.aliases_path.read_bytes()
        decision = reg.promote(fake, score=spy, margin=0.0, force=force)
        assert not decision.promoted and reg.production_tag() == real
        assert "generated data" in decision.reason and "real data" in decision.reason
        assert reg.aliases_path.read_bytes() == before
        last = reg.history()[-1]
        assert last["action"] == "reject" and last["lineage_conflict"] == "synthetic"
    assert scored == []  # nothing was scored across lineages


def test_another_lineage_is_refused_naming_both_and_force_is_recorded(
    home: Path, tmp_path: Path
) -> None:
    reg = Registry()
    prod = register(reg, tmp_path, "prod", 0.40, lineage=REAL_LINEAGE)
    reg.promote(prod, score=metrics_mse, margin=0.0)
    for field, value in (
        ("dataset", "ETTh2"),
        ("series_id", "plant-7"),
        ("channels", ["HUFL", "MUFL", "OT"]),
        ("frequency", "15min"),
    ):
        other = register(reg, tmp_path, f"o-{field}", 0.10, lineage={**REAL_LINEAGE, field: value})
        decision = reg.promote(other, score=metrics_mse, margin=0.0)
        assert not decision.promoted and reg.production_tag() == prod
        assert f"differs from production's in {field}" in decision.reason
        assert repr(value) in decision.reason or str(value) in decision.reason  # candidate's
        assert repr(REAL_LINEAGE[field]) in decision.reason or str(REAL_LINEAGE[field]) in (
            decision.reason
        )  # and production's
        assert decision.candidate_mse is None  # refused before any scoring
        assert reg.history()[-1]["lineage_conflict"] == "lineage"

    forced = reg.promote(other, score=None, margin=0.0, force=True)
    assert forced.promoted and reg.production_tag() == other
    last = reg.history()[-1]
    assert last["action"] == "promote" and last["forced"] is True
    assert last["lineage_override"] is True and "across data lineages" in last["reason"]


def test_same_lineage_is_gated_by_score_and_old_versions_compare_what_they_have(
    home: Path, tmp_path: Path
) -> None:
    reg = Registry()
    legacy = register(reg, tmp_path, "legacy", 0.40)  # registered before lineage records
    reg.promote(legacy, score=metrics_mse, margin=0.0)
    better = register(reg, tmp_path, "better", 0.30, lineage=REAL_LINEAGE)
    decision = reg.promote(better, score=metrics_mse, margin=0.0)
    assert decision.promoted and decision.candidate_mse == 0.30
    worse = register(reg, tmp_path, "worse", 0.50, lineage=dict(REAL_LINEAGE))
    decision = reg.promote(worse, score=metrics_mse, margin=0.0)
    assert not decision.promoted and decision.production_mse == 0.30
    assert "lineage_conflict" not in reg.history()[-1]


@pytest.mark.parametrize(
    ("coverage", "over", "promoted", "why"),
    [
        (0.79, None, True, None),
        (0.97, None, True, None),  # conservative intervals pass unless over-coverage is capped
        (0.97, 0.1, False, "above nominal"),
        (0.64, None, False, "covered 0.640"),
        (None, None, False, "no recorded 80%"),
    ],
)
def test_coverage_gate(
    home: Path,
    tmp_path: Path,
    coverage: float | None,
    over: float | None,
    promoted: bool,
    why: str | None,
) -> None:
    reg = Registry()
    extra = {} if coverage is None else {"coverage_80": coverage}
    tag = reg.register(make_artifact(tmp_path / "c", 0.3, extra=extra), metadata={"x": 1})
    decision = reg.promote(
        tag, score=metrics_mse, margin=0.0, coverage_tolerance=0.1, coverage_over_tolerance=over
    )
    assert decision.promoted is promoted
    if why is not None:
        assert why in decision.reason and reg.production_tag() is None
        assert reg.history()[-1]["coverage_check"] == "failed"


# --------------------------------------------------------------------------- recalibration


def recalibrated(reg: Registry, parent: str, tmp: Path, coverage: float, before: float) -> str:
    """Registers a recalibration of `parent`: its files, new metrics (holdout coverage),
    a new manifest, and the `recalibration` record `flows.registry_stages` writes."""
    src, dest = reg.get(parent).path, tmp / f"recal-{coverage}-{before}"
    dest.mkdir()
    for name in ("config.json", "model.safetensors", "scaler.json"):
        (dest / name).write_bytes((src / name).read_bytes())
    metrics = {**json.loads((src / "metrics.json").read_text()), "coverage_80": coverage}
    (dest / "metrics.json").write_text(json.dumps(metrics))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in dest.iterdir()}
    (dest / "manifest.json").write_text(json.dumps({"files": files}))
    record = {
        "parent": parent,
        "holdout_windows": 168,
        "holdout": {"coverage_80": coverage},
        "replaced": {"coverage_80": before},
    }
    meta = {k: v for k, v in reg.get(parent).metadata.items() if k not in ("metrics",)}
    meta.pop("manifest_sha256"), meta.pop("registered_at")
    return reg.register(dest, metadata={**meta, "recalibration": record})


def never_scored(path: Path) -> float:
    raise AssertionError(f"a recalibration was scored ({path})")


@pytest.mark.parametrize(
    ("coverage", "before", "promoted", "why"),
    [
        (0.81, 0.88, True, "at least as close to nominal 0.80 as production's 0.880"),
        (0.78, 0.82, False, "further from nominal 0.80 than production's 0.820"),
        (0.70, 0.60, False, "below nominal"),  # closer, but the coverage gate refuses it
    ],
)
def test_recalibration_is_judged_on_holdout_coverage_not_scored(
    home: Path, tmp_path: Path, coverage: float, before: float, promoted: bool, why: str
) -> None:
    reg = Registry()
    parent = register(reg, tmp_path, "parent", 0.3, lineage=REAL_LINEAGE)
    reg.promote(parent, score=metrics_mse, margin=0.0)
    tag = recalibrated(reg, parent, tmp_path, coverage, before)

    decision = reg.promote(tag, score=never_scored, margin=0.5, coverage_tolerance=0.05)
    assert decision.promoted is promoted and why in decision.reason
    assert decision.candidate_mse is None and decision.production_mse is None
    assert reg.production_tag() == (tag if promoted else parent)
    if promoted:
        assert "point metrics not compared" in decision.reason
        assert reg.history()[-1]["recalibration_of"] == parent
        assert reg.get("previous").tag == parent


def test_recalibration_of_a_recalibration_is_judged_by_the_coverage_gate(
    home: Path, tmp_path: Path
) -> None:
    """Yesterday's recalibration fitted its scores on the windows today's holdout repeats:
    its holdout coverage is in-sample, so today's is not compared with it (it would win
    every day); the coverage gate still refuses under-coverage."""
    reg = Registry()
    parent = register(reg, tmp_path, "parent", 0.3, lineage=REAL_LINEAGE)
    reg.promote(parent, score=metrics_mse, margin=0.0)
    first = recalibrated(reg, parent, tmp_path, 0.81, 0.88)
    assert reg.promote(first, score=never_scored, margin=0.0, coverage_tolerance=0.05).promoted

    today = recalibrated(reg, first, tmp_path, 0.79, 0.80)  # production looks closer
    decision = reg.promote(today, score=never_scored, margin=0.0, coverage_tolerance=0.05)
    assert decision.promoted and "so not compared" in decision.reason
    assert reg.production_tag() == today

    under = recalibrated(reg, today, tmp_path, 0.70, 0.80)
    decision = reg.promote(under, score=never_scored, margin=0.0, coverage_tolerance=0.05)
    assert not decision.promoted and reg.production_tag() == today


def test_recalibration_of_another_model_is_refused(home: Path, tmp_path: Path) -> None:
    """Production moved on (a retrained model won) before the recalibration was promoted,
    or the version claims a parent whose weights it does not have: both are refused."""
    reg = Registry()
    parent = register(reg, tmp_path, "parent", 0.3)
    reg.promote(parent, score=metrics_mse, margin=0.0)
    stale = recalibrated(reg, parent, tmp_path, 0.80, 0.90)
    retrained = register(reg, tmp_path, "retrained", 0.2)
    assert reg.promote(retrained, score=metrics_mse, margin=0.0).promoted

    decision = reg.promote(stale, score=never_scored, margin=0.0)
    assert not decision.promoted and reg.production_tag() == retrained
    assert f"a recalibration of {parent} is judged against it" in decision.reason

    record = {"parent": retrained, "replaced": {"coverage_80": 0.9}}
    other = reg.register(
        make_artifact(tmp_path / "other", 0.2, extra={"coverage_80": 0.8}),
        metadata={"recalibration": record},
    )
    decision = reg.promote(other, score=never_scored, margin=0.0)
    assert not decision.promoted and "weights or scaler differ" in decision.reason
    assert reg.production_tag() == retrained


def test_a_combination_registers_promotes_and_loads_from_the_registry(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A combination artifact (members in sub-directories) through the same registry:
    stored whole, gated by lineage and score, promoted, and served from its stored copy."""
    from llata_core.forecaster import Forecaster, read_artifact_record
    from tests.test_artifact import _combination, _history

    source, _, _ = _combination(tmp_path / "made", weight=0.3)
    reg = Registry()
    prod = register(reg, tmp_path, "prod", 0.5, lineage=REAL_LINEAGE)
    reg.promote(prod, score=metrics_mse, margin=0.0)
    record = read_artifact_record(source)
    members = [
        {"name": "long", "kind": "dlinear", "input_size": 40, "weight": 0.3},
        {"name": "short", "kind": "dlinear", "input_size": 32, "weight": 0.7},
    ]
    meta = {
        **record.metadata,
        "model_kind": "combination",
        "members": members,
        "eval_split_hash": "split-a",
        "data_lineage": REAL_LINEAGE,
    }
    tag = reg.register(source, metadata=meta)
    stored = reg.get(tag).path
    assert set(verify_manifest(stored)) == set(verify_manifest(source))
    other = reg.register(
        source, metadata={**meta, "data_lineage": {**REAL_LINEAGE, "frequency": "d"}}
    )
    refused = reg.promote(other, score=metrics_mse, margin=0.0)
    assert not refused.promoted and "differs from production's in frequency" in refused.reason

    decision = reg.promote(tag, score=metrics_mse, margin=0.05)  # 0.4 against 0.5
    assert decision.promoted and reg.production_tag() == tag
    served = Forecaster.load(reg.production().path)
    assert served.describe()["members"] == [{**m, "precision": "fp32"} for m in members]
    history = _history(50)
    np.testing.assert_array_equal(served.predict(history), Forecaster.load(source).predict(history))

    code, out, _ = run_cli(capsys, "show", "production")
    assert code == 0
    assert (
        "combination 0.3 x long (dlinear, lookback 40) + 0.7 x short (dlinear, lookback 32)" in out
    )

    # A member's weights changed in the store: the version no longer loads.
    weights = stored / "members" / "long" / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0" * 4)
    with pytest.raises(ArtifactError, match="members/long/model.safetensors"):
        Forecaster.load(stored)
