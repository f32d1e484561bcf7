"""DVC versioning: every run's artifacts are cached, pushed, and pulled back by git revision.

Real git and real DVC throughout. The end-to-end test runs the real stage commands of this
repository's dvc.yaml on small data (480 hourly rows of a sine, one tiny-backbone
candidate, the quick profile set to the tiny recipe): about a minute on two cores, most of
it the five `llata` processes importing Great Expectations, Feast and torch.

The committed default remote (`~/.cache/llata/dvc-remote`) is used as written, with HOME
pointed at a temporary folder, so the tests never touch the user's remote.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.dvc_state import dvc_md5, dvc_revision
from tests.test_pipeline import (
    BIN,
    DVC_PROJECT_FILES,
    REPO,
    _paths,
    resolved_dvc_stages,
    sine_workspace,
)

# The small project brings its own data (and data.dvc).
DVC_FILES = tuple(f for f in DVC_PROJECT_FILES if f != "data.dvc")
STAGES = ["validate", "features", "backbone", "train", "evaluate"]
GIT_ID = ("-c", "user.name=llata-test", "-c", "user.email=llata-test@example.invalid")


def run(root: Path, *cmd: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done


def dvc_cmd(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "dvc", *args)


def git_commit(root: Path, message: str, env: dict[str, str]) -> None:
    run(root, "git", "add", "-A", env=env)
    run(root, "git", *GIT_ID, "commit", "-q", "-m", message, env=env)


def repro(root: Path, env: dict[str, str], *args: str) -> list[str]:
    """Run `dvc repro`; the stages it ran, in order."""
    out = run(root, *dvc_cmd("repro", *args), env=env).stdout
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def digests(root: Path, *tops: str) -> dict[str, str]:
    """SHA-256 of every file under `tops`, by path relative to `root`."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for top in tops
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


@pytest.fixture
def env() -> dict[str, str]:
    """The stage commands on PATH, no analytics; a private HOME only for the remote."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
    }


# --------------------------------------------------------------------------- dvc.yaml


def test_every_output_is_cached_but_the_feature_repo() -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stages = resolved_dvc_stages(params)
    uncached = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict) and next(iter(entry.values())).get("cache") is False:
                    uncached.add(next(iter(entry)))
    assert uncached == {params["pipeline"]["feature_repo"]}
    config = (REPO / ".dvc/config").read_text()
    assert "remote = llata" in config and "url = ~/.cache/llata/dvc-remote" in config


def test_committed_dvc_lock_matches_dvc_yaml() -> None:
    """dvc.lock was written by `dvc repro` of this dvc.yaml: same stages, commands, outputs
    and parameter names, a hash for every output. (Whether its parameter values are still
    params.yaml's is `dvc status`'s question, not a test's: a params change is committed
    before the repro that follows it.)"""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    stages = resolved_dvc_stages(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert list(lock["stages"]) == list(stages)
    for name, stage in stages.items():
        locked = lock["stages"][name]
        assert locked["cmd"] == stage["cmd"], name
        declared = [
            *_paths(stage.get("outs", [])),
            *_paths(stage.get("metrics", [])),
            *_paths(stage.get("plots", [])),
        ]
        assert sorted(o["path"] for o in locked["outs"]) == sorted(declared), name
        assert all(o.get("md5") for o in locked["outs"]), name
        assert sorted(locked.get("params", {}).get("params.yaml", {})) == sorted(
            stage.get("params", [])
        ), name


# --------------------------------------------------------------------------- dvc_state


def test_dvc_revision_follows_the_lock_and_the_commit(tmp_path: Path, env: dict[str, str]) -> None:
    """A one-stage DVC project: the helper's hash is DVC's, and `reproducible` holds only
    for the bytes dvc.lock names, once dvc.lock is committed."""
    root = tmp_path / "proj"
    (root / ".dvc").mkdir(parents=True)
    shutil.copy2(REPO / ".dvc/.gitignore", root / ".dvc/.gitignore")
    (root / ".dvc/config").write_text("[core]\n    analytics = false\n")
    script = (
        "import pathlib; p = pathlib.Path('out/sub'); p.mkdir(parents=True);"
        "(p / 'b.bin').write_bytes(bytes(range(256)));"
        "pathlib.Path('out/a.txt').write_text('a\\r\\nb\\n');"
        "pathlib.Path('one.txt').write_text('one')"
    )
    stage = {"cmd": f'python -c "{script}"', "outs": ["out", "one.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))
    outside = dvc_revision(root, tmp_path)  # not a DVC output, and not in a git repository
    assert outside.git_commit is None and outside.stage is None and not outside.reproducible
    run(root, "git", "init", "-q", env=env)
    assert repro(root, env) == ["make"]
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["make"]["outs"]
    assert {o["path"]: o["md5"] for o in lock} == {
        "out": dvc_md5(root / "out"),
        "one.txt": dvc_md5(root / "one.txt"),
    }

    rev = dvc_revision(root, "out")
    assert rev.in_lock and rev.stage == "make" and rev.git_commit is None
    assert not rev.reproducible and rev.pull_command() is None
    git_commit(root, "stage and lock", env)
    rev = dvc_revision(root, root / "out")
    head = run(root, "git", "rev-parse", "HEAD", env=env).stdout.strip()
    assert rev.reproducible and rev.git_commit == head and rev.path == "out"
    assert rev.pull_command() == f"git checkout {head} && dvc pull make"
    assert rev.as_metadata() == {
        "path": "out",
        "md5": rev.md5,
        "git_commit": head,
        "stage": "make",
        "lock_md5": rev.md5,
        "lock_committed": True,
        "in_lock": True,
        "reproducible": True,
    }

    (root / "out/a.txt").write_text("changed")  # bytes no dvc.lock names
    rev = dvc_revision(root, "out")
    assert not rev.in_lock and not rev.reproducible and rev.lock_committed
    assert "git_commit" in rev.as_metadata() and None not in rev.as_metadata().values()
    with pytest.raises(FileNotFoundError, match="no artifact"):
        dvc_revision(root, "missing")


# --------------------------------------------------------------------------- end to end


def small_project(root: Path, env: dict[str, str]) -> None:
    """A git + DVC clone of this repository's pipeline files on 480 rows of sine data."""
    params = sine_workspace(root)
    raw: dict[str, Any] = yaml.safe_load(params.read_text())
    raw["pipeline"]["quick"] = []  # the quick profile is the tiny recipe itself
    raw["pipeline"]["candidates"] = {"llata": []}  # one candidate keeps this test short
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    for rel in DVC_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    # This project's data.dvc: where `llata data pull` looks, naming the sine data.
    data_dvc = {"outs": [{"md5": dvc_md5(root / "data/raw"), "hash": "md5", "path": "data/raw"}]}
    (root / "data.dvc").write_text(yaml.safe_dump(data_dvc))
    run(root, "git", "init", "-q", env=env)
    run(root, *dvc_cmd("commit", "-f", "-q", "data.dvc"), env=env)  # into the cache
    git_commit(root, "pipeline on small data", env)


