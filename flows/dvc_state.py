"""Which DVC revision an artifact is: the git commit and the `dvc.lock` hash of its output.

`dvc.lock`, committed with the code, names the bytes of every cached stage output by
content hash, and the DVC remote holds those bytes. An artifact on disk is therefore
reproducible by revision when its hash is the one `dvc.lock` records for its output and
that `dvc.lock` is the one committed at HEAD: `git checkout <commit> && dvc pull <stage>`
then gives the same bytes back on any clone (once `dvc push` has sent them). The registry
records a `DvcRevision` with every version it registers, so a registered model can be
traced to, and pulled again from, the revision that produced it.

The hash is DVC's own (dvc_data's tree of per-file MD5s, `<md5>.dir` for a folder), not a
second scheme: `dvc_revision` compares it with `dvc.lock` as DVC itself would.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

LOCK_FILE = "dvc.lock"


@dataclass(frozen=True)
class DvcRevision:
    """Where an artifact stands in DVC and git.

    Attributes:
        path: The artifact, relative to the project root when it lies inside it.
        md5: DVC's hash of the artifact as it is now (`<md5>.dir` for a folder).
        git_commit: The project's HEAD commit; None outside a git repository or before the
            first commit.
        stage: The `dvc.lock` stage whose output is `path`; None when no stage outputs it.
        lock_md5: The hash `dvc.lock` records for `path`; None when no stage outputs it.
        lock_committed: Whether the workspace's `dvc.lock` is the one committed at HEAD.
    """

    path: str
    md5: str
    git_commit: str | None
    stage: str | None
    lock_md5: str | None
    lock_committed: bool

    @property
    def in_lock(self) -> bool:
        """The artifact's bytes are the ones `dvc.lock` names (a `dvc repro` made them)."""
        return self.lock_md5 is not None and self.lock_md5 == self.md5

    @property
    def reproducible(self) -> bool:
        """`git checkout <git_commit> && dvc pull <stage>` gives these bytes back (once
        pushed): the artifact is in `dvc.lock`, and that lock is committed at HEAD."""
        return self.in_lock and self.lock_committed and self.git_commit is not None

    def pull_command(self) -> str | None:
        """The commands that bring the artifact back on a fresh clone; None if none can."""
        if not self.reproducible:
            return None
        return f"git checkout {self.git_commit} && dvc pull {self.stage}"

    def as_metadata(self) -> dict[str, Any]:
        """JSON-shaped, without None values (BentoML metadata cannot hold None)."""
        record = {k: v for k, v in asdict(self).items() if v is not None}
        record.update(in_lock=self.in_lock, reproducible=self.reproducible)
        return record


def dvc_revision(root: str | Path, artifact: str | Path) -> DvcRevision:
    """The DVC revision of `artifact` in the DVC project at `root`.

    Args:
        root: The project root (the folder of `dvc.yaml` and `dvc.lock`).
        artifact: A file or folder; relative paths are read against `root`. To match a
            `dvc.lock` entry it must be a stage output itself (`artifacts/model`), not a
            file inside one.

    Returns:
        The artifact's hash, the commit, and what `dvc.lock` says about it. Outside git,
        without `dvc.lock`, or for an artifact no stage outputs, the fields that cannot be
        known are None and `reproducible` is False; nothing raises for those.

    Raises:
        FileNotFoundError: The artifact does not exist.
    """
    root = Path(root).resolve()
    artifact = (root / artifact).resolve()
    if not artifact.exists():
        raise FileNotFoundError(f"no artifact at {artifact}")
    try:
        rel = artifact.relative_to(root).as_posix()
    except ValueError:
        rel = None
    lock_path = root / LOCK_FILE
    lock_text = lock_path.read_text(encoding="utf-8") if lock_path.is_file() else None
    stage, lock_md5 = _lock_entry(lock_text, rel) if rel is not None else (None, None)
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    committed = (
        lock_text is not None
        and commit is not None
        and _git(root, "show", f"HEAD:./{LOCK_FILE}", strip=False) == lock_text
    )
    return DvcRevision(
        path=rel if rel is not None else str(artifact),
        md5=dvc_md5(artifact),
        git_commit=commit,
        stage=stage,
        lock_md5=lock_md5,
        lock_committed=committed,
    )


def dvc_md5(path: str | Path) -> str:
    """DVC's content hash of a file (its MD5) or a folder (`<md5 of its tree>.dir`).

    The folder hash is dvc_data's: the MD5 of the sorted `{md5, relpath}` list of its files,
    which is what `dvc.lock` records for a folder output.
    """
    from dvc_data.hashfile.hash import file_md5
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    path = Path(path)
    if path.is_file():
        return file_md5(str(path))
    tree = Tree()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        tree.add(
            file.relative_to(path).parts,
            Meta(size=file.stat().st_size),
            HashInfo("md5", file_md5(str(file))),
        )
    tree.digest()
    return str(tree.hash_info.value)


def _lock_entry(lock_text: str | None, rel: str) -> tuple[str | None, str | None]:
    """The stage and hash `dvc.lock` records for the output at `rel`."""
    if lock_text is None:
        return None, None
    lock = yaml.safe_load(lock_text) or {}
    for name, stage in (lock.get("stages") or {}).items():
        for out in stage.get("outs") or []:
            if Path(out["path"]).as_posix() == rel:
                return name, out.get("md5")
    return None, None


def _git(root: Path, *args: str, strip: bool = True) -> str | None:
    """Output of a git command in `root`; None when git fails (no repository, no HEAD)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    except OSError as err:  # no git on PATH
        logger.warning("git unavailable: %s", err)
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() if strip else done.stdout