def test_dvc_repro_push_and_a_fresh_clone_pulls_the_same_bytes(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """`dvc repro` runs every stage and caches its outputs, a second repro does nothing;
    after `dvc push` to the default remote, a fresh clone at that commit gets the raw data
    with `llata data pull` and every artifact, the model's bytes included, with `dvc pull`,
    and the registry's `dvc_revision` says the same on both sides."""
    origin, clone = tmp_path / "origin", tmp_path / "clone"
    small_project(origin, env)

    assert repro(origin, env) == STAGES
    assert repro(origin, env) == []
    assert run(origin, *dvc_cmd("status", "--json"), env=env).stdout.strip() == "{}"
    before_commit = dvc_revision(origin, "artifacts/model")
    assert before_commit.in_lock and before_commit.stage == "train"
    assert not before_commit.lock_committed  # dvc.lock is new: not at HEAD yet
    git_commit(origin, "dvc repro", env)
    rev = dvc_revision(origin, "artifacts/model")
    assert rev.reproducible

    # The committed default remote, under a private HOME.
    remote_env = {**env, "HOME": str(tmp_path / "home")}
    run(origin, *dvc_cmd("push", "-q"), env=remote_env)
    assert (tmp_path / "home/.cache/llata/dvc-remote/files/md5").is_dir()

    run(tmp_path, "git", "clone", "-q", str(origin), str(clone), env=env)
    pulled = run(clone, "llata", "data", "pull", env=remote_env).stdout
    assert "remote" in pulled and "unchanged" in pulled
    assert digests(clone, "data/raw") == digests(origin, "data/raw")
    run(clone, *dvc_cmd("pull", "-q"), env=remote_env)

    versioned = ("artifacts/model", "artifacts/run", "artifacts/features", "reports")
    assert digests(clone, *versioned) == digests(origin, *versioned)
    assert digests(clone, "artifacts/model")  # the model bytes are there, not nothing
    assert dvc_revision(clone, "artifacts/model") == rev
    # Only the feature repo, a rebuilt materialization, is missing; nothing needs to run.
    status = run(clone, *dvc_cmd("status", "--json"), env=env).stdout
    assert list(yaml.safe_load(status)) == ["features"]
    assert repro(clone, env, "--allow-missing", "--dry") == []
